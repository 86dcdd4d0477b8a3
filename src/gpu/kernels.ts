import { SHADER_STAGE_COMPUTE } from "./constants.ts";

// WGSL kernel specialisation and the compiled-pipeline cache.
//
// Kernel files use a tiny preprocessor so one source serves several variants:
//   {{NAME}}            replaced by the define's value
//   #if NAME / #else / #endif   kept or dropped on the define's truthiness (nestable)
// Bindings are read from the source: every `@group(0) @binding(i) var<storage, read|read_write>` or
// `var<uniform>` becomes an entry of an explicit bind-group layout, so unused bindings never break
// a layout the way `layout: "auto"` would.

export type Defines = Record<string, string | number | boolean>;
export type BindingKind = "read" | "rw" | "uniform";

export interface Kernel {
  name: string;
  pipeline: GPUComputePipeline;
  layout: GPUBindGroupLayout;
  /** Binding kinds indexed by binding number (dense from 0). */
  bindings: BindingKind[];
}

export function preprocess(source: string, defines: Defines): string {
  const out: string[] = [];
  const stack: { active: boolean; taken: boolean }[] = [];
  const active = () => stack.every((s) => s.active);
  for (const line of source.split("\n")) {
    const t = line.trim();
    let m: RegExpMatchArray | null;
    if ((m = t.match(/^#if\s+(!?)(\w+)$/))) {
      const v = Boolean(defines[m[2]]) !== (m[1] === "!");
      stack.push({ active: v, taken: v });
    } else if (t === "#else") {
      const top = stack[stack.length - 1];
      if (!top) throw new Error("#else without #if");
      top.active = !top.taken;
      top.taken = true;
    } else if (t === "#endif") {
      if (!stack.pop()) throw new Error("#endif without #if");
    } else if (active()) {
      out.push(line);
    }
  }
  if (stack.length) throw new Error("unterminated #if");
  return out.join("\n").replace(/\{\{(\w+)\}\}/g, (_, name: string) => {
    if (!(name in defines)) throw new Error(`kernel template needs define ${name}`);
    return String(defines[name]);
  });
}

export function parseBindings(wgsl: string): BindingKind[] {
  const kinds: BindingKind[] = [];
  const re = /@group\(0\)\s*@binding\((\d+)\)\s*var<\s*(storage|uniform)\s*(?:,\s*(read_write|read))?\s*>/g;
  for (const m of wgsl.matchAll(re)) {
    const i = Number(m[1]);
    kinds[i] = m[2] === "uniform" ? "uniform" : m[3] === "read_write" ? "rw" : "read";
  }
  for (let i = 0; i < kinds.length; i++) if (!kinds[i]) throw new Error(`binding ${i} missing (bindings must be dense)`);
  return kinds;
}

export class KernelCache {
  private cache = new Map<string, Kernel>();
  compileMs = 0;
  compiled = 0;

  constructor(private device: GPUDevice) {}

  get(name: string, source: string, defines: Defines = {}): Kernel {
    const key = name + "|" + JSON.stringify(defines, Object.keys(defines).sort());
    let k = this.cache.get(key);
    if (k) return k;
    const t0 = performance.now();
    const code = preprocess(source, defines);
    const bindings = parseBindings(code);
    const label = name + (Object.keys(defines).length ? `(${Object.entries(defines).map(([a, b]) => `${a}=${b}`).join(",")})` : "");
    const module = this.device.createShaderModule({ code, label });
    const layout = this.device.createBindGroupLayout({
      label,
      entries: bindings.map((kind, binding) => ({
        binding,
        visibility: SHADER_STAGE_COMPUTE,
        buffer: { type: kind === "uniform" ? "uniform" : kind === "rw" ? "storage" : "read-only-storage" },
      })),
    });
    const pipeline = this.device.createComputePipeline({
      label,
      layout: this.device.createPipelineLayout({ label, bindGroupLayouts: [layout] }),
      compute: { module, entryPoint: "main" },
    });
    k = { name: label, pipeline, layout, bindings };
    this.cache.set(key, k);
    this.compileMs += performance.now() - t0;
    this.compiled++;
    return k;
  }

  get size(): number {
    return this.cache.size;
  }
}
