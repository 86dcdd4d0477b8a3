// Nearest-neighbour upsampling as diffusers' Upsample2D does it: interpolate(scale_factor=2,
// "nearest") and, for odd latent sizes, interpolate(size=..., "nearest"); with backward (the sum of
// the output pixels each input pixel was copied to). Large tensors run in windows of whole planes.
import src from "../../../wgsl/upsample.wgsl" with { type: "text" };
import sizedSrc from "../../../wgsl/upsample_sized.wgsl" with { type: "text" };
import { gpu, type Uniforms } from "../../gpu/device.ts";
import type { Kernel } from "../../gpu/kernels.ts";
import { record } from "../autograd.ts";
import { Tensor, shapeStr } from "../tensor.ts";
import { bindingLimitBytes, windowBinding } from "./conv_geometry.ts";

const pow2AtLeast = (v: number) => 2 ** Math.ceil(Math.log2(Math.max(v, 1)));

/**
 * Dispatch `kernel` over `planes` planes in windows of whole planes that fit the binding limit:
 * `inPlane` / `outPlane` elements per plane, `uniforms(inSkip, outSkip)` per window, `cols` columns
 * per plane covered by workgroups of `wx` columns (grid z = planes of the window).
 */
function runPlanes(op: string, kernel: Kernel, input: Tensor, out: Tensor, planes: number, inPlane: number, outPlane: number, cols: number, wx: number, uniforms: (inSkip: number, outSkip: number) => Uniforms): void {
  const g = gpu();
  const limit = Math.floor((bindingLimitBytes() - 512) / 4);
  const per = Math.floor(limit / Math.max(inPlane, outPlane));
  if (per < 1) throw new Error(`${op}: one plane of ${Math.max(inPlane, outPlane)} elements exceeds the storage binding limit`);
  const perWindow = Math.min(per, g.maxGroupsPerDim); // planes per dispatch (grid z)
  for (let p0 = 0; p0 < planes; p0 += perWindow) {
    const count = Math.min(perWindow, planes - p0);
    const i = windowBinding(input, p0 * inPlane, count * inPlane);
    const o = windowBinding(out, p0 * outPlane, count * outPlane);
    g.dispatch(kernel, [i.binding, o.binding], uniforms(i.skip, o.skip), [Math.ceil(cols / wx), 1, count]);
  }
}

/** The 2x kernels; the big side is addressed in vec2s (window skips are multiples of 4 elements). */
function run2x(input: Tensor, out: Tensor, planes: number, h: number, w: number, backward: boolean): void {
  const wx = Math.min(64, pow2AtLeast(w)); // columns per workgroup
  const k = gpu().kernel(backward ? "upsample_nearest2x_backward" : "upsample_nearest2x", src, { BACKWARD: backward, WX: wx, WY: 64 / wx });
  const [inPlane, outPlane] = backward ? [4 * h * w, h * w] : [h * w, 4 * h * w];
  runPlanes("upsampleNearest2x", k, input, out, planes, inPlane, outPlane, w, wx, (i, o) => ["uuuu", h, w, backward ? i / 2 : i, backward ? o : o / 2]);
}

/** x [N,C,H,W] -> [N,C,2H,2W], each pixel repeated over a 2x2 block. */
export function upsampleNearest2x(x: Tensor): Tensor {
  if (x.rank !== 4 || x.dtype !== "f32") throw new Error(`upsampleNearest2x: expects an f32 NCHW tensor, got ${shapeStr(x.shape)} ${x.dtype}`);
  const [n, c, h, w] = x.shape;
  const out = Tensor.empty([n, c, 2 * h, 2 * w], "f32", "upsample_nearest2x");
  if (out.size > 0) run2x(x, out, n * c, h, w, false);
  return record(out, "upsampleNearest2x", [x], [], (g) => {
    const gx = Tensor.empty([n, c, h, w], "f32", "upsample_nearest2x.grad");
    if (gx.size > 0) run2x(g, gx, n * c, h, w, true);
    return [gx];
  });
}

/** The sized kernels (torch's nearest index rule with f32 scales). */
function runSized(input: Tensor, out: Tensor, planes: number, h: number, w: number, oh: number, ow: number, backward: boolean): void {
  const cols = backward ? w : ow;
  const wx = Math.min(64, pow2AtLeast(cols));
  const k = gpu().kernel(backward ? "upsample_nearest_backward" : "upsample_nearest", sizedSrc, { BACKWARD: backward, WX: wx, WY: 64 / wx });
  const scaleY = Math.fround(h / oh);
  const scaleX = Math.fround(w / ow);
  const [inPlane, outPlane] = backward ? [oh * ow, h * w] : [h * w, oh * ow];
  runPlanes("upsampleNearest", k, input, out, planes, inPlane, outPlane, cols, wx, (i, o) => ["uuuuffuu", h, w, oh, ow, scaleY, scaleX, i, o]);
}

/**
 * x [N,C,H,W] -> [N,C,outH,outW] by nearest neighbour with torch's rule for
 * interpolate(size=(outH, outW), mode="nearest"): source = min(floor(dst * f32(in/out)), in - 1).
 * Exact doubling takes the 2x kernels.
 */
export function upsampleNearest(x: Tensor, outH: number, outW: number): Tensor {
  if (x.rank !== 4 || x.dtype !== "f32") throw new Error(`upsampleNearest: expects an f32 NCHW tensor, got ${shapeStr(x.shape)} ${x.dtype}`);
  const [n, c, h, w] = x.shape;
  if (!Number.isInteger(outH) || !Number.isInteger(outW) || outH < 1 || outW < 1) throw new Error(`upsampleNearest: bad output size ${outH}x${outW} for ${shapeStr(x.shape)}`);
  if (outH === 2 * h && outW === 2 * w) return upsampleNearest2x(x);
  const out = Tensor.empty([n, c, outH, outW], "f32", "upsample_nearest");
  if (out.size > 0) runSized(x, out, n * c, h, w, outH, outW, false);
  return record(out, "upsampleNearest", [x], [], (g) => {
    const gx = Tensor.empty([n, c, h, w], "f32", "upsample_nearest.grad");
    if (gx.size > 0) runSized(g, gx, n * c, h, w, outH, outW, true);
    return [gx];
  });
}
