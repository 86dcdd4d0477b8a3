// Seeded counter-based random tensors on the GPU (Philox4x32-10): the value at flat index i depends
// only on (seed, i + offset), so a draw can be split, windowed or resumed at any offset and the
// host twin in ../philox.ts reproduces it. Nothing here is differentiable.
import src from "../../../wgsl/random.wgsl" with { type: "text" };
import { gpu } from "../../gpu/device.ts";
import { offsetBig, seedKey, type RandomKind } from "../philox.ts";
import { Tensor, numel } from "../tensor.ts";
import { elementWindows, windowBinding } from "./window.ts";

const WG = 64;
const DEFINE: Record<RandomKind, string> = { bits: "BITS", uniform: "UNIFORM", normal: "NORMAL" };

function draw(kind: RandomKind, shape: readonly number[], seed: number | bigint, offset: number | bigint): Tensor {
  const key = seedKey(seed);
  const first = offsetBig(offset);
  const out = Tensor.empty(shape, kind === "bits" ? "i32" : "f32", kind === "normal" ? "randn" : kind === "uniform" ? "rand" : "random_bits");
  const g = gpu();
  const k = g.kernel(`random_${kind}`, src, { [DEFINE[kind]]: true });
  for (const w of elementWindows(numel(shape), 4)) {
    const at = first + BigInt(w.start);
    const block0 = at >> 2n;
    const lead = Number(at & 3n);
    const threads = Math.ceil((w.count + lead) / 4);
    const uniforms: [string, ...number[]] = [
      "uuuuuu",
      w.count,
      key[0],
      key[1],
      Number(block0 & 0xffffffffn),
      Number((block0 >> 32n) & 0xffffffffn),
      lead,
    ];
    g.dispatch(k, [windowBinding(out, w.start, w.count)], uniforms, g.grid(Math.ceil(threads / WG)));
  }
  return out;
}

/** Standard normal samples (Box-Muller on Philox4x32-10). */
export function randn(shape: readonly number[], seed: number | bigint, offset: number | bigint = 0): Tensor {
  return draw("normal", shape, seed, offset);
}

/** Uniform samples in [0, 1) with 24 random bits. */
export function rand(shape: readonly number[], seed: number | bigint, offset: number | bigint = 0): Tensor {
  return draw("uniform", shape, seed, offset);
}

/** The raw Philox words (u32 bit patterns in an i32 tensor). */
export function randomBits(shape: readonly number[], seed: number | bigint, offset: number | bigint = 0): Tensor {
  return draw("bits", shape, seed, offset);
}
