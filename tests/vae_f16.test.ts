// The VAE (AutoencoderKL) encode and decode on f16 activations (`activationDtype = "f16"`, what
// `--variant fp16` and `mixed_precision: "fp16"` select where the adapter has shader-f16) against
// diffusers' float32 goldens of the tiny checkpoint (shared/goldens) and the f32 path, with f32
// weights and with the matrices stored f16 (what mixed precision loads).
import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import { loadPipelineConfig, resolveWeightFiles } from "../src/io/diffusers.ts";
import { AutoencoderKL } from "../src/nn/vae.ts";
import { loadWeights } from "../src/nn/load.ts";
import { disposeModels, loadIP2P } from "../src/diffusion/pipeline.ts";
import { Tensor, noGrad } from "../src/tensor/index.ts";
import { gpu } from "../src/gpu/device.ts";
import { maxAbsDiff, useGpu } from "./helpers.ts";
import { TINY_IP2P, goldenF32, goldenShape } from "./goldens.ts";
import { countF16Stores, expectF16Close, f16Tolerance } from "./f16_tolerance.ts";

useGpu();
const C = "components.safetensors";
const g = (name: string) => Tensor.from(goldenF32(C, name), goldenShape(C, name));

function loadVae(f16Matrices: boolean): AutoencoderKL {
  const vae = new AutoencoderKL(loadPipelineConfig(TINY_IP2P).vae);
  loadWeights(vae, resolveWeightFiles(join(TINY_IP2P, "vae")), { castF16: f16Matrices });
  return vae;
}

/**
 * Tolerance (f16_tolerance.ts): the roundings an output can depend on are the f16 stores of the run
 * (counted, so every parallel branch is included: an over-count, hence a looser bound) plus, with f16
 * matrices, one rounding-sized error per weighted op (each weight off by at most 2^-11 relative, so a
 * product's error is at most 2^-11 of the sum of |w x|, about one rounding). The tiny encoder stores
 * ~40 values along its path, the decoder ~55; conv and linear weights add ~20 each.
 */
function tolerance(stores: number, vae: AutoencoderKL): number {
  const f16Weights = vae.namedParameters().filter(([, p]) => p.t.dtype === "f16").length;
  return f16Tolerance(stores + f16Weights);
}

test("this adapter reads and writes f16 activations (every test below needs shader-f16)", () => {
  expect(gpu().hasF16).toBe(true);
});

describe("AutoencoderKL on f16 activations", () => {
  for (const f16Matrices of [false, true]) {
    const weights = f16Matrices ? "f16 matrices" : "f32 weights";
    test(`${weights}: encode's moments, mean and logvar stay f32 and match diffusers and the f32 path`, async () => {
      const vae = loadVae(f16Matrices);
      const image = g("vae.encode.image");
      const f32 = await noGrad(() => vae.encode(image)).moments.read();
      vae.activationDtype = "f16";
      const { result: d, stores, labels } = countF16Stores(() => noGrad(() => vae.encode(image)));
      // it computed in f16: convs, group norms, the mid-block attention all stored f16
      for (const op of ["conv2d", "groupNorm", "linear", "attentionMergedHeads"]) expect([...labels.keys()].some((l) => l.startsWith(op))).toBe(true);
      for (const t of [d.moments, d.mean, d.logvar]) expect(t.dtype).toBe("f32");
      const tol = tolerance(stores, vae);
      const moments = await d.moments.read();
      expect(maxAbsDiff(moments, f32)).toBeGreaterThan(1e-5);
      const errs = [
        expectF16Close(moments, f32, tol, "moments vs the f32 path"),
        expectF16Close(moments, goldenF32(C, "vae.encode.moments"), tol, "moments vs diffusers"),
        expectF16Close(await d.mean.read(), goldenF32(C, "vae.encode.mean"), tol, "mean vs diffusers"),
        expectF16Close(await d.logvar.read(), goldenF32(C, "vae.encode.logvar"), tol, "logvar vs diffusers"),
      ];
      console.log(`vae encode, ${weights}: ${stores} f16 stores, tolerance ${tol.toExponential(2)}, relative RMS errors ${errs.map((e) => e.toExponential(2)).join(" ")}`);
      vae.disposeParameters();
    });

    test(`${weights}: decode's image stays f32 and matches diffusers and the f32 path`, async () => {
      const vae = loadVae(f16Matrices);
      const latents = g("vae.decode.latents");
      const f32 = await noGrad(() => vae.decode(latents)).read();
      vae.activationDtype = "f16";
      const { result: y, stores, labels } = countF16Stores(() => noGrad(() => vae.decode(latents)));
      for (const op of ["conv2d", "groupNorm", "linear", "attentionMergedHeads", "upsample"]) expect([...labels.keys()].some((l) => l.startsWith(op))).toBe(true);
      expect(y.dtype).toBe("f32");
      const tol = tolerance(stores, vae);
      const got = await y.read();
      expect(maxAbsDiff(got, f32)).toBeGreaterThan(1e-5);
      const errs = [
        expectF16Close(got, f32, tol, "decode vs the f32 path"),
        expectF16Close(got, goldenF32(C, "vae.decode.sample"), tol, "decode vs diffusers"),
      ];
      console.log(`vae decode, ${weights}: ${stores} f16 stores, tolerance ${tol.toExponential(2)}, relative RMS errors ${errs.map((e) => e.toExponential(2)).join(" ")}`);
      vae.disposeParameters();
    });
  }
});

describe("loadIP2P chooses the VAE's activations", () => {
  test("variant fp16 and mixed precision fp16 give f16 activations, the default f32", () => {
    for (const [opts, want] of [[{ variant: "fp16" }, "f16"], [{ mixedPrecision: "fp16" as const }, "f16"], [{}, "f32"]] as const) {
      const m = loadIP2P(TINY_IP2P, opts);
      expect(m.vae.activationDtype).toBe(want);
      disposeModels(m);
    }
  });
});
