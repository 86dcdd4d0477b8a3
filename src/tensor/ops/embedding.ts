// Embedding lookups (forward and backward side by side) and diffusers' sinusoidal timestep embedding.
// Tables larger than the storage binding limit (CLIP's 49408x768 token table is 151 MB) are bound in
// windows of rows; `embeddingFromHost` gathers rows of a table kept on the host instead.
import src from "../../../wgsl/embedding.wgsl" with { type: "text" };
import { gpu, type Uniforms } from "../../gpu/device.ts";
import { record } from "../autograd.ts";
import { f16BitsToF32 } from "../f16.ts";
import { DTYPE_BYTES, Tensor, shapeStr } from "../tensor.ts";
import { zeros } from "./elementwise.ts";
import { rowWindows } from "./window.ts";

const WG = 256;

function params(n: number, dim: number, row0 = 0, rows = 0, vocab = 0, count = 0, flip = 0, halfDim = 0, scaleBy = 1): Uniforms {
  return ["uuuuuuuuf", n, dim, row0, rows, vocab, count, flip, halfDim, scaleBy];
}

function checkFits(op: string, ...ts: Tensor[]): void {
  const g = gpu();
  for (const t of ts) {
    if (t.byteLength > g.maxBinding) throw new Error(`${op}: ${shapeStr(t.shape)} is over the ${g.maxBinding}-byte storage binding limit`);
  }
}

/** The table gradient [V, D] of a lookup: rows of `gradOut` [N, D] summed per id, deterministically. */
function embeddingGrad(ids: Tensor, gradOut: Tensor, vocab: number, dim: number): Tensor {
  const gw = zeros([vocab, dim], "embedding_grad"); // [V, D]
  const g = gpu();
  const k = g.kernel("embedding_grad", src, { GRAD: true });
  const n = ids.size * dim;
  for (const w of rowWindows(vocab, dim * 4)) {
    const win = { buffer: gw.buffer, offset: w.start * dim * 4, size: w.count * dim * 4 };
    g.dispatch(k, [ids.binding(), gradOut.binding(), win], params(n, dim, w.start, w.count, vocab, ids.size), g.grid(Math.ceil(n / WG)));
  }
  return gw;
}

/**
 * Rows of `weight` [V, D] (f32 or f16) at `ids` (i32, any shape) -> [...ids.shape, D]
 * in f32. Ids outside [0, V) give zero rows. The table gradient sums the output gradient per id.
 */
export function embedding(weight: Tensor, ids: Tensor): Tensor {
  if (weight.rank !== 2) throw new Error(`embedding: table must be [V, D], got ${shapeStr(weight.shape)}`);
  if (ids.dtype !== "i32") throw new Error(`embedding: ids must be i32, got ${ids.dtype} ${shapeStr(ids.shape)}`);
  if (weight.dtype === "i32") throw new Error(`embedding: table must be f32 or f16, got i32 ${shapeStr(weight.shape)}`);
  const [vocab, dim] = weight.shape;
  const g = gpu();
  const f16 = weight.dtype === "f16";
  const out = Tensor.empty([...ids.shape, dim], "f32", "embedding"); // [...ids, D]
  checkFits("embedding", ids, out);
  const n = ids.size * dim;
  if (n > 0) {
    const k = g.kernel(f16 ? "embedding_gather_f16" : "embedding_gather", src, { GATHER: true, W_F16: f16 });
    const rowBytes = dim * DTYPE_BYTES[weight.dtype];
    for (const w of rowWindows(vocab, rowBytes)) {
      const win = { buffer: weight.buffer, offset: w.start * rowBytes, size: Math.ceil((w.count * rowBytes) / 4) * 4 };
      g.dispatch(k, [win, ids.binding(), out.binding()], params(n, dim, w.start, w.count, vocab), g.grid(Math.ceil(n / WG)));
    }
  }
  return record(out, "embedding", [weight, ids], [ids], (gradOut, [savedIds], needs) => {
    if (!needs[0]) return [null, null];
    return [embeddingGrad(savedIds, gradOut, vocab, dim), null];
  });
}

