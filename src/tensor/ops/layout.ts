// Layout ops (forward and backward side by side): permute, transpose, slice, concat, split, chunk.
// All of them are one strided-copy kernel; contiguous runs go through copyBufferToBuffer instead.
// f32 and i32 data are copied as bits (i32 has no gradient); f16 as halves with `shader-f16`, else as
// halves inside u32 words (forcePackedF16Copies).
import src from "../../../wgsl/layout.wgsl" with { type: "text" };
import { gpu } from "../../gpu/device.ts";
import { record } from "../autograd.ts";
import { DTYPE_BYTES, Tensor, numel, shapeStr } from "../tensor.ts";
import { full } from "./elementwise.ts";
import { MAX_RANK, axisOf, pad8, stridesOf } from "./shape.ts";
import { reshape as reshapeRecorded } from "./views.ts";

/** Which elements to copy where: coordinates over `dims`, element offsets by strides plus a base. */
interface CopyPlan {
  dims: number[];
  srcStrides: number[];
  srcBase: number;
  dstStrides: number[];
  dstBase: number;
}

/** Drop size-1 dims and merge neighbours that are contiguous in both source and destination. */
function collapse(plan: CopyPlan): CopyPlan {
  const dims: number[] = [];
  const ss: number[] = [];
  const ds: number[] = [];
  for (let d = 0; d < plan.dims.length; d++) {
    if (plan.dims[d] === 1) continue;
    const last = dims.length - 1;
    if (last >= 0 && ss[last] === plan.srcStrides[d] * plan.dims[d] && ds[last] === plan.dstStrides[d] * plan.dims[d]) {
      dims[last] *= plan.dims[d];
      ss[last] = plan.srcStrides[d];
      ds[last] = plan.dstStrides[d];
    } else {
      dims.push(plan.dims[d]);
      ss.push(plan.srcStrides[d]);
      ds.push(plan.dstStrides[d]);
    }
  }
  if (dims.length === 0) return { dims: [1], srcStrides: [1], dstStrides: [1], srcBase: plan.srcBase, dstBase: plan.dstBase };
  return { dims, srcStrides: ss, dstStrides: ds, srcBase: plan.srcBase, dstBase: plan.dstBase };
}

/** Contiguous rows up to this count are copied with copyBufferToBuffer instead of a kernel. */
const MAX_ROW_COPIES = 16;

/** Record the copy described by `plan` from `from` into `to` (same dtype). */
function stridedCopy(op: string, from: Tensor, to: Tensor, plan: CopyPlan): void {
  const n = numel(plan.dims);
  if (n === 0) return;
  const g = gpu();
  const p = collapse(plan);
  const rank = p.dims.length;
  const bytes = DTYPE_BYTES[from.dtype];
  // Contiguous rows in both tensors: buffer copies, when few and 4-byte aligned.
  if (p.srcStrides[rank - 1] === 1 && p.dstStrides[rank - 1] === 1 && rank <= 2) {
    const rows = rank === 2 ? p.dims[0] : 1;
    const rowBytes = p.dims[rank - 1] * bytes;
    const aligned = (rank === 1 || (p.srcStrides[0] * bytes) % 4 === 0 && (p.dstStrides[0] * bytes) % 4 === 0) &&
      (p.srcBase * bytes) % 4 === 0 && (p.dstBase * bytes) % 4 === 0 && rowBytes % 4 === 0;
    if (aligned && rows <= MAX_ROW_COPIES) {
      for (let r = 0; r < rows; r++) {
        const so = (p.srcBase + (rank === 2 ? r * p.srcStrides[0] : 0)) * bytes;
        const dOff = (p.dstBase + (rank === 2 ? r * p.dstStrides[0] : 0)) * bytes;
        g.copy(from.buffer, so, to.buffer, dOff, rowBytes);
      }
      return;
    }
  }
  if (rank > MAX_RANK) throw new Error(`${op}: rank ${rank} exceeds ${MAX_RANK}`);
  for (const t of [from, to]) {
    if (t.byteLength > g.maxBinding) {
      throw new Error(`${op}: ${shapeStr(t.shape)} ${t.dtype} is over the ${g.maxBinding}-byte storage binding limit for a strided copy`);
    }
  }
  // 32-bit elements in contiguous, 4-aligned runs move as vec4<u32>: a quarter of the threads.
  const f16 = from.dtype === "f16";
  const vec4 = !f16 && p.srcStrides[rank - 1] === 1 && p.dstStrides[rank - 1] === 1 && p.dims[rank - 1] % 4 === 0 &&
    p.srcBase % 4 === 0 && p.dstBase % 4 === 0 && p.srcStrides.every((s, d) => d === rank - 1 || s % 4 === 0) &&
    p.dstStrides.every((s, d) => d === rank - 1 || s % 4 === 0);
  if (vec4) {
    const quarter = (v: number[]) => v.map((s, d) => (d === rank - 1 ? s : s / 4));
    Object.assign(p, {
      dims: p.dims.map((d, i) => (i === rank - 1 ? d / 4 : d)),
      srcStrides: quarter(p.srcStrides),
      dstStrides: quarter(p.dstStrides),
      srcBase: p.srcBase / 4,
      dstBase: p.dstBase / 4,
    });
  }
  // Grid axes: x = innermost dim, y = the next, z = all outer dims flattened (innermost first).
  const inner = p.dims[rank - 1];
  const mid = rank >= 2 ? p.dims[rank - 2] : 1;
  const outerDims = p.dims.slice(0, Math.max(0, rank - 2)).reverse();
  const outer = outerDims.reduce((a, b) => a * b, 1);
  const order = [rank - 1, rank - 2, ...outerDims.map((_, i) => rank - 3 - i)];
  const strideList = (s: number[]) => pad8(order.map((d) => (d >= 0 ? s[d] : 0)), 0);
  const wide = inner >= 64;
  const [wx, wy] = wide ? [64, 4] : [8, 32];
  const packed = f16 && (!g.hasF16 || packedF16Forced);
  const defines = { F16: f16 && !packed, F16_PACKED: packed, T: f16 ? "f16" : vec4 ? "vec4<u32>" : "u32", WG_X: wx, WG_Y: wy };
  const k = g.kernel(`strided_copy_${packed ? "f16_packed" : f16 ? "f16" : vec4 ? "b128" : "b32"}`, src, defines);
  const maxGroups = g.maxGroupsPerDim;
  // Split each grid axis into dispatches of at most maxGroups workgroups.
  const spans = (count: number, per: number) => {
    const out: [number, number][] = [];
    const step = maxGroups * per;
    for (let s = 0; s < count; s += step) out.push([s, Math.ceil(Math.min(step, count - s) / per)]);
    return out;
  };
  for (const [x0, gx] of spans(inner, wx)) {
    for (const [y0, gy] of spans(mid, wy)) {
      for (const [z0, gz] of spans(outer, 1)) {
        const uniforms: [string, ...number[]] = [
          "u".repeat(12 + 24),
          inner, mid, outer, outerDims.length, p.srcBase, p.dstBase, x0, y0, z0, 0, 0, 0,
          ...strideList(p.srcStrides),
          ...strideList(p.dstStrides),
          ...pad8(outerDims),
        ];
        g.dispatch(k, [from.binding(), to.binding()], uniforms, [gx, gy, gz]);
      }
    }
  }
}


