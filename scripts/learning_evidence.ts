// Does PPO with the paper's reward make a model look where the edit is? The paired experiment of
// issue #12 (docs/learning-notes.md):
//   - held-out: the first H grounded edits of the held-out split (src/pretrain/data.ts), each
//     sampled with K fixed seeds under the training sampler; attention_cos per (edit, seed);
//   - for each training seed s: one run rewarded with the paper's reward (cos + alpha·L_clip) and a
//     control rewarded with its negation, both from the same model, data order and noise;
//   - paired difference per (edit, seed): cos after − cos before; mean, standard error, t = mean/SE.
// Usage:
//   bun scripts/learning_evidence.ts --model DIR --out DIR [--seeds 0,1,2] [--epochs 12]
//        [--train-n 32] [--heldout-n 16] [--eval-seeds 2] [--set key=value ...]
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { initGpu, destroyGpu } from "../src/gpu/device.ts";
import { synthDataset } from "../src/data/synth_dataset.ts";
import { loadIP2P, type IP2PModels } from "../src/diffusion/pipeline.ts";
import { openDataset } from "../src/io/datasets/index.ts";
import { loadConfig, type Config } from "../src/rl/config.ts";
import { Trainer, rewardLayers } from "../src/rl/trainer.ts";
import { prepareSample, type PreparedSample } from "../src/rl/prepare.ts";
import { instructReward } from "../src/rl/reward.ts";
import { evaluateAttention, pairedDifference } from "../src/rl/attention_eval.ts";
import { listCheckpoints, LORA_FILE } from "../src/rl/checkpoint.ts";
import { loadLoraFile, removeLora } from "../src/nn/lora.ts";
import { HELDOUT_SEED } from "../src/pretrain/data.ts";
import { defaultRewardLayers } from "../src/rl/model_defaults.ts";
import { DEMO_SETTINGS } from "../src/cli/demo.ts";

const { values } = parseArgs({
  options: {
    model: { type: "string" },
    out: { type: "string" },
    seeds: { type: "string", default: "0,1,2" },
    epochs: { type: "string", default: "12" },
    "train-n": { type: "string", default: "32" },
    "heldout-n": { type: "string", default: "16" },
    "eval-seeds": { type: "string", default: "2" },
    set: { type: "string", multiple: true, default: [] },
  },
});
if (!values.model || !values.out) throw new Error("--model DIR and --out DIR are required");
const out = resolve(values.out);
mkdirSync(out, { recursive: true });
const seeds = values.seeds!.split(",").map(Number);
const epochs = Number(values.epochs);

// The demo's training sampler and PPO settings (the paper's reward), with 8 DDIM steps.
const SETTINGS = [...DEMO_SETTINGS, "sample.num_steps=8", "report.num_samples=2", `num_epochs=${epochs}`, `save_freq=${epochs}`, ...values.set!];

await initGpu();
const trainManifest = join(out, "train", "manifest.jsonl");
const heldManifest = join(out, "heldout", "manifest.jsonl");
if (!existsSync(trainManifest)) await synthDataset(join(out, "train"), { n: Number(values["train-n"]), seed: 3, size: 32, grounded: true });
if (!existsSync(heldManifest)) await synthDataset(join(out, "heldout"), { n: Number(values["heldout-n"]), seed: HELDOUT_SEED, size: 32, grounded: true });

const models = loadIP2P(values.model);
const layersSpec = `reward.layers=${defaultRewardLayers(models.unet)}`;
const configFor = (seed: number, dir: string): Config => loadConfig(undefined, [...SETTINGS, layersSpec, `seed=${seed}`, `data=${trainManifest}`, `logdir=${dir}`]);
const cfg0 = configFor(0, out);
const layers = rewardLayers(models, cfg0);
const mapSide = Math.ceil(cfg0.resolution / models.vae.scaleFactor / layers[0].factor);
const held: PreparedSample[] = [];
for await (const s of (await openDataset(heldManifest)).samples()) held.push(await prepareSample(s, cfg0.resolution, mapSide));
const evalSeeds = Array.from({ length: Number(values["eval-seeds"]) }, (_, i) => 1000 + i);

/** attention_cos per (held-out edit, seed) under the training sampler (evaluateAttention's values). */
async function heldOutCos(m: IP2PModels, cfg: Config): Promise<number[]> {
  return (await evaluateAttention(m, cfg, layers, held, evalSeeds)).values;
}

const t0 = performance.now();
const before = await heldOutCos(models, cfg0);
const meanBefore = before.reduce((a, b) => a + b, 0) / before.length;
console.log(`before: held-out attention_cos ${meanBefore.toFixed(4)} over ${before.length} (edit, seed) pairs (${((performance.now() - t0) / 1000).toFixed(0)} s)`);
const rows: Record<string, unknown>[] = [];
for (const seed of seeds) {
  for (const sign of [1, -1]) {
    const name = `${sign > 0 ? "paper" : "negated"}-seed${seed}`;
    const dir = join(out, "runs", name);
    const cfg = configFor(seed, dir);
    mkdirSync(dir, { recursive: true });
    const trainer = new Trainer(models, cfg, await openDataset(trainManifest), dir, {
      reward: (x) => {
        const p = instructReward(x.attentionMap, x.sample.aGt, x.sample.source, x.output, cfg.reward.alpha, cfg.reward.tau);
        return { ...p, reward: sign * p.reward };
      },
    });
    await trainer.init();
    const history = await trainer.run({});
    const ck = listCheckpoints(dir);
    loadLoraFile(models.unet, join(ck[ck.length - 1][1], LORA_FILE));
    const after = await heldOutCos(models, cfg);
    removeLora(models.unet);
    const d = pairedDifference(after, before);
    const p = { mean: d.mean, se: d.stderr, t: d.mean / d.stderr, n: d.n };
    const row = { run: name, seed, reward: sign > 0 ? "paper" : "negated (control)", epochs: history.length, train_reward_first: history[0]?.reward_mean, train_reward_last: history[history.length - 1]?.reward_mean, cos_after: after.reduce((a, b) => a + b, 0) / after.length, diff_mean: p.mean, diff_se: p.se, t: p.t, n: p.n };
    rows.push(row);
    console.log(`${name}: after ${row.cos_after.toFixed(4)}, paired diff ${p.mean.toFixed(4)} ± ${p.se.toFixed(4)} (t ${p.t.toFixed(2)}, n ${p.n}) (${((performance.now() - t0) / 1000).toFixed(0)} s)`);
    writeFileSync(join(out, "results.json"), JSON.stringify({ model: resolve(values.model), settings: SETTINGS, eval_seeds: evalSeeds, before: meanBefore, runs: rows }, null, 2) + "\n");
  }
}
destroyGpu();
process.exit(0);
