// Nearest-neighbour 2x upsampling (diffusers' Upsample2D with interpolate(scale_factor=2, "nearest"))
// and its backward (the sum of each 2x2 block). Large tensors run in windows of whole planes.
import src from "../../../wgsl/upsample.wgsl" with { type: "text" };
import { gpu } from "../../gpu/device.ts";
import { record } from "../autograd.ts";
import { Tensor, shapeStr } from "../tensor.ts";
import { bindingLimitBytes, windowBinding } from "./conv_geometry.ts";

/**
 * Run the upsample kernel over `planes` planes of size h x w (small side), in windows of whole
 * planes that fit the binding limit. `backward` reduces big planes to small ones.
 */
function runPlanes(input: Tensor, out: Tensor, planes: number, h: number, w: number, backward: boolean): void {
  const g = gpu();
  const wx = Math.min(64, 2 ** Math.ceil(Math.log2(Math.max(w, 1)))); // columns per workgroup
  const k = g.kernel(backward ? "upsample_nearest2x_backward" : "upsample_nearest2x", src, { BACKWARD: backward, WX: wx, WY: 64 / wx });
  const small = h * w;
  const big = 4 * small;
  const limit = Math.floor((bindingLimitBytes() - 512) / 4);
  const per = Math.floor(limit / big);
  if (per < 1) throw new Error(`upsampleNearest2x: one ${2 * h}x${2 * w} plane exceeds the storage binding limit`);
  const [inPlane, outPlane] = backward ? [big, small] : [small, big];
  const perWindow = Math.min(per, g.maxGroupsPerDim); // planes per dispatch (grid z)
  for (let p0 = 0; p0 < planes; p0 += perWindow) {
    const count = Math.min(perWindow, planes - p0);
    const i = windowBinding(input, p0 * inPlane, count * inPlane);
    const o = windowBinding(out, p0 * outPlane, count * outPlane);
    // The big side is addressed in vec2s (window skips are multiples of 4 elements).
    const [inOff, outOff] = backward ? [i.skip / 2, o.skip] : [i.skip, o.skip / 2];
    g.dispatch(k, [i.binding, o.binding], ["uuuu", h, w, inOff, outOff], [Math.ceil(w / wx), 1, count]);
  }
}

/** x [N,C,H,W] -> [N,C,2H,2W], each pixel repeated over a 2x2 block. */
export function upsampleNearest2x(x: Tensor): Tensor {
  if (x.rank !== 4 || x.dtype !== "f32") throw new Error(`upsampleNearest2x: expects an f32 NCHW tensor, got ${shapeStr(x.shape)} ${x.dtype}`);
  const [n, c, h, w] = x.shape;
  const out = Tensor.empty([n, c, 2 * h, 2 * w], "f32", "upsample_nearest2x");
  if (out.size > 0) runPlanes(x, out, n * c, h, w, false);
  return record(out, "upsampleNearest2x", [x], [], (g) => {
    const gx = Tensor.empty([n, c, h, w], "f32", "upsample_nearest2x.grad");
    if (gx.size > 0) runPlanes(g, gx, n * c, h, w, true);
    return [gx];
  });
}
