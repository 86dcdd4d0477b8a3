// `rl4pix doctor`: what runtime, adapter, features and limits we run on (what the adapter offers, with
// its subgroup-matrix configurations and the Dawn flags asked for, and what the device was given), the
// kernel tuning chosen for this adapter, and a self-test of a few kernels against the CPU. `--require-gpu` (GPU CI) fails at
// once, exit 2, when the adapter is a CPU rasteriser (lavapipe, llvmpipe, SwiftShader) instead of a GPU.
import type { Command } from "commander";
import { gpu, initGpu } from "../gpu/device.ts";
import { runtimeName, runtimeVersion } from "../gpu/runtime.ts";
import { adapterClass, tuningChoices } from "../gpu/tuning.ts";
import { selfTest } from "./kernel_check.ts";
import { action } from "./run.ts";
import { UserError } from "../errors.ts";
import { adapterLines } from "../gpu/adapter_report.ts";

function backendGuess(): string {
  if (runtimeName() === "deno") return "wgpu (Deno navigator.gpu)";
  const os = process.platform;
  return `Dawn (npm webgpu) over ${os === "darwin" ? "Metal" : os === "win32" ? "D3D12" : "Vulkan"}`;
}

export async function doctor(json: boolean, requireGpu = false): Promise<number> {
  const g = await initGpu();
  if (requireGpu && adapterClass(g) === "cpu") {
    const what = g.info.description || g.info.architecture || g.info.vendor || "unknown";
    throw new UserError(`doctor --require-gpu: the WebGPU adapter is a CPU rasteriser (${what}), not a GPU; check the GPU driver and its Vulkan ICD (VK_DRIVER_FILES)`);
  }
  const checks = await selfTest();
  const report = {
    runtime: `${runtimeName()} ${runtimeVersion()}`,
    backend: backendGuess(),
    adapter: g.info,
    adapterClass: adapterClass(g),
    /** What the adapter offers and which Dawn flags were requested (RL4PIX_DAWN_FLAGS). */
    adapterOffers: g.adapterReport,
    /** Features the device was created with. */
    features: [...g.features].sort(),
    requestedLimits: g.requestedLimits,
    tuning: { ...tuningChoices },
    selfTest: checks,
  };
  const ok = checks.every((c) => c.ok);
  if (json) {
    console.log(JSON.stringify({ ...report, ok }, null, 2));
  } else {
    const row = (k: string, v: string) => console.log(`${k.padEnd(12)} ${v}`);
    row("runtime", report.runtime);
    row("backend", report.backend);
    row("adapter", `${g.info.description || "?"} (vendor ${g.info.vendor || "?"}, architecture ${g.info.architecture || "?"}, device ${g.info.device || "?"}${g.info.isFallbackAdapter ? ", fallback/software" : ""})`);
    row("class", report.adapterClass === "cpu" ? "software rasteriser (CPU)" : "GPU");
    for (const [k, v] of adapterLines(g.adapterReport)) row(k, v);
    row("device", `features ${report.features.join(" ") || "(none)"}`);
    for (const [k, v] of Object.entries(report.requestedLimits)) row("limit", `${k} = ${v}`);
    for (const [k, v] of Object.entries(report.tuning)) row("tuning", `${k}: ${v}`);
    for (const c of checks) row("self-test", `${c.ok ? "ok  " : "FAIL"} ${c.name}: max abs error ${c.maxError.toExponential(2)} (${c.ms.toFixed(1)} ms)`);
    console.log(ok ? "doctor: all good" : "doctor: self-test FAILED");
  }
  void gpu;
  return ok ? 0 : 1;
}

export function register(program: Command): void {
  program
    .command("doctor")
    .description("show the runtime, WebGPU adapter, features, limits and kernel tuning; run a kernel self-test")
    .option("--json", "print JSON")
    .option("--require-gpu", "fail (exit 2) when the adapter is a CPU rasteriser such as lavapipe (for GPU CI)")
    .action(action(async (opts: { json?: boolean; requireGpu?: boolean }) => await doctor(Boolean(opts.json), Boolean(opts.requireGpu))));
}
