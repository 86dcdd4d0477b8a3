// Strict state-dict loading from safetensors files into a module tree, one tensor at a time (a
// multi-GB UNet never sits twice in host memory), and seeded random initialisation for tiny models.
import { gpu } from "../gpu/device.ts";
import { Tensor } from "../tensor/tensor.ts";
import { openSafetensors, type SafetensorsFile } from "../io/safetensors.ts";
import { remapLegacyAttentionKeys, strictMatch } from "../io/state_dict.ts";
import { UserError } from "../errors.ts";
import { f32ArrayToF16 } from "../tensor/f16.ts";
import type { Module, Param } from "./module.ts";

export interface LoadOptions {
  /**
   * Keep F16 matmul/conv weights as f16 on the GPU (where the adapter has shader-f16). Otherwise
   * every weight is converted to f32 on upload.
   */
  keepF16?: boolean;
  /** Store F32 matmul/conv weights as f16 on the GPU too (mixed precision for frozen weights). */
  castF16?: boolean;
  /** Keys present in files that the model does not use (e.g. CLIP's `position_ids` buffer). */
  ignore?: readonly string[];
}

/**
 * Where each parameter of `module` is in `files` (shards of one state dict), after the strict
 * key-and-shape check; reads only the files' headers, so it runs without a GPU (a command checks its
 * model folder with it before starting the device). Throws UserError on any mismatch.
 */
export function matchWeights(module: Module, files: readonly string[], opts: Pick<LoadOptions, "ignore"> = {}): Map<string, { file: SafetensorsFile; name: string }> {
  const ignore = new Set(opts.ignore ?? []);
  const where = new Map<string, { file: SafetensorsFile; name: string }>();
  const found = new Map<string, readonly number[]>();
  for (const path of files) {
    const f = openSafetensors(path);
    for (const [current, original] of remapLegacyAttentionKeys(f.names(), path)) {
      if (ignore.has(current)) continue;
      if (where.has(current)) throw new UserError(`${path}: tensor '${current}' also appears in another shard`);
      where.set(current, { file: f, name: original });
      found.set(current, f.info(original).shape);
    }
  }
  const expected = new Map<string, readonly number[]>(module.namedParameters().map(([k, p]) => [k, p.shape]));
  strictMatch(expected, found, files.join(", "));
  return where;
}

/** Load every parameter of `module` from `files` (shards of one state dict). Throws UserError on any mismatch. */
export function loadWeights(module: Module, files: readonly string[], opts: LoadOptions = {}): void {
  const where = matchWeights(module, files, opts);
  const params = module.namedParameters();
  const f16ok = Boolean(opts.keepF16) && gpu().hasF16;
  for (const [key, p] of params) {
    const src = where.get(key)!;
    const info = src.file.info(src.name);
    p.tensor?.dispose();
    const matrix = p.role === "matmul" || p.role === "conv";
    if (f16ok && info.dtype === "F16" && matrix) {
      p.tensor = Tensor.from(src.file.readTensor(src.name) as Uint16Array, p.shape, "f16", key).keep();
    } else if (opts.castF16 && gpu().hasF16 && matrix) {
      p.tensor = Tensor.from(f32ArrayToF16(src.file.toF32(src.name)), p.shape, "f16", key).keep();
    } else {
      p.tensor = Tensor.from(src.file.toF32(src.name), p.shape, "f32", key).keep();
    }
  }
}

/** Every parameter's host values as f32 (for writing checkpoints made on the GPU). */
export async function readParameters(module: Module): Promise<Map<string, { shape: readonly number[]; data: Float32Array }>> {
  const out = new Map<string, { shape: readonly number[]; data: Float32Array }>();
  for (const [key, p] of module.namedParameters()) out.set(key, { shape: p.shape, data: await p.t.readF32() });
  return out;
}

/** Deterministic normal(0, 1) samples (mulberry32 + Box-Muller), for model initialisation on the host. */
export function hostRandn(n: number, seed: number): Float32Array {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const out = new Float32Array(n);
  for (let i = 0; i < n; i += 2) {
    const u = Math.max(next(), 1e-12), v = next();
    const r = Math.sqrt(-2 * Math.log(u));
    out[i] = r * Math.cos(2 * Math.PI * v);
    if (i + 1 < n) out[i + 1] = r * Math.sin(2 * Math.PI * v);
  }
  return out;
}

/**
 * Initialise parameters like torch's defaults would, scaled for a usable random model: weights
 * ~ N(0, 1/fan_in), norm weights 1, biases and norm biases 0 (plus a little noise so nothing is
 * trivially 0/1 when `perturb` > 0), embeddings ~ N(0, 0.02^2).
 */
export function initParameters(module: Module, seed: number, opts: { perturb?: number; f16?: boolean } = {}): Map<string, Float32Array> {
  const host = new Map<string, Float32Array>();
  const params = module.namedParameters();
  params.forEach(([key, p]: [string, Param], i) => {
    const n = p.shape.reduce((a, b) => a * b, 1);
    const noise = hostRandn(n, (seed * 1000003 + i * 7919) >>> 0);
    const data = new Float32Array(n);
    const isNormWeight = /norm.*\.weight$|layer_norm\d?\.weight$|\.norm\d?\.weight$/.test(key) && p.shape.length === 1;
    if (p.role === "embedding") {
      for (let j = 0; j < n; j++) data[j] = 0.02 * noise[j];
    } else if (p.shape.length >= 2) {
      const fanIn = p.shape.slice(1).reduce((a, b) => a * b, 1);
      const std = 1 / Math.sqrt(fanIn);
      for (let j = 0; j < n; j++) data[j] = std * noise[j];
    } else {
      const base = isNormWeight ? 1 : 0;
      const pert = opts.perturb ?? 0.02;
      for (let j = 0; j < n; j++) data[j] = base + pert * noise[j];
    }
    host.set(key, data);
    p.tensor?.dispose();
    const asF16 = opts.f16 && gpu().hasF16 && (p.role === "matmul" || p.role === "conv");
    p.tensor = (asF16 ? Tensor.from(f32ArrayToF16(data), p.shape, "f16", key) : Tensor.from(data, p.shape, "f32", key)).keep();
  });
  return host;
}
