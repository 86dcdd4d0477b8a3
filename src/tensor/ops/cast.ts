// dtype casts between f32 and f16 (forward and backward side by side). The kernels work on the bits,
// so they run without the shader-f16 feature and round exactly as the host's f32ToF16Bits.
import src from "../../../wgsl/cast.wgsl" with { type: "text" };
import { gpu } from "../../gpu/device.ts";
import { record } from "../autograd.ts";
import { Tensor, type DType, shapeStr } from "../tensor.ts";
import { reshape } from "./views.ts";
import { elementWindows, windowBinding } from "./window.ts";

const WG = 256;
export type FloatDType = "f32" | "f16";

/** The conversion without autograd (for backward formulas). */
export function castRaw(x: Tensor, dtype: FloatDType): Tensor {
  const out = Tensor.empty(x.shape, dtype, `cast_${dtype}`);
  const g = gpu();
  const toF16 = dtype === "f16";
  const k = g.kernel(toF16 ? "cast_to_f16" : "cast_to_f32", src, { TO_F16: toF16, TO_F32: !toF16 });
  for (const w of elementWindows(x.size, 4)) {
    const threads = toF16 ? Math.ceil(w.count / 2) : w.count;
    g.dispatch(k, [windowBinding(x, w.start, w.count), windowBinding(out, w.start, w.count)], ["u", w.count], g.grid(Math.ceil(threads / WG)));
  }
  return out;
}

/** `x` converted to `dtype` (f32 <-> f16; f32 -> f16 rounds to nearest even). The gradient is cast back. */
export function cast(x: Tensor, dtype: FloatDType): Tensor {
  if (x.dtype === "i32" || (dtype as DType) === "i32") throw new Error(`cast: only f32 <-> f16, got ${x.dtype} ${shapeStr(x.shape)} -> ${dtype}`);
  if (x.dtype === dtype) return reshape(x, x.shape);
  const from = x.dtype;
  const out = castRaw(x, dtype);
  return record(out, "cast", [x], [], (g) => [g.dtype === from ? g.detach() : castRaw(g, from)]);
}
