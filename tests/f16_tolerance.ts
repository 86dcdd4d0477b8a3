// Tolerances for whole models run on f16 activations, shared by the model-level f16 tests.
//
// Every op stores its result as f16 once, computed in f32: a relative error of at most 2^-11 (half
// an ulp) per stored value. A model's output inherits the roundings of the stores it depends on;
// independent roundings add in quadrature and the norms keep activations at about unit gain, so after
// L roundings the output's error relative to its RMS is about 2^-11 * sqrt(L). A wrong op (a missed
// cast, a skipped term, a bad permute) is an O(1) error; an f16 accumulator over hundreds of terms
// would be O(1e-2).
import { spyOn } from "bun:test";
import { Tensor } from "../src/tensor/index.ts";
import { expectClose } from "./helpers.ts";

/** Half an f16 ulp, relative: the error of one rounding to f16. */
export const F16_ROUNDING = 2 ** -11;

/** The relative RMS error L independent f16 roundings give at unit gain: 2^-11 * sqrt(L). */
export function f16Tolerance(roundings: number): number {
  return F16_ROUNDING * Math.sqrt(roundings);
}

/** ||a - b|| / ||b||. */
export function relRms(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let se = 0, sb = 0;
  for (let i = 0; i < a.length; i++) {
    se += (a[i] - b[i]) ** 2;
    sb += b[i] ** 2;
  }
  return Math.sqrt(se / sb);
}

/**
 * `got` within relative RMS `tol` of `want`, and no element off by more than `tol` times `want`'s
 * largest magnitude. Returns the relative RMS error (tests print it).
 */
export function expectF16Close(got: ArrayLike<number>, want: ArrayLike<number>, tol: number, label: string): number {
  const rel = relRms(got, want);
  if (!(rel <= tol)) throw new Error(`${label}: relative RMS error ${rel} over ${tol}`);
  let maxRef = 0;
  for (let i = 0; i < want.length; i++) maxRef = Math.max(maxRef, Math.abs(want[i]));
  expectClose(got, want, { atol: tol * maxRef }, label);
  return rel;
}

/** Labels of f16 tensors that are exact copies of other f16 values (layout, kernel staging): no rounding. */
const EXACT_COPIES = new Set(["conv2d.prepared", "conv2d.im2col", "permute", "transpose", "slice", "concat", "stack", "upsample_nearest", "upsample_nearest2x"]);

/**
 * Run `fn` and count the f16 tensors it allocates, by label. Every one except an exact copy
 * (EXACT_COPIES) is a store rounded to f16 (f16 weights are uploaded, never allocated empty).
 * Returns fn's result, the rounding stores and every f16 allocation's label.
 */
export function countF16Stores<T>(fn: () => T): { result: T; stores: number; labels: Map<string, number> } {
  const labels = new Map<string, number>();
  const original = Tensor.empty.bind(Tensor);
  const spy = spyOn(Tensor, "empty").mockImplementation((shape, dtype = "f32", label = "tensor") => {
    if (dtype === "f16") labels.set(label, (labels.get(label) ?? 0) + 1);
    return original(shape, dtype, label);
  });
  try {
    const result = fn();
    const stores = [...labels].reduce((a, [label, n]) => a + (EXACT_COPIES.has(label) ? 0 : n), 0);
    return { result, stores, labels };
  } finally {
    spy.mockRestore();
  }
}
