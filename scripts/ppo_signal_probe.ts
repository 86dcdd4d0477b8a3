// Two facts that decide how much of a PPO update is signal (learning notes E21), for any model:
//   1. the reward's spread between edits and between samples of one edit (several noise seeds per
//      edit under the training sampler): a batch-wide baseline leaves the between-edit part in every
//      advantage, a per-edit group (sample.num_image_per_prompt) removes it;
//   2. each denoising step's share of the squared norm of ∇ log π(x_{t−1} | x_t) over a fresh LoRA
//      (train.skip_final_steps leaves the last steps out of the loss).
// Usage: bun scripts/ppo_signal_probe.ts --model DIR [--edits 12] [--seeds 4] [--steps 8] [--set key=value ...]
import { parseArgs } from "node:util";
import { initGpu, destroyGpu } from "../src/gpu/device.ts";
import { Tensor, backward, noGrad, scope, clearTape } from "../src/tensor/index.ts";
import * as ops from "../src/tensor/ops/index.ts";
import { encodeImages, encodePrompts, guidedConditioning, loadIP2P, sampleChain, disposeTrajectory } from "../src/diffusion/pipeline.ts";
import { stepLogProb } from "../src/diffusion/score.ts";
import { initLora, loraParameters, removeLora } from "../src/nn/lora.ts";
import { synthDataset } from "../src/data/synth_dataset.ts";
import { openDataset } from "../src/io/datasets/index.ts";
import { loadConfig, loraScale, loraTargetModules } from "../src/rl/config.ts";
import { rewardLayers } from "../src/rl/trainer.ts";
import { prepareSample, type PreparedSample } from "../src/rl/prepare.ts";
import { editImage } from "../src/diffusion/edit.ts";
import { instructReward } from "../src/rl/reward.ts";
import { defaultRewardLayers } from "../src/rl/model_defaults.ts";
import { EXPERIMENT_SETTINGS } from "./experiment_settings.ts";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const { values } = parseArgs({ options: { model: { type: "string" }, edits: { type: "string", default: "12" }, seeds: { type: "string", default: "4" }, steps: { type: "string", default: "8" }, set: { type: "string", multiple: true, default: [] } } });
if (!values.model) throw new Error("--model DIR is required");
const nEdits = Number(values.edits), K = Number(values.seeds), steps = Number(values.steps);
const S = 32;
await initGpu();
const dir = mkdtempSync(join(tmpdir(), "rl4pix-signal-"));
await synthDataset(dir, { n: nEdits, seed: 3, size: S, grounded: true });
const models = loadIP2P(values.model);
const cfg = loadConfig(undefined, [...EXPERIMENT_SETTINGS, `sample.num_steps=${steps}`, `reward.layers=${defaultRewardLayers(models.unet)}`, ...values.set!]);
const layers = rewardLayers(models, cfg);
const mapSide = Math.ceil(S / models.vae.scaleFactor / layers[0].factor);
const edits: PreparedSample[] = [];
for await (const s of (await openDataset(join(dir, "manifest.jsonl"))).samples()) edits.push(await prepareSample(s, S, mapSide));
const guidance = { text: cfg.sample.guidance_scale, image: cfg.sample.image_guidance_scale };

// 1. between-edit and within-edit spread (one-way random-effects decomposition)
function spread(rows: number[][]): string {
  const means = rows.map((r) => r.reduce((a, b) => a + b, 0) / r.length);
  const grand = means.reduce((a, b) => a + b, 0) / means.length;
  const within = rows.reduce((a, r, i) => a + r.reduce((b, x) => b + (x - means[i]) ** 2, 0) / (r.length - 1), 0) / rows.length;
  const between = Math.max(0, means.reduce((a, m) => a + (m - grand) ** 2, 0) / (means.length - 1) - within / K);
  return `mean ${grand.toFixed(4)}, s.d. within an edit ${Math.sqrt(within).toFixed(4)}, between edits ${Math.sqrt(between).toFixed(4)}`;
}
const cosRows: number[][] = [], rewardRows: number[][] = [];
for (const s of edits) {
  const c: number[] = [], r: number[] = [];
  for (let k = 0; k < K; k++) {
    const out = await editImage(models, { width: S, height: S, channels: 3, data: s.source }, s.instruction, { steps, guidance, eta: cfg.sample.eta, seed: 500 + k, attentionLayers: layers.map((l) => l.path).join(",") });
    const p = instructReward(out.attention!.map, s.aGt, s.source, out.image.data, cfg.reward.alpha, cfg.reward.tau);
    c.push(p.cos);
    r.push(p.reward);
  }
  cosRows.push(c);
  rewardRows.push(r);
}
console.log(`${nEdits} edits x ${K} seeds, ${steps} DDIM steps`);
console.log(`attention_cos: ${spread(cosRows)}`);
console.log(`reward (alpha ${cfg.reward.alpha}): ${spread(rewardRows)}`);

// 2. per-step share of the log-prob gradient over a fresh LoRA (its up matrices are zero, so the
// gradient lives on them)
const B = Math.min(4, edits.length);
initLora(models.unet, cfg.lora.rank, 7, cfg.lora.rank * loraScale(cfg), loraTargetModules(cfg));
const src = new Float32Array(B * 3 * S * S);
edits.slice(0, B).forEach((e, i) => src.set(e.source, i * 3 * S * S));
const side = S / models.vae.scaleFactor;
const { cond, traj } = noGrad(() => scope(() => {
  const p = encodePrompts(models, edits.slice(0, B).map((e) => e.instruction));
  const img = encodeImages(models, ops.affine(Tensor.from(src, [B, 3, S, S]), 2, -1));
  const cond = guidedConditioning(models, p.embeds, img);
  const traj = sampleChain(models, cond, [B, models.config.unet.outChannels, side, side], { steps, guidance, eta: cfg.sample.eta, seeds: Array.from({ length: B }, (_, i) => 21 + i) });
  return { cond, traj };
}));
const params = loraParameters(models.unet).flatMap((p) => [p.down, p.up]);
const norms: number[] = [];
for (let s = 0; s < steps; s++) {
  for (const p of params) {
    p.grad?.dispose();
    p.grad = null;
  }
  scope(() => backward(ops.sum(stepLogProb(models, cond, traj.latents[s], traj.latents[s + 1], new Array(B).fill(traj.timesteps[s]), guidance, 1))));
  let sq = 0;
  for (const p of params) if (p.grad) for (const x of await p.grad.readF32()) sq += x * x;
  norms.push(Math.sqrt(sq));
  clearTape();
}
const total = norms.reduce((a, x) => a + x * x, 0);
console.log(`share of the squared log-prob gradient norm per step: ${traj.timesteps.map((t, i) => `t ${t} ${((100 * norms[i] ** 2) / total).toFixed(1)} %`).join(", ")}`);
disposeTrajectory(traj);
removeLora(models.unet);
rmSync(dir, { recursive: true, force: true });
destroyGpu();
process.exit(0);