let packedF16Forced = false;

/**
 * Copy f16 tensors as packed u32 words (the path of adapters without shader-f16) even where the
 * feature exists: lets tests check that path on every adapter.
 */
export function forcePackedF16Copies(on: boolean): void {
  packedF16Forced = on;
}
// ---------------------------------------------------------------------------------------- permute

function checkPermutation(op: string, shape: readonly number[], dims: readonly number[]): number[] {
  const perm = dims.map((d) => axisOf(d, shape.length, op));
  const seen = new Set(perm);
  if (perm.length !== shape.length || seen.size !== perm.length) {
    throw new Error(`${op}: dims [${dims.join(",")}] are not a permutation of the axes of ${shapeStr(shape)}`);
  }
  return perm;
}

function permuteRaw(x: Tensor, perm: readonly number[]): Tensor {
  const outShape = perm.map((d) => x.shape[d]);
  const out = Tensor.empty(outShape, x.dtype, "permute");
  const xs = stridesOf(x.shape);
  stridedCopy("permute", x, out, {
    dims: outShape,
    srcStrides: perm.map((d) => xs[d]),
    srcBase: 0,
    dstStrides: stridesOf(outShape),
    dstBase: 0,
  });
  return out;
}

/** out.shape[i] = x.shape[dims[i]] (torch.permute), materialised. */
export function permute(x: Tensor, dims: readonly number[]): Tensor {
  const perm = checkPermutation("permute", x.shape, dims);
  const out = permuteRaw(x, perm);
  const inverse = new Array<number>(perm.length);
  perm.forEach((d, i) => (inverse[d] = i));
  return record(out, "permute", [x], [], (g) => [permuteRaw(g, inverse)]);
}

/** Swap axes `a` and `b`. */
export function transpose(x: Tensor, a: number, b: number): Tensor {
  const perm = x.shape.map((_, i) => i);
  const ia = axisOf(a, x.rank, "transpose");
  const ib = axisOf(b, x.rank, "transpose");
  [perm[ia], perm[ib]] = [perm[ib], perm[ia]];
  return permute(x, perm);
}

// ---------------------------------------------------------------------------------------- slice

/** Python-style bounds: negative values count from the end, then clamped to [0, size]. */
function sliceBounds(size: number, start: number, end: number): [number, number] {
  const norm = (v: number) => Math.min(size, Math.max(0, v < 0 ? v + size : v));
  const s = norm(start);
  return [s, Math.max(s, norm(end))];
}

