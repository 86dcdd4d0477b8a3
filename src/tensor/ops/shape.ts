// Shape arithmetic shared by the op families (host side only).
import { shapeStr } from "../tensor.ts";

export const MAX_RANK = 8;

/** Row-major strides of a contiguous shape. */
export function stridesOf(shape: readonly number[]): number[] {
  const s = new Array<number>(shape.length);
  let acc = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    s[i] = acc;
    acc *= shape[i];
  }
  return s;
}

/** numpy broadcasting of two shapes. */
export function broadcastShapes(a: readonly number[], b: readonly number[], op = "op"): number[] {
  const r = Math.max(a.length, b.length);
  const out = new Array<number>(r);
  for (let i = 0; i < r; i++) {
    const da = a[a.length - r + i] ?? 1;
    const db = b[b.length - r + i] ?? 1;
    if (da !== db && da !== 1 && db !== 1) throw new Error(`${op}: shapes ${shapeStr(a)} and ${shapeStr(b)} do not broadcast`);
    out[i] = da === 1 ? db : da;
  }
  return out;
}

/** Strides of `shape` read as `outShape` under broadcasting (0 on broadcast dims). */
export function broadcastStrides(shape: readonly number[], outShape: readonly number[]): number[] {
  const r = outShape.length;
  const own = stridesOf(shape);
  const out = new Array<number>(r).fill(0);
  for (let i = 0; i < shape.length; i++) {
    const j = r - shape.length + i;
    out[j] = shape[i] === 1 && outShape[j] !== 1 ? 0 : own[i];
  }
  return out;
}

/** Pad a list of per-dim values to MAX_RANK (for `array<vec4<u32>, 2>` uniforms). */
export function pad8(v: readonly number[], fill = 1): number[] {
  if (v.length > MAX_RANK) throw new Error(`rank ${v.length} exceeds ${MAX_RANK}`);
  return [...v, ...new Array(MAX_RANK - v.length).fill(fill)];
}

export function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

/** Normalise a possibly negative axis. */
export function axisOf(axis: number, rank: number, op = "op"): number {
  const a = axis < 0 ? axis + rank : axis;
  if (a < 0 || a >= rank) throw new Error(`${op}: axis ${axis} out of range for rank ${rank}`);
  return a;
}

/** Resolve a reshape target that may contain one -1. */
export function resolveShape(shape: readonly number[], size: number, op = "reshape"): number[] {
  const out = [...shape];
  const neg = out.indexOf(-1);
  if (neg >= 0) {
    const rest = out.reduce((p, d, i) => (i === neg ? p : p * d), 1);
    out[neg] = rest === 0 ? 0 : size / rest;
  }
  const n = out.reduce((p, d) => p * d, 1);
  if (n !== size || !out.every((d) => Number.isInteger(d) && d >= 0)) {
    throw new Error(`${op}: cannot view ${size} elements as ${shapeStr(shape)}`);
  }
  return out;
}

/**
 * Merge adjacent dims that are contiguous in the output and in every input's (broadcast) strides, so
 * broadcast kernels walk as few dims as possible. `strides[i]` are input i's strides over `dims`.
 */
export function collapseDims(dims: readonly number[], strides: readonly (readonly number[])[]): { dims: number[]; strides: number[][] } {
  const outDims: number[] = [];
  const outStrides: number[][] = strides.map(() => []);
  for (let d = 0; d < dims.length; d++) {
    if (dims[d] === 1) continue; // size-1 dims contribute nothing
    const last = outDims.length - 1;
    const mergeable = last >= 0 && strides.every((s, i) => outStrides[i][last] === s[d] * dims[d]);
    if (mergeable) {
      outDims[last] *= dims[d];
      strides.forEach((s, i) => (outStrides[i][last] = s[d]));
    } else {
      outDims.push(dims[d]);
      strides.forEach((s, i) => outStrides[i].push(s[d]));
    }
  }
  if (outDims.length === 0) return { dims: [1], strides: strides.map(() => [0]) };
  return { dims: outDims, strides: outStrides };
}
