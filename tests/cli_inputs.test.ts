// Every command checks its files, flags and configuration before it starts the GPU device: run with
// RL4PIX_NO_GPU=1 (starting a device is then a one-line error naming that variable), a broken input
// must be reported instead — one line naming the file, exit 2, nothing written.
import { describe, expect, test } from "bun:test";
import { copyFileSync, cpSync, existsSync, mkdtempSync, readFileSync, rmSync, truncateSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setDefaultTimeout } from "bun:test";
import { TINY_IP2P } from "./goldens.ts";
import { type CliResult, cliRunner, expectUserError } from "./cli_run.ts";
import { writeSafetensors } from "../src/io/safetensors.ts";
import { writeLoraFile } from "../src/io/lora_format.ts";

setDefaultTimeout(120_000);
const work = mkdtempSync(join(tmpdir(), "rl4pix-inputs-"));
const { runEnv } = cliRunner(join(work, "cache"));
const noGpu = (...args: string[]) => runEnv({ RL4PIX_NO_GPU: "1" }, ...args);

/** A one-line user error naming `names`, reported before any device was started. */
function beforeGpu(r: CliResult, ...names: string[]): void {
  expectUserError(r, ...names);
  expect(r.err).not.toContain("RL4PIX_NO_GPU");
}

function brokenModel(name: string, edit: (dir: string) => void): string {
  const dir = join(work, name);
  cpSync(TINY_IP2P, dir, { recursive: true });
  edit(dir);
  return dir;
}

const noIndex = brokenModel("no-index", (d) => rmSync(join(d, "model_index.json")));
const unetWeights = join(work, "truncated", "unet", "diffusion_pytorch_model.safetensors");
const truncated = brokenModel("truncated", () => truncateSync(unetWeights, 1000));
const misShaped = brokenModel("mis-shaped", (d) => {
  const p = join(d, "unet", "config.json");
  writeFileSync(p, JSON.stringify({ ...JSON.parse(readFileSync(p, "utf8")), cross_attention_dim: 48 }));
});

const data = join(work, "data");
const img = join(work, "in.png");
const fake = join(work, "inputs.safetensors");
const strayLora = join(work, "stray-lora.safetensors");

describe("set-up (host only)", () => {
  test("a dataset, an image, tensors and a LoRA of a layer no UNet has", () => {
    expect(noGpu("synth", data, "--n", "1", "--size", "32").code).toBe(0);
    copyFileSync(join(data, "images", "synth-0-00000-source.png"), img);
    const z = (shape: number[], dtype: "F32" | "I32" = "F32") => ({ dtype, shape, data: dtype === "F32" ? new Float32Array(shape.reduce((a, b) => a * b)) : new Int32Array(shape.reduce((a, b) => a * b)) });
    writeSafetensors(fake, { latents: z([3, 1, 4, 8, 8]), timesteps: z([2], "I32"), sample: z([1, 8, 8, 8]), timestep: z([1], "I32"), encoder_hidden_states: z([1, 77, 32]) });
    writeLoraFile(strayLora, new Map([["down_blocks.7.attentions.0.transformer_blocks.0.attn2.to_q", { down: new Float32Array(4 * 32), up: new Float32Array(32 * 4), rank: 4, inFeatures: 32, outFeatures: 32 }]]));
  });
});

describe("the device start is reached when the inputs are fine", () => {
  test("edit with a good model fails only at RL4PIX_NO_GPU", () => {
    const r = noGpu("edit", img, "add a red circle", "-o", join(work, "ok.png"), "--model", TINY_IP2P);
    expectUserError(r, "RL4PIX_NO_GPU");
  });
});

describe("a broken model folder is reported before the GPU starts", () => {
  const out = join(work, "out.png");
  test("edit", () => {
    beforeGpu(noGpu("edit", img, "x", "-o", out, "--model", noIndex), noIndex, "model_index.json");
    beforeGpu(noGpu("edit", img, "x", "-o", out, "--model", truncated), unetWeights);
    beforeGpu(noGpu("edit", img, "x", "-o", out, "--model", misShaped), "attn2.to_k.weight", "[64,32]", "[64,48]");
    expect(existsSync(out)).toBe(false);
  });
  test("train: and no run folder is left behind", () => {
    const runDir = join(work, "run");
    beforeGpu(noGpu("train", "--out", runDir, "--set", `model=${truncated}`, `data=${join(data, "manifest.jsonl")}`), unetWeights);
    expect(existsSync(runDir)).toBe(false);
  });
  test("eval: and no output folder", () => {
    const outDir = join(work, "eval");
    beforeGpu(noGpu("eval", "--data", join(data, "manifest.jsonl"), "--out", outDir, "--model", misShaped), "attn2.to_k.weight");
    expect(existsSync(outDir)).toBe(false);
  });
  test("demo: and no run folder", () => {
    const runDir = join(work, "demo");
    beforeGpu(noGpu("demo", "--out", runDir, "--model", noIndex), "model_index.json");
    expect(existsSync(runDir)).toBe(false);
  });
  test("forward and score-trajectory", () => {
    beforeGpu(noGpu("forward", "unet", "--inputs", fake, "--out", join(work, "f.safetensors"), "--model", truncated), unetWeights);
    beforeGpu(noGpu("score-trajectory", "--image", img, "--prompt", "x", "--trajectory", fake, "--model", truncated), unetWeights);
  });
});