/**
 * Gather rows of a host-side table ([V, D] as f32, or raw f16 bits in a Uint16Array) and upload only
 * those: -> [...shape, D] f32 with no gradient. For tables too big to keep on the GPU.
 */
export function embeddingFromHost(
  table: Float32Array | Uint16Array,
  vocab: number,
  dim: number,
  ids: ArrayLike<number>,
  shape: readonly number[] = [ids.length],
): Tensor {
  if (table.length !== vocab * dim) throw new Error(`embeddingFromHost: table has ${table.length} values, not ${vocab}x${dim}`);
  const rows = new Float32Array(ids.length * dim); // [N, D]
  for (let t = 0; t < ids.length; t++) {
    const id = ids[t];
    if (!Number.isInteger(id) || id < 0 || id >= vocab) throw new Error(`embeddingFromHost: id ${id} at position ${t} is outside [0, ${vocab})`);
    if (table instanceof Float32Array) rows.set(table.subarray(id * dim, (id + 1) * dim), t * dim);
    else for (let d = 0; d < dim; d++) rows[t * dim + d] = f16BitsToF32(table[id * dim + d]);
  }
  return Tensor.from(rows, [...shape, dim], "f32", "embedding");
}

// ---------------------------------------------------------------------------------------- timesteps

export interface TimestepEmbeddingOptions {
  /** Put the cosines first ([cos | sin]); diffusers' default is false. */
  flipSinToCos?: boolean;
  /** Subtracted from half the dim in the frequency exponent; diffusers' default is 1. */
  downscaleFreqShift?: number;
  /** Multiplies the arguments; default 1. */
  scale?: number;
  /** Longest period; default 10000. */
  maxPeriod?: number;
}

/**
 * The half-dim frequencies exp(-ln(maxPeriod) * i / (half - shift)) with torch's f32 rounding
 * of each step (diffusers computes them in f32).
 */
export function timestepFrequencies(dim: number, shift: number, maxPeriod: number): Float32Array {
  const f = Math.fround;
  const half = Math.floor(dim / 2);
  const out = new Float32Array(half);
  const negLog = f(-Math.log(maxPeriod));
  const denom = f(half - shift);
  for (let i = 0; i < half; i++) out[i] = f(Math.exp(f(f(negLog * i) / denom)));
  return out;
}

/**
 * diffusers' `get_timestep_embedding`: [N] timesteps -> [N, dim] of sin/cos(scale * t * freq), the
 * sines first unless `flipSinToCos`, and a zero last column when `dim` is odd. No gradient.
 */
export function timestepEmbedding(timesteps: readonly number[] | Float32Array | Tensor, dim: number, opts: TimestepEmbeddingOptions = {}): Tensor {
  const shift = opts.downscaleFreqShift ?? 1;
  const maxPeriod = opts.maxPeriod ?? 10000;
  const scaleBy = opts.scale ?? 1;
  const half = Math.floor(dim / 2);
  const owned = !(timesteps instanceof Tensor);
  const ts = timesteps instanceof Tensor ? timesteps : Tensor.from(Float32Array.from(timesteps), [timesteps.length], "f32", "timesteps");
  if (ts.rank !== 1 || ts.dtype === "f16") {
    throw new Error(`timestepEmbedding: timesteps must be a 1-D f32 or i32 tensor, got ${ts.dtype} ${shapeStr(ts.shape)}`);
  }
  const freqs = Tensor.from(half > 0 ? timestepFrequencies(dim, shift, maxPeriod) : [0], [Math.max(half, 1)], "f32", "timestep_freqs");
  const out = Tensor.empty([ts.size, dim], "f32", "timestep_embedding"); // [N, dim]
  const g = gpu();
  const k = g.kernel(ts.dtype === "i32" ? "timestep_embedding_i32" : "timestep_embedding", src, { TIMESTEP: true, TS_I32: ts.dtype === "i32" });
  const n = ts.size * dim;
  g.dispatch(k, [ts.binding(), freqs.binding(), out.binding()], params(n, dim, 0, 0, 0, 0, opts.flipSinToCos ? 1 : 0, half, scaleBy), g.grid(Math.ceil(n / WG)));
  freqs.dispose();
  if (owned) ts.dispose();
  return out;
}