function sliceRaw(x: Tensor, axis: number, start: number, end: number): Tensor {
  const outShape = x.shape.map((d, i) => (i === axis ? end - start : d));
  const out = Tensor.empty(outShape, x.dtype, "slice");
  const xs = stridesOf(x.shape);
  stridedCopy("slice", x, out, {
    dims: outShape,
    srcStrides: xs,
    srcBase: start * xs[axis],
    dstStrides: stridesOf(outShape),
    dstBase: 0,
  });
  return out;
}

/** Elements start..end-1 of `axis` (torch `x.narrow` / python slicing; negative bounds allowed). */
export function slice(x: Tensor, axis: number, start: number, end: number = x.shape[axisOf(axis, x.rank, "slice")]): Tensor {
  const ax = axisOf(axis, x.rank, "slice");
  const [s, e] = sliceBounds(x.shape[ax], start, end);
  const out = sliceRaw(x, ax, s, e);
  const inShape = x.shape;
  return record(out, "slice", [x], [], (g) => {
    // The gradient of a slice: the incoming gradient scattered into zeros of the input's shape.
    const gx = full(inShape, 0, "slice_grad", g.dtype as "f32" | "f16"); // in the gradient's dtype: stridedCopy copies bits
    const xs = stridesOf(inShape);
    stridedCopy("slice_grad", g, gx, { dims: [...g.shape], srcStrides: stridesOf(g.shape), srcBase: 0, dstStrides: xs, dstBase: s * xs[ax] });
    return [gx];
  });
}

/** torch.split: pieces of `size` along `axis` (the last may be smaller), or pieces of the given sizes. */
export function split(x: Tensor, sizes: number | readonly number[], axis = 0): Tensor[] {
  const ax = axisOf(axis, x.rank, "split");
  const total = x.shape[ax];
  let list: number[];
  if (typeof sizes === "number") {
    if (!(sizes > 0)) throw new Error(`split: piece size ${sizes} must be positive`);
    list = [];
    for (let s = 0; s < total || (total === 0 && list.length === 0); s += sizes) list.push(Math.min(sizes, total - s));
  } else {
    list = [...sizes];
    if (list.reduce((a, b) => a + b, 0) !== total) {
      throw new Error(`split: sizes [${list.join(",")}] do not add up to ${total} (axis ${axis} of ${shapeStr(x.shape)})`);
    }
  }
  const out: Tensor[] = [];
  let at = 0;
  for (const n of list) {
    out.push(slice(x, ax, at, at + n));
    at += n;
  }
  return out;
}

/** torch.chunk: `chunks` pieces of ceil(size / chunks) along `axis` (fewer when the size runs out). */
export function chunk(x: Tensor, chunks: number, axis = 0): Tensor[] {
  const ax = axisOf(axis, x.rank, "chunk");
  if (!(chunks >= 1)) throw new Error(`chunk: ${chunks} chunks`);
  const size = Math.max(1, Math.ceil(x.shape[ax] / chunks));
  return split(x, size, ax);
}

// ---------------------------------------------------------------------------------------- concat

/** Join tensors of equal shape except along `axis` (torch.cat). */
export function concat(xs: readonly Tensor[], axis = 0): Tensor {
  if (xs.length === 0) throw new Error("concat: no tensors");
  const first = xs[0];
  const ax = axisOf(axis, first.rank, "concat");
  for (const t of xs) {
    const ok = t.rank === first.rank && t.dtype === first.dtype && t.shape.every((d, i) => i === ax || d === first.shape[i]);
    if (!ok) throw new Error(`concat: ${shapeStr(t.shape)} ${t.dtype} does not match ${shapeStr(first.shape)} ${first.dtype} along axis ${axis}`);
  }
  const sizes = xs.map((t) => t.shape[ax]);
  const outShape = first.shape.map((d, i) => (i === ax ? sizes.reduce((a, b) => a + b, 0) : d));
  const out = Tensor.empty(outShape, first.dtype, "concat");
  const os = stridesOf(outShape);
  let at = 0;
  for (const t of xs) {
    stridedCopy("concat", t, out, { dims: [...t.shape], srcStrides: stridesOf(t.shape), srcBase: 0, dstStrides: os, dstBase: at * os[ax] });
    at += t.shape[ax];
  }
  return record(out, "concat", [...xs], [], (g, _saved, needs) => {
    const grads: (Tensor | null)[] = [];
    let off = 0;
    for (let k = 0; k < sizes.length; k++) {
      grads.push(needs[k] ? sliceRaw(g, ax, off, off + sizes[k]) : null);
      off += sizes[k];
    }
    return grads;
  });
}

/** concat of tensors given a new leading axis (torch.stack). */
export function stack(xs: readonly Tensor[], axis = 0): Tensor {
  if (xs.length === 0) throw new Error("stack: no tensors");
  const ax = axis < 0 ? axis + xs[0].rank + 1 : axis;
  // Each [...] becomes [..., 1, ...] (a view), then they are concatenated along the new axis.
  const views = xs.map((t) => {
    const shape = [...t.shape.slice(0, ax), 1, ...t.shape.slice(ax)];
    return reshapeRecorded(t, shape);
  });
  const out = concat(views, ax);
  for (const v of views) v.dispose();
  return out;
}
