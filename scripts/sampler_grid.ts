// How the training sampler's guidance scales set the two terms of the paper's reward on held-out
// edits: attention_cos, MAE(edit, input) and the share of samples above τ (learning notes E23).
// Usage: bun scripts/sampler_grid.ts --model DIR [--n 16] [--seeds 2] [--text 5] [--image 1.5,2.5,4] [--set key=value ...]
import { existsSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { initGpu, destroyGpu } from "../src/gpu/device.ts";
import { synthDataset } from "../src/data/synth_dataset.ts";
import { loadIP2P } from "../src/diffusion/pipeline.ts";
import { openDataset } from "../src/io/datasets/index.ts";
import { loadConfig } from "../src/rl/config.ts";
import { rewardLayers } from "../src/rl/trainer.ts";
import { prepareSample, type PreparedSample } from "../src/rl/prepare.ts";
import { evaluateAttention } from "../src/rl/attention_eval.ts";
import { HELDOUT_SEED } from "../src/pretrain/data.ts";
import { defaultRewardLayers } from "../src/rl/model_defaults.ts";
import { EXPERIMENT_SETTINGS } from "./experiment_settings.ts";

const { values } = parseArgs({ options: { model: { type: "string" }, n: { type: "string", default: "16" }, seeds: { type: "string", default: "2" }, text: { type: "string", default: "5" }, image: { type: "string", default: "1.5,2.5,4" }, data: { type: "string", default: "/tmp/mae_probe_heldout" }, set: { type: "string", multiple: true, default: [] } } });
await initGpu();
const manifest = join(values.data!, "manifest.jsonl");
if (!existsSync(manifest)) await synthDataset(values.data!, { n: Number(values.n), seed: HELDOUT_SEED, size: 32, grounded: true });
const m = loadIP2P(values.model!);
const base = [...EXPERIMENT_SETTINGS, "sample.num_steps=8", `reward.layers=${defaultRewardLayers(m.unet)}`, ...values.set!];
const cfg0 = loadConfig(undefined, base);
const layers = rewardLayers(m, cfg0);
const mapSide = Math.ceil(cfg0.resolution / m.vae.scaleFactor / layers[0].factor);
const held: PreparedSample[] = [];
for await (const s of (await openDataset(manifest)).samples()) held.push(await prepareSample(s, cfg0.resolution, mapSide));
const objects = held.map((s) => s.mask.reduce((a, b) => a + b, 0) / s.mask.length < 0.5);
const seeds = Array.from({ length: Number(values.seeds) }, (_, i) => 1000 + i);
const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
console.log("s_T\ts_I\tcos\tcos(objects)\treward\tMAE mean\tMAE median\t> tau\t> tau (objects)");
for (const t of values.text!.split(",").map(Number)) {
  for (const i of values.image!.split(",").map(Number)) {
    const cfg = loadConfig(undefined, [...base, `sample.guidance_scale=${t}`, `sample.image_guidance_scale=${i}`]);
    const e = await evaluateAttention(m, cfg, layers, held, seeds);
    const obj = (xs: number[]) => xs.filter((_, j) => objects[Math.floor(j / seeds.length)]);
    const above = (xs: number[]) => mean(xs.map((v) => (v > cfg.reward.tau ? 1 : 0)));
    console.log(`${t}\t${i}\t${e.cos.toFixed(4)}\t${mean(obj(e.values)).toFixed(4)}\t${e.reward.toFixed(4)}\t${mean(e.maeValues).toFixed(4)}\t${med(e.maeValues).toFixed(4)}\t${(100 * above(e.maeValues)).toFixed(0)} %\t${(100 * above(obj(e.maeValues))).toFixed(0)} %`);
  }
}
destroyGpu();
process.exit(0);
