// Reductions over axes (sum, mean) and their backward (broadcast the gradient back).
import src from "../../../wgsl/reduce.wgsl" with { type: "text" };
import { gpu } from "../../gpu/device.ts";
import { record } from "../autograd.ts";
import { Tensor, numel, shapeStr } from "../tensor.ts";
import { axisOf, pad8, stridesOf } from "./shape.ts";
import { expand, reshapeRaw } from "./elementwise.ts";

/** Sum over the axes in `axes` keeping them as size-1 dims; `scale` multiplies the result. */
function reduceKeepDims(t: Tensor, axes: Set<number>, scaleBy: number): Tensor {
  if (t.dtype !== "f32") throw new Error(`sum: expects f32, got ${t.dtype}`);
  const shape = t.shape;
  const outShape = shape.map((d, i) => (axes.has(i) ? 1 : d));
  const rdims = shape.map((d, i) => (axes.has(i) ? d : 1));
  const out = Tensor.empty(outShape, "f32", "sum");
  const nOut = numel(outShape);
  const nRed = numel(rdims);
  const g = gpu();
  if (t.byteLength > g.maxBinding) throw new Error(`sum: input ${shapeStr(shape)} exceeds the storage binding limit`);
  const k = g.kernel("reduce_sum", src);
  g.dispatch(
    k,
    [t.binding(), out.binding()],
    ["uuuf" + "u".repeat(24), nOut, nRed, shape.length, scaleBy, ...pad8(outShape), ...pad8(rdims), ...pad8(stridesOf(shape), 0)],
    g.grid(nOut),
  );
  return out;
}

/** Sum a broadcast-shaped tensor down to `shape` (the inverse of broadcasting), no autograd. */
export function sumTo(t: Tensor, shape: readonly number[]): Tensor {
  const lead = t.rank - shape.length;
  if (lead < 0) throw new Error(`sumTo: ${shapeStr(t.shape)} has lower rank than ${shapeStr(shape)}`);
  const axes = new Set<number>();
  for (let i = 0; i < t.rank; i++) {
    const target = i < lead ? 1 : shape[i - lead];
    if (i < lead || (target === 1 && t.shape[i] !== 1)) axes.add(i);
    else if (target !== t.shape[i]) throw new Error(`sumTo: cannot reduce ${shapeStr(t.shape)} to ${shapeStr(shape)}`);
  }
  const r = reduceKeepDims(t, axes, 1);
  const v = reshapeRaw(r, shape);
  r.dispose();
  return v;
}

function reduceOp(name: string, t: Tensor, axes: number | number[] | undefined, keepDim: boolean, mean: boolean): Tensor {
  const list = axes === undefined ? t.shape.map((_, i) => i) : (Array.isArray(axes) ? axes : [axes]).map((a) => axisOf(a, t.rank, name));
  const set = new Set(list);
  let n = 1;
  for (const a of set) n *= t.shape[a];
  const r = reduceKeepDims(t, set, mean ? 1 / Math.max(n, 1) : 1);
  const outShape = keepDim ? r.shape : t.shape.filter((_, i) => !set.has(i));
  let out = r;
  if (!keepDim) {
    out = reshapeRaw(r, outShape.length ? outShape : [1]);
    r.dispose();
  }
  const keptShape = r.shape;
  const inv = mean ? 1 / Math.max(n, 1) : 1;
  return record(out, name, [t], [], (g) => {
    // Broadcast the gradient back over the reduced axes (times 1/n for a mean).
    const gk = reshapeRaw(g, keptShape);
    const res = expand(gk, t.shape, inv);
    gk.dispose();
    return [res];
  });
}

/** Sum over `axes` (all when omitted). */
export const sum = (t: Tensor, axes?: number | number[], keepDim = false) => reduceOp("sum", t, axes, keepDim, false);
/** Mean over `axes` (all when omitted). */
export const mean = (t: Tensor, axes?: number | number[], keepDim = false) => reduceOp("mean", t, axes, keepDim, true);
