// Nearest-neighbour upsampling as diffusers' Upsample2D does it: interpolate(scale_factor=2,
// "nearest") and, for odd latent sizes, interpolate(size=..., "nearest"); with backward (the sum of
// the output pixels each input pixel was copied to). Large tensors run in windows of whole planes.
// f16 activations (needs shader-f16): an f16 input gives an f16 output and an f16 gradient (copies
// are exact; the backward's sums run in f32 and are rounded once).
import src from "../../../wgsl/upsample.wgsl" with { type: "text" };
import sizedSrc from "../../../wgsl/upsample_sized.wgsl" with { type: "text" };
import { gpu, type Uniforms } from "../../gpu/device.ts";
import type { Kernel } from "../../gpu/kernels.ts";
import { record } from "../autograd.ts";
import { DTYPE_BYTES, Tensor, shapeStr } from "../tensor.ts";
import { bindingLimitBytes, windowBinding } from "./conv_geometry.ts";

const pow2AtLeast = (v: number) => 2 ** Math.ceil(Math.log2(Math.max(v, 1)));

/** The activation dtype of an upsample's input: an f32 NCHW tensor, or f16 where the adapter has shader-f16. */
function checkInput(op: string, x: Tensor): "f32" | "f16" {
  if (x.rank !== 4 || (x.dtype !== "f32" && x.dtype !== "f16")) throw new Error(`${op}: expects an f32 or f16 NCHW tensor, got ${shapeStr(x.shape)} ${x.dtype}`);
  if (x.dtype === "f16" && !gpu().hasF16) throw new Error(`${op}: f16 activations (input ${shapeStr(x.shape)}) need the adapter's shader-f16 feature`);
  return x.dtype;
}

/** The upstream gradient must have the output's dtype. */
function checkGrad(op: string, g: Tensor, dtype: string): void {
  if (g.dtype !== dtype) throw new Error(`${op} backward: an ${g.dtype} gradient ${shapeStr(g.shape)} for an ${dtype} output`);
}

/**
 * Dispatch `kernel` over `planes` planes in windows of whole planes that fit the binding limit:
 * `inPlane` / `outPlane` elements per plane, `uniforms(inSkip, outSkip)` per window, `cols` columns
 * per plane covered by workgroups of `wx` columns (grid z = planes of the window).
 */
function runPlanes(op: string, kernel: Kernel, input: Tensor, out: Tensor, planes: number, inPlane: number, outPlane: number, cols: number, wx: number, uniforms: (inSkip: number, outSkip: number) => Uniforms): void {
  const g = gpu();
  const limit = Math.floor((bindingLimitBytes() - 512) / DTYPE_BYTES[input.dtype]); // elements per binding
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
  const k = gpu().kernel(backward ? "upsample_nearest2x_backward" : "upsample_nearest2x", src, { BACKWARD: backward, WX: wx, WY: 64 / wx, F16: input.dtype === "f16" });
  const [inPlane, outPlane] = backward ? [4 * h * w, h * w] : [h * w, 4 * h * w];
  runPlanes("upsampleNearest2x", k, input, out, planes, inPlane, outPlane, w, wx, (i, o) => ["uuuu", h, w, backward ? i / 2 : i, backward ? o : o / 2]);
}

/** x [N,C,H,W] -> [N,C,2H,2W], each pixel repeated over a 2x2 block. */
export function upsampleNearest2x(x: Tensor): Tensor {
  const dtype = checkInput("upsampleNearest2x", x);
  const [n, c, h, w] = x.shape;
  const out = Tensor.empty([n, c, 2 * h, 2 * w], dtype, "upsample_nearest2x");
  if (out.size > 0) run2x(x, out, n * c, h, w, false);
  return record(out, "upsampleNearest2x", [x], [], (g) => {
    checkGrad("upsampleNearest2x", g, dtype);
    const gx = Tensor.empty([n, c, h, w], dtype, "upsample_nearest2x.grad");
    if (gx.size > 0) run2x(g, gx, n * c, h, w, true);
    return [gx];
  });
}

/** The sized kernels (torch's nearest index rule with f32 scales). */
function runSized(input: Tensor, out: Tensor, planes: number, h: number, w: number, oh: number, ow: number, backward: boolean): void {
  const cols = backward ? w : ow;
  const wx = Math.min(64, pow2AtLeast(cols));
  const k = gpu().kernel(backward ? "upsample_nearest_backward" : "upsample_nearest", sizedSrc, { BACKWARD: backward, WX: wx, WY: 64 / wx, F16: input.dtype === "f16" });
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
  const dtype = checkInput("upsampleNearest", x);
  const [n, c, h, w] = x.shape;
  if (!Number.isInteger(outH) || !Number.isInteger(outW) || outH < 1 || outW < 1) throw new Error(`upsampleNearest: bad output size ${outH}x${outW} for ${shapeStr(x.shape)}`);
  if (outH === 2 * h && outW === 2 * w) return upsampleNearest2x(x);
  const out = Tensor.empty([n, c, outH, outW], dtype, "upsample_nearest");
  if (out.size > 0) runSized(x, out, n * c, h, w, outH, outW, false);
  return record(out, "upsampleNearest", [x], [], (g) => {
    checkGrad("upsampleNearest", g, dtype);
    const gx = Tensor.empty([n, c, h, w], dtype, "upsample_nearest.grad");
    if (gx.size > 0) runSized(g, gx, n * c, h, w, outH, outW, true);
    return [gx];
  });
}
