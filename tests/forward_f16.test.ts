// `rl4pix forward --variant fp16` computes the way every other command does with that variant: f16
// weights (a component without fp16 files falls back to its f32 ones) and f16 activations where the
// adapter has shader-f16, checked against diffusers' goldens at the f16 models' tolerances and
// against the f16-weight, f32-activation result it used to give.
import { afterAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadPipelineConfig, resolveWeightFiles } from "../src/io/diffusers.ts";
import { openSafetensors, type TensorToWrite, writeSafetensors } from "../src/io/safetensors.ts";
import { UNet2DConditionModel } from "../src/nn/unet.ts";
import { AutoencoderKL } from "../src/nn/vae.ts";
import { loadWeights } from "../src/nn/load.ts";
import { Tensor, noGrad } from "../src/tensor/index.ts";
import { gpu } from "../src/gpu/device.ts";
import { maxAbsDiff, useGpu } from "./helpers.ts";
import { expectF16Close, f16Tolerance } from "./f16_tolerance.ts";
import { TINY_IP2P, goldenF32, goldenShape } from "./goldens.ts";
import { cliRunner } from "./cli_run.ts";

setDefaultTimeout(120_000);
useGpu();
const C = "components.safetensors";
const work = mkdtempSync(join(tmpdir(), "rl4pix-forward-f16-"));
const { run } = cliRunner(join(work, "cache"));
afterAll(() => rmSync(work, { recursive: true, force: true }));

const f32Input = (name: string): TensorToWrite => ({ dtype: "F32" as const, shape: goldenShape(C, name), data: goldenF32(C, name) });

/** Run `rl4pix forward COMPONENT --variant fp16` on `inputs`; the named output tensor. */
function forwardFp16(component: string, inputs: Map<string, TensorToWrite>, output: string): Float32Array {
  const inPath = join(work, `${component}.in.safetensors`);
  const outPath = join(work, `${component}.out.safetensors`);
  writeSafetensors(inPath, inputs, { format: "pt" });
  const r = run("forward", component, "--model", TINY_IP2P, "--variant", "fp16", "--inputs", inPath, "--out", outPath);
  expect(`${r.code} ${r.err}`).toBe("0 ");
  return openSafetensors(outPath).toF32(output);
}

test("this adapter has shader-f16 (the commands below then compute on f16 activations)", () => {
  expect(gpu().hasF16).toBe(true);
});

describe("forward --variant fp16", () => {
  test("unet: the fp16 weights on f16 activations, within the f16 tolerance of diffusers' fp16-weight output, not the f32-activation result", async () => {
    const got = forwardFp16(
      "unet",
      new Map<string, TensorToWrite>([
        ["sample", f32Input("unet.sample")],
        ["timestep", { dtype: "I32" as const, shape: [1], data: Int32Array.of(500) }],
        ["encoder_hidden_states", f32Input("unet.encoder_hidden_states")],
      ]),
      "noise_pred",
    );
    // what the command computed before: f16 weights, f32 activations
    const unet = new UNet2DConditionModel(loadPipelineConfig(TINY_IP2P).unet);
    loadWeights(unet, resolveWeightFiles(join(TINY_IP2P, "unet"), { variant: "fp16" }), { keepF16: true });
    const sample = Tensor.from(goldenF32(C, "unet.sample"), goldenShape(C, "unet.sample"));
    const ehs = Tensor.from(goldenF32(C, "unet.encoder_hidden_states"), goldenShape(C, "unet.encoder_hidden_states"));
    const f32Activations = await noGrad(() => unet.forward(sample, [500, 500, 500], ehs)).read();
    unet.disposeParameters();
    expect(maxAbsDiff(got, f32Activations)).toBeGreaterThan(1e-5);
    // the tolerance of tests/unet_f16.test.ts (about 225 f16 stores, bounded by 256)
    expectF16Close(got, goldenF32(C, "unet_fp16weights.t500.out"), f16Tolerance(256), "noise_pred vs diffusers (fp16 weights)");
  });

  test("vae-decode: no fp16 files, so the f32 weights, on f16 activations", async () => {
    const got = forwardFp16("vae-decode", new Map<string, TensorToWrite>([["latents", f32Input("vae.decode.latents")]]), "sample");
    const vae = new AutoencoderKL(loadPipelineConfig(TINY_IP2P).vae);
    loadWeights(vae, resolveWeightFiles(join(TINY_IP2P, "vae")));
    const f32 = await noGrad(() => vae.decode(Tensor.from(goldenF32(C, "vae.decode.latents"), goldenShape(C, "vae.decode.latents")))).read();
    vae.disposeParameters();
    expect(maxAbsDiff(got, f32)).toBeGreaterThan(1e-5);
    // the decoder's f16 stores (tests/vae_f16.test.ts counts 44 for this VAE): bounded by 64
    expectF16Close(got, goldenF32(C, "vae.decode.sample"), f16Tolerance(64), "sample vs diffusers");
  });
});
