// Softmax over the last axis, forward and backward (dx = y * (dy - sum(dy * y))). The attention ops
// have their own fused softmax; this one is for explicit probability tensors.
import src from "../../../wgsl/softmax.wgsl" with { type: "text" };
import { gpu } from "../../gpu/device.ts";
import { record } from "../autograd.ts";
import { Tensor, shapeStr } from "../tensor.ts";

function rowsOf(op: string, t: Tensor): [rows: number, len: number] {
  if (t.dtype !== "f32") throw new Error(`${op}: expects f32, got ${t.dtype} ${shapeStr(t.shape)}`);
  if (t.rank < 1) throw new Error(`${op}: input ${shapeStr(t.shape)} has no last axis`);
  if (t.byteLength > gpu().maxBinding) throw new Error(`${op}: input ${shapeStr(t.shape)} exceeds the storage binding limit`);
  const len = t.shape[t.rank - 1];
  return [len === 0 ? 0 : t.size / len, len];
}

/** Softmax over the last axis of x [..., L]. */
export function softmax(x: Tensor): Tensor {
  const [rows, len] = rowsOf("softmax", x);
  const g = gpu();
  const y = Tensor.empty(x.shape, "f32", "softmax");
  const k = g.kernel("softmax_fwd", src, { SOFTMAX_FWD: true });
  g.dispatch(k, [x.binding(), y.binding()], ["uuuu", rows, len, 0, 0], g.grid(rows));
  return record(y, "softmax", [x], [y], (dy, [sy]) => [softmaxBackward(sy, dy)]);
}

/** dL/dx of softmax from its output y and dL/dy; no autograd. */
export function softmaxBackward(y: Tensor, dy: Tensor): Tensor {
  const [rows, len] = rowsOf("softmax backward", y);
  const g = gpu();
  const dx = Tensor.empty(y.shape, "f32", "softmax.dx");
  const k = g.kernel("softmax_bwd", src, { SOFTMAX_BWD: true });
  g.dispatch(k, [y.binding(), dy.binding(), dx.binding()], ["uuuu", rows, len, 0, 0], g.grid(rows));
  return dx;
}