describe("other inputs are checked before the GPU starts", () => {
  const out = join(work, "out.png");
  test("LoRA files: missing, or for layers the UNet lacks", () => {
    beforeGpu(noGpu("edit", img, "x", "-o", out, "--model", TINY_IP2P, "--lora", join(work, "nope.safetensors")), "nope.safetensors");
    beforeGpu(noGpu("edit", img, "x", "-o", out, "--model", TINY_IP2P, "--lora", strayLora), strayLora, "down_blocks.7");
    beforeGpu(noGpu("eval", "--data", join(data, "manifest.jsonl"), "--out", join(work, "eval2"), "--lora", join(work, "nope.safetensors")), "nope.safetensors");
  });
  test("--latents, --grad-output, a missing image", () => {
    beforeGpu(noGpu("edit", img, "x", "-o", out, "--latents", join(work, "nope-latents.safetensors")), "nope-latents.safetensors");
    beforeGpu(noGpu("forward", "unet", "--inputs", fake, "--out", join(work, "f.safetensors"), "--grad-output", fake), "--grad-output needs --lora");
    beforeGpu(noGpu("score-trajectory", "--image", join(work, "nope.png"), "--prompt", "x", "--trajectory", fake), "nope.png");
  });
  test("train: reward layers the UNet lacks, and unknown keys", () => {
    // the golden tiny UNet has cross-attention only at latent/2
    beforeGpu(noGpu("train", "--out", join(work, "run2"), "--set", `model=${TINY_IP2P}`, "reward.layers=res:8"), "reward.layers", "res:8");
    beforeGpu(noGpu("train", "--out", join(work, "run2"), "--set", "sample.num_stepz=2"), "sample.num_stepz");
    // a well-formed LoRA target that names no module of this UNet
    const missing = "down_blocks.9.attentions.0.transformer_blocks.0.attn2.to_q";
    beforeGpu(noGpu("train", "--out", join(work, "run2"), "--set", `model=${TINY_IP2P}`, "reward.layers=res:2", `lora.target_modules=to_q,${missing}`), `"lora.target_modules": '${missing}' names no linear or convolution of this UNet`);
    expect(existsSync(join(work, "run2"))).toBe(false);
  });
});

describe("pretrain checks its run folder, spec and starting model before the GPU starts", () => {
  test("a bad spec, a folder that is not a run, other settings, a damaged starting model", () => {
    const badSpec = join(work, "bad-spec.json");
    writeFileSync(badSpec, JSON.stringify({ format: "rl4pix-tiny/1", seed: -1 }));
    beforeGpu(noGpu("pretrain", "--out", join(work, "pt0"), "--spec", badSpec), "seed");
    expect(existsSync(join(work, "pt0"))).toBe(false);
    const other = join(work, "not-a-run");
    cpSync(join(TINY_IP2P, "scheduler"), other, { recursive: true });
    beforeGpu(noGpu("pretrain", "--out", other), other, "not a pretraining run folder");
    // A fresh run folder gets as far as the device (settings.json and the random starting model are host work).
    const run = join(work, "pt1");
    expectUserError(noGpu("pretrain", "--out", run, "--vae-steps", "1"), "RL4PIX_NO_GPU");
    expect(existsSync(join(run, "base", "model_index.json"))).toBe(true);
    // (a stage that has not started may take other settings of its own; --batch is every stage's)
    beforeGpu(noGpu("pretrain", "--out", run, "--batch", "4"), join(run, "settings.json"), "other settings");
    const w = join(run, "base", "unet", "diffusion_pytorch_model.safetensors");
    truncateSync(w, 1000);
    beforeGpu(noGpu("pretrain", "--out", run, "--vae-steps", "1"), w);
  });
});
