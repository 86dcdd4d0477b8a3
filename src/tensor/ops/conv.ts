// conv2d (NCHW, torch weight layout [Cout, Cin, kh, kw]) with autograd, and nearest upsampling.
// The GPU passes live in conv_gemm.ts; each gradient is computed only when its input needs it.
import { gpu } from "../../gpu/device.ts";
import { record } from "../autograd.ts";
import { Tensor, shapeStr } from "../tensor.ts";
import { reshapeRaw } from "./elementwise.ts";
import { sumTo } from "./reduce.ts";
import { castRaw } from "./cast.ts";
import { type Conv2dOptions, convGeometry } from "./conv_geometry.ts";
import { convGemm, convWeightGrad } from "./conv_gemm.ts";

export type { Conv2dOptions } from "./conv_geometry.ts";
export { upsampleNearest, upsampleNearest2x } from "./upsample.ts";

function checkDtypes(x: Tensor, weight: Tensor, bias: Tensor | null): void {
  const shapes = `input ${shapeStr(x.shape)} ${x.dtype}, weight ${shapeStr(weight.shape)} ${weight.dtype}`;
  if (x.dtype !== "f32" && x.dtype !== "f16") throw new Error(`conv2d: input must be f32 or f16 (${shapes})`);
  if (x.dtype === "f16" && !gpu().hasF16) throw new Error(`conv2d: f16 input (f16 activations) needs shader-f16, which this adapter lacks (${shapes})`);
  for (const t of bias ? [weight, bias] : [weight]) {
    if (t.dtype === "f16" && !gpu().hasF16) throw new Error(`conv2d: f16 ${t === bias ? "bias" : "weight"} needs shader-f16, which this adapter lacks (${shapes})`);
    if (t.dtype !== "f32" && t.dtype !== "f16") throw new Error(`conv2d: weight and bias must be f32 or f16 (${shapes})`);
  }
  if (bias && (bias.rank !== 1 || bias.shape[0] !== weight.shape[0])) {
    throw new Error(`conv2d: bias ${shapeStr(bias.shape)} does not match weight ${shapeStr(weight.shape)}`);
  }
}

/** `t` (consumed) in `dtype`: a gradient comes in its tensor's dtype. */
function inDtype(t: Tensor, dtype: Tensor["dtype"]): Tensor {
  if (t.dtype === dtype) return t;
  const c = castRaw(t, dtype as "f32" | "f16");
  t.dispose();
  return c;
}

/**
 * 2-D cross-correlation as torch.nn.functional.conv2d: x [N,Cin,H,W], weight [Cout,Cin,kh,kw]
 * (f32 or f16), bias [Cout] -> [N,Cout,Ho,Wo], f32 accumulation. `padding` is one number or
 * [top, bottom, left, right] (asymmetric padding such as the VAE downsampler's (0,1,0,1)).
 * An f16 x (f16 activations, needs shader-f16) gives an f16 result, rounded once; the weight and
 * bias may be either dtype. Gradients come in each tensor's dtype (dx f16 for an f16 x; dW and db
 * summed in f32, then rounded for f16 parameters).
 */
export function conv2d(x: Tensor, weight: Tensor, bias: Tensor | null = null, opts: Conv2dOptions = {}): Tensor {
  const geo = convGeometry(x.shape, weight.shape, opts);
  checkDtypes(x, weight, bias);
  const out = convGemm("forward", x, weight, bias, geo); // [N, Cout, Ho, Wo]
  const inputs = bias ? [x, weight, bias] : [x, weight];
  // Keep only what the gradients need: the weight for dx, the input for dW.
  const saveX = weight.requiresGrad;
  const saveW = x.requiresGrad;
  const saved = [...(saveX ? [x] : []), ...(saveW ? [weight] : [])];
  const outDtype = out.dtype;
  return record(out, "conv2d", inputs, saved, (g, s, needs) => {
    if (g.dtype !== outDtype) throw new Error(`conv2d backward: an ${g.dtype} gradient ${shapeStr(g.shape)} for an ${outDtype} output`);
    const sx = saveX ? s[0] : null;
    const sw = saveW ? s[saveX ? 1 : 0] : null;
    const gx = needs[0] && sw ? convGemm("inputGrad", g, sw, null, geo) : null; // [N, Cin, H, W] in g's (= x's) dtype
    const gw = needs[1] && sx ? inDtype(convWeightGrad(g, sx, geo), weight.dtype) : null;
    let gb: Tensor | null = null;
    if (bias && needs[2]) {
      // Summed in f32 (an f16 gradient is widened first), then in the bias's dtype.
      const g32 = g.dtype === "f32" ? g.detach() : castRaw(g, "f32");
      const summed = sumTo(g32, [1, geo.cout, 1, 1]);
      g32.dispose();
      gb = inDtype(reshapeRaw(summed, [geo.cout]), bias.dtype);
      summed.dispose();
    }
    return [gx, gw, gb];
  });
}
