// Autograd-aware views: reshape (free: shares storage) and flatten.
import { record } from "../autograd.ts";
import type { Tensor } from "../tensor.ts";
import { reshapeRaw } from "./elementwise.ts";
import { resolveShape } from "./shape.ts";

/** Same data, another shape (one dim may be -1). Shares storage with `t`. */
export function reshape(t: Tensor, shape: readonly number[]): Tensor {
  const target = resolveShape(shape, t.size);
  const out = reshapeRaw(t, target);
  const inShape = t.shape;
  return record(out, "reshape", [t], [], (g) => [reshapeRaw(g, inShape)]);
}

/** Merge dims `start..end` (inclusive) into one. */
export function flatten(t: Tensor, start = 0, end = -1): Tensor {
  const e = end < 0 ? t.rank + end : end;
  const merged = t.shape.slice(start, e + 1).reduce((a, b) => a * b, 1);
  return reshape(t, [...t.shape.slice(0, start), merged, ...t.shape.slice(e + 1)]);
}
