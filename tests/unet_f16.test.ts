// The UNet forward on f16 activations (`activationDtype = "f16"`, what `--variant fp16` selects where
// the adapter has shader-f16) against the f32 path and diffusers' float32 goldens of the tiny
// checkpoint (shared/goldens), with f32 and with fp16-variant weights; and the attention maps the
// reward captures, which stay f32.
import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import { loadPipelineConfig, resolveWeightFiles } from "../src/io/diffusers.ts";
import { UNet2DConditionModel } from "../src/nn/unet.ts";
import { loadWeights } from "../src/nn/load.ts";
import { setAttentionCaptureHook } from "../src/nn/attention.ts";
import { disposeModels, loadIP2P } from "../src/diffusion/pipeline.ts";
import * as ops from "../src/tensor/ops/index.ts";
import { Tensor, noGrad } from "../src/tensor/index.ts";
import { gpu } from "../src/gpu/device.ts";
import { maxAbsDiff, useGpu } from "./helpers.ts";
import { expectF16Close, f16Tolerance } from "./f16_tolerance.ts";
import { TINY_IP2P, goldenF32, goldenInts, goldenShape } from "./goldens.ts";

useGpu();
const C = "components.safetensors";
const g = (name: string) => Tensor.from(goldenF32(C, name), goldenShape(C, name));

// Tolerance (f16_tolerance.ts). Every op rounds its stored result once to f16: a relative error of at
// most 2^-11 per stored value. Counting the stores of the tiny UNet (12 resnets of ~7 stores, 6 one-layer
// transformers of ~22, conv_in, down/upsampling, the output head) gives about 225, so L = 256 bounds
// the roundings any output depends on. Independent roundings add in quadrature and the norms keep
// activations at unit gain, so the output's error relative to its RMS is at most 2^-11 * sqrt(L) =
// 7.8e-3 (an RMS estimate would be ~2.5x smaller), and no element is off by more than that times the
// output's largest value. A wrong op (a missed cast, a skipped term, a bad permute) is an O(1) error;
// an f16 accumulator over hundreds of terms would be O(1e-2).
const REL_RMS = f16Tolerance(256);

function loadUnet(variant?: string): UNet2DConditionModel {
  const unet = new UNet2DConditionModel(loadPipelineConfig(TINY_IP2P).unet);
  loadWeights(unet, resolveWeightFiles(join(TINY_IP2P, "unet"), { variant }), { keepF16: variant === "fp16" });
  return unet;
}

test("this adapter reads and writes f16 activations (every test below needs shader-f16)", () => {
  expect(gpu().hasF16).toBe(true);
});

describe("UNet on f16 activations", () => {
  for (const variant of [undefined, "fp16"]) {
    const golden = variant ? "unet_fp16weights.t500.out" : "unet.t500.out";
    test(`${variant ?? "f32"} weights: f32 output within the f16 tolerance of the f32 path and of diffusers (${golden})`, async () => {
      const unet = loadUnet(variant);
      const run = () => noGrad(() => unet.forward(g("unet.sample"), [500, 500, 500], g("unet.encoder_hidden_states")));
      const f32 = await run().read();
      unet.activationDtype = "f16";
      const dtypes = new Map<string, string>();
      unet.onIntermediate = (path, t) => dtypes.set(path, t.dtype);
      const out = run();
      expect(out.dtype).toBe("f32");
      // the time embedding stays f32; everything from conv_in to conv_out's input is f16
      expect(dtypes.get("time_embedding")).toBe("f32");
      for (const p of ["conv_in", "down_blocks.0", "down_blocks.1", "mid_block", "up_blocks.0", "up_blocks.1", "conv_norm_out"]) expect(dtypes.get(p)).toBe("f16");
      const got = await out.read();
      // it really computed in f16: the result is not the f32 path's
      expect(maxAbsDiff(got, f32)).toBeGreaterThan(1e-5);
      expectF16Close(got, f32, REL_RMS, "vs the f32 path");
      expectF16Close(got, goldenF32(C, golden), REL_RMS, "vs diffusers");
      unet.disposeParameters();
    });
  }

  test("per-sample timesteps", async () => {
    const unet = loadUnet();
    unet.activationDtype = "f16";
    const tv = goldenInts(C, "unet.tvec.timesteps");
    const out = noGrad(() => unet.forward(g("unet.sample"), tv, g("unet.encoder_hidden_states")));
    expectF16Close(await out.read(), goldenF32(C, "unet.tvec.out"), REL_RMS, "per-sample t");
    unet.disposeParameters();
  });

  test("captured cross-attention maps stay f32 and match diffusers'", async () => {
    const unet = loadUnet();
    unet.activationDtype = "f16";
    const maps = new Map<string, Tensor>();
    setAttentionCaptureHook({
      request(path, batch, queries, keys) {
        if (!path.endsWith("attn2")) return [];
        const acc = ops.zeros([batch, queries, keys]).keep();
        maps.set(path, acc);
        return [{ rows: [0, batch], cols: { start: 0, count: keys }, out: acc, weight: 1, mode: "map" }];
      },
    });
    try {
      noGrad(() => unet.forward(g("unet.sample"), [500, 500, 500], g("unet.encoder_hidden_states")));
    } finally {
      setAttentionCaptureHook(null);
    }
    expect(maps.size).toBe(6);
    for (const [path, t] of maps) {
      expect(t.dtype).toBe("f32");
      // probabilities are outputs of the same f16 activations (q, k): the same bound applies
      expectF16Close(await t.read(), goldenF32(C, `attn2.${path}`), REL_RMS, path);
      t.dispose();
    }
    unet.disposeParameters();
  });
});

describe("--variant fp16 selects f16 activations where the adapter has shader-f16", () => {
  test("loadIP2P with variant fp16 gives an f16-activation UNet, without it f32", () => {
    const m16 = loadIP2P(TINY_IP2P, { variant: "fp16" });
    expect(m16.unet.activationDtype).toBe(gpu().hasF16 ? "f16" : "f32");
    disposeModels(m16);
    const m32 = loadIP2P(TINY_IP2P);
    expect(m32.unet.activationDtype).toBe("f32");
    disposeModels(m32);
  });
});
