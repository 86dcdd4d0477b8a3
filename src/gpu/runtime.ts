// Which JavaScript runtime we are on, and how to reach a WebGPU implementation from it.
// Bun and Node load Dawn's Node bindings (npm `webgpu`); Deno uses its built-in `navigator.gpu`.
import { createRequire } from "node:module";

export type RuntimeName = "bun" | "deno" | "node";

export function runtimeName(): RuntimeName {
  const g = globalThis as Record<string, unknown>;
  if (g.Bun !== undefined) return "bun";
  if (g.Deno !== undefined) return "deno";
  return "node";
}

export function runtimeVersion(): string {
  const g = globalThis as { Bun?: { version: string }; Deno?: { version: { deno: string } } };
  if (g.Bun) return g.Bun.version;
  if (g.Deno) return g.Deno.version.deno;
  return process.versions.node;
}

interface DawnModule {
  create(flags: string[]): GPU;
  globals: Record<string, unknown>;
}

function loadDawn(): DawnModule {
  // `bun build --compile` embeds a native addon only when the require path is a literal.
  if (runtimeName() === "bun" && process.platform === "linux" && process.arch === "x64") {
    return require("../../node_modules/webgpu/dist/linux-x64/dawn.node") as DawnModule;
  }
  const req = createRequire(import.meta.url);
  const arch = process.platform === "darwin" ? "universal" : process.arch;
  return req(`../../node_modules/webgpu/dist/${process.platform}-${arch}/dawn.node`) as DawnModule;
}

/** Module-lifetime strong reference: if the object from `create()` is collected, Bun segfaults. */
let dawnGpu: GPU | null = null;
/** The flags Dawn's instance was created with (ours, then RL4PIX_DAWN_FLAGS), for `doctor`. */
let dawnFlagsUsed: string[] = [];

/** Dawn flags (toggles) the WebGPU instance was created with; empty on Deno or before the first use. */
export function dawnFlagsInUse(): string[] {
  return [...dawnFlagsUsed];
}

/** The WebGPU entry point of this runtime, or null when the runtime has none. */
export function webgpuEntry(flags: string[] = []): GPU | null {
  if (runtimeName() === "deno") {
    const nav = (globalThis as { navigator?: { gpu?: GPU } }).navigator;
    return nav?.gpu ?? null;
  }
  if (dawnGpu) return dawnGpu;
  if (!process.env.XDG_RUNTIME_DIR) process.env.XDG_RUNTIME_DIR = "/tmp"; // silences Mesa warnings
  const dawn = loadDawn();
  Object.assign(globalThis, dawn.globals);
  // RL4PIX_DAWN_FLAGS: extra Dawn options, space-separated (e.g. "enable-dawn-features=disable_robustness").
  const extra = process.env.RL4PIX_DAWN_FLAGS?.split(" ").filter(Boolean) ?? [];
  dawnFlagsUsed = [...flags, ...extra];
  dawnGpu = dawn.create(dawnFlagsUsed);
  return dawnGpu;
}
