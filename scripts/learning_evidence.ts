// Does PPO with the paper's reward make a model look where the edit is? The paired experiment of
// issue #12 (docs/learning-notes.md):
//   - held-out: the first H grounded edits of the held-out split (src/pretrain/data.ts), each
//     sampled with K fixed seeds under the training sampler; attention_cos per (edit, seed);
//   - for each training seed s: one run rewarded with the paper's reward (cos + alpha·L_clip) and a
//     control rewarded with its negation (unless --no-control), both from the same model, data order and noise;
//   - paired difference per (edit, seed): cos after − cos before; mean, standard error, t = mean/SE;
//     and the rewarded run against its control (after(+) − after(−), same edits and seeds).
// With --reward brightness the runs are rewarded for ± the mean brightness of the decoded edit and
// the held-out measure is that brightness: a reward the policy certainly controls, which checks the
// sign of the whole sample → reward → advantage → update loop (learning notes E17.5, E18).
// Usage:
//   bun scripts/learning_evidence.ts --model DIR --out DIR [--seeds 0,1,2] [--epochs 12]
//        [--reward paper|brightness] [--train-n 32] [--heldout-n 16] [--eval-seeds 2] [--set key=value ...]
//        [--lora NAME=DIR ...] [--no-control] [--measure-on heldout|train] [--before-cache DIR]
//        [--heldout-skip K]
// --measure-on train measures on the training edits instead of the held-out ones (does a run learn
// what it was rewarded on, whether or not that carries over).
// --no-control trains only the rewarded run of each seed (to count how often it rises, at half the cost).
// --before-cache DIR keeps the model's before-training values there, keyed by everything they depend
// on (model, measure, edits, sampler, reward, seeds), so runs of other training settings skip them.
// --heldout-skip K measures on held-out edits K+1..K+H instead of 1..H: a confirmation set disjoint
// from an earlier experiment's, declared before it is measured (learning notes E33).
// With --lora no run trains: each saved checkpoint folder (a run's checkpoints/checkpoint_N) is measured
// on the same held-out edits and seeds as the model before training, paired (e.g. an earlier epoch of
// a run; the --set values must be the run's, since they choose the sampler); OUT/results.json then
// holds every pair's values (cosine, reward, MAE) before and with each checkpoint.
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { initGpu, destroyGpu } from "../src/gpu/device.ts";
import { writeFileAtomic } from "../src/io/atomic.ts";
import { synthDataset } from "../src/data/synth_dataset.ts";
import { loadIP2P, type IP2PModels } from "../src/diffusion/pipeline.ts";
import { openDataset } from "../src/io/datasets/index.ts";
import { loadConfig, type Config } from "../src/rl/config.ts";
import { Trainer, rewardLayers, type RewardInput } from "../src/rl/trainer.ts";
import { editImage } from "../src/diffusion/edit.ts";
import { prepareSample, type PreparedSample } from "../src/rl/prepare.ts";
import { instructReward, type RewardParts } from "../src/rl/reward.ts";
import { evaluateAttention, pairedDifference } from "../src/rl/attention_eval.ts";
import { listCheckpoints, LORA_FILE } from "../src/rl/checkpoint.ts";
import { loadLoraFile, removeLora } from "../src/nn/lora.ts";
import { HELDOUT_SEED } from "../src/pretrain/data.ts";
import { defaultRewardLayers } from "../src/rl/model_defaults.ts";
import { EXPERIMENT_SETTINGS } from "./experiment_settings.ts";

const { values } = parseArgs({
  options: {
    model: { type: "string" },
    out: { type: "string" },
    seeds: { type: "string", default: "0,1,2" },
    epochs: { type: "string", default: "12" },
    "train-n": { type: "string", default: "32" },
    "heldout-n": { type: "string", default: "16" },
    "eval-seeds": { type: "string", default: "2" },
    reward: { type: "string", default: "paper" },
    set: { type: "string", multiple: true, default: [] },
    lora: { type: "string", multiple: true, default: [] },
    "no-control": { type: "boolean", default: false },
    "measure-on": { type: "string", default: "heldout" },
    "before-cache": { type: "string" },
    "heldout-skip": { type: "string", default: "0" },
  },
});
if (!values.model || !values.out) throw new Error("--model DIR and --out DIR are required");
const out = resolve(values.out);
mkdirSync(out, { recursive: true });
const seeds = values.seeds === "" ? [] : values.seeds!.split(",").map(Number); // --seeds "" only measures before (e.g. to fill --before-cache)
const epochs = Number(values.epochs);
const rewardKind = values.reward!;
if (rewardKind !== "paper" && rewardKind !== "brightness") throw new Error(`--reward: '${rewardKind}' is not paper or brightness`);
const measureName = rewardKind === "paper" ? "attention_cos" : "brightness";

// The experiments' base (E17–E23's demo run, scripts/experiment_settings.ts) with 8 DDIM steps; --set on top.
const SETTINGS = [...EXPERIMENT_SETTINGS, "sample.num_steps=8", "report.num_samples=2", `num_epochs=${epochs}`, `save_freq=${epochs}`, ...values.set!];

await initGpu();
const trainManifest = join(out, "train", "manifest.jsonl");
const heldManifest = join(out, "heldout", "manifest.jsonl");
if (!existsSync(trainManifest)) await synthDataset(join(out, "train"), { n: Number(values["train-n"]), seed: 3, size: 32, grounded: true });
const heldoutSkip = Number(values["heldout-skip"]);
if (!Number.isInteger(heldoutSkip) || heldoutSkip < 0) throw new Error(`--heldout-skip: '${values["heldout-skip"]}' is not a count`);
if (!existsSync(heldManifest)) await synthDataset(join(out, "heldout"), { n: heldoutSkip + Number(values["heldout-n"]), seed: HELDOUT_SEED, size: 32, grounded: true });

const models = loadIP2P(values.model);
const layersSpec = `reward.layers=${defaultRewardLayers(models.unet)}`;
const configFor = (seed: number, dir: string): Config => loadConfig(undefined, [...SETTINGS, layersSpec, `seed=${seed}`, `data=${trainManifest}`, `logdir=${dir}`]);
const cfg0 = configFor(0, out);
const layers = rewardLayers(models, cfg0);
const mapSide = Math.ceil(cfg0.resolution / models.vae.scaleFactor / layers[0].factor);
const held: PreparedSample[] = [];
const measureOn = values["measure-on"]!;
if (measureOn !== "heldout" && measureOn !== "train") throw new Error(`--measure-on: '${measureOn}' is not heldout or train`);
let index = 0;
for await (const s of (await openDataset(measureOn === "train" ? trainManifest : heldManifest)).samples()) {
  if (measureOn === "train" || index++ >= heldoutSkip) held.push(await prepareSample(s, cfg0.resolution, mapSide));
}
if (measureOn === "heldout" && held.length !== Number(values["heldout-n"])) throw new Error(`${heldManifest} holds ${held.length + heldoutSkip} edits, not --heldout-skip + --heldout-n (a folder from another run?)`);
const evalSeeds = Array.from({ length: Number(values["eval-seeds"]) }, (_, i) => 1000 + i);

const mean = (xs: readonly number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;

/** With the paper's reward, its value and MAE(edit, input) per (held-out edit, seed) of the latest heldOutCos. */
let side: { reward: number[]; mae: number[] } = { reward: [], mae: [] };

/** The measure per (held-out edit, seed) under the training sampler: attention_cos (evaluateAttention's values) or brightness. */
async function heldOutCos(m: IP2PModels, cfg: Config): Promise<number[]> {
  if (rewardKind === "paper") {
    const e = await evaluateAttention(m, cfg, layers, held, evalSeeds);
    side = { reward: e.rewardValues, mae: e.maeValues };
    return e.values;
  }
  const values: number[] = [];
  for (const s of held) {
    for (const seed of evalSeeds) {
      const input = { width: s.size, height: s.size, channels: 3, data: s.source };
      const r = await editImage(m, input, s.instruction, {
        steps: cfg.sample.num_steps,
        guidance: { text: cfg.sample.guidance_scale, image: cfg.sample.image_guidance_scale },
        eta: cfg.sample.eta,
        seed,
      });
      values.push(mean(Array.from(r.image.data)));
    }
  }
  return values;
}

/** The training reward of one sampled edit, before the run's sign. */
function baseReward(x: RewardInput, cfg: Config): RewardParts {
  const p = instructReward(x.attentionMap, x.sample.aGt, x.sample.source, x.output, cfg.reward.alpha, cfg.reward.tau);
  return rewardKind === "paper" ? p : { ...p, reward: mean(Array.from(x.output)) };
}

const t0 = performance.now();
/** The before-training values, from --before-cache when it has them for exactly this measurement. */
async function measureBefore(): Promise<number[]> {
  if (!values["before-cache"]) return heldOutCos(models, cfg0);
  const key = createHash("sha256")
    .update(JSON.stringify({ model: resolve(values.model!), rewardKind, measureOn, ...(heldoutSkip > 0 ? { heldoutSkip } : {}), edits: readFileSync(measureOn === "train" ? trainManifest : heldManifest, "utf8"), sample: { ...cfg0.sample, shared_initial_noise: undefined /* training only */ }, reward: cfg0.reward, resolution: cfg0.resolution, evalSeeds }))
    .digest("hex")
    .slice(0, 16);
  const file = join(resolve(values["before-cache"]), `before-${key}.json`);
  if (existsSync(file)) {
    const cached = JSON.parse(readFileSync(file, "utf8")) as { values: number[]; side: typeof side };
    side = cached.side;
    return cached.values;
  }
  const v = await heldOutCos(models, cfg0);
  mkdirSync(resolve(values["before-cache"]), { recursive: true });
  writeFileAtomic(file, JSON.stringify({ values: v, side }));
  return v;
}
const before = await measureBefore();
const meanBefore = mean(before);
const sideBefore = side;
console.log(`before: ${measureOn === "train" ? "training-edit" : "held-out"} ${measureName} ${meanBefore.toFixed(4)} over ${before.length} (edit, seed) pairs (${((performance.now() - t0) / 1000).toFixed(0)} s)`);
/** The measure with a saved LoRA loaded, paired against the model before training (and, with the paper's reward, its reward and MAE). */
async function measureLora(loraFile: string, cfg: Config) {
  loadLoraFile(models.unet, loraFile);
  const after = await heldOutCos(models, cfg);
  removeLora(models.unet);
  const d = pairedDifference(after, before);
  const extra = rewardKind === "paper" ? { reward: pairedDifference(side.reward, sideBefore.reward), mae: pairedDifference(side.mae, sideBefore.mae) } : undefined;
  const also = extra ? `; reward ${extra.reward.mean.toFixed(4)} ± ${extra.reward.stderr.toFixed(4)}, MAE ${extra.mae.mean.toFixed(4)} ± ${extra.mae.stderr.toFixed(4)}` : "";
  const line = `${measureName} after ${mean(after).toFixed(4)}, paired diff ${d.mean.toFixed(4)} ± ${d.stderr.toFixed(4)} (t ${(d.mean / d.stderr).toFixed(2)}, n ${d.n})${also}`;
  return { after, d, extra, line };
}

if (values.lora!.length > 0) {
  // per (edit, seed) values, so that two checkpoints can be compared paired on the same pairs
  const measured: Record<string, unknown>[] = [];
  for (const spec of values.lora!) {
    const i = spec.indexOf("=");
    const name = i < 0 ? spec : spec.slice(0, i);
    const m = await measureLora(join(spec.slice(i + 1), LORA_FILE), cfg0);
    console.log(`${name}: ${m.line} (${((performance.now() - t0) / 1000).toFixed(0)} s)`);
    measured.push({ name, lora: resolve(spec.slice(i + 1)), after: mean(m.after), diff_mean: m.d.mean, diff_se: m.d.stderr, after_values: m.after, ...(rewardKind === "paper" ? side : {}) });
    writeFileSync(join(out, "results.json"), JSON.stringify({ model: resolve(values.model), reward: rewardKind, measure: measureName, measured_on: measureOn, heldout_skip: heldoutSkip, settings: SETTINGS, eval_seeds: evalSeeds, before: meanBefore, before_values: before, before_side: sideBefore, loras: measured }, null, 2) + "\n");
  }
  destroyGpu();
  process.exit(0);
}
const rows: Record<string, unknown>[] = [];
let afterRewarded: number[] = [];
for (const seed of seeds) {
  for (const sign of values["no-control"] ? [1] : [1, -1]) {
    const name = `${sign > 0 ? rewardKind : "negated"}-seed${seed}`;
    const dir = join(out, "runs", name);
    const cfg = configFor(seed, dir);
    mkdirSync(dir, { recursive: true });
    const trainer = new Trainer(models, cfg, await openDataset(trainManifest), dir, {
      reward: (x) => {
        const p = baseReward(x, cfg);
        return { ...p, reward: sign * p.reward };
      },
    });
    await trainer.init();
    const history = await trainer.run({});
    const ck = listCheckpoints(dir);
    const { after, d, extra, line } = await measureLora(join(ck[ck.length - 1][1], LORA_FILE), cfg);
    const row: Record<string, unknown> = { run: name, seed, reward: sign > 0 ? rewardKind : "negated (control)", epochs: history.length, train_reward: history.map((h) => h.reward_mean), approx_kl: history.map((h) => h.approx_kl), after: mean(after), diff_mean: d.mean, diff_se: d.stderr, t: d.mean / d.stderr, n: d.n, after_values: after };
    if (extra) {
      row.reward_diff = { mean: extra.reward.mean, se: extra.reward.stderr, t: extra.reward.mean / extra.reward.stderr };
      row.mae_diff = { mean: extra.mae.mean, se: extra.mae.stderr, t: extra.mae.mean / extra.mae.stderr };
    }
    let vsControl = "";
    if (sign > 0) afterRewarded = after;
    else {
      const v = pairedDifference(afterRewarded, after);
      row.rewarded_minus_control = { mean: v.mean, se: v.stderr, t: v.mean / v.stderr };
      vsControl = `; rewarded − control ${v.mean.toFixed(4)} ± ${v.stderr.toFixed(4)} (t ${(v.mean / v.stderr).toFixed(2)})`;
    }
    rows.push(row);
    console.log(`${name}: ${line}${vsControl} (${((performance.now() - t0) / 1000).toFixed(0)} s)`);
    writeFileSync(join(out, "results.json"), JSON.stringify({ model: resolve(values.model), reward: rewardKind, measure: measureName, measured_on: measureOn, settings: SETTINGS, eval_seeds: evalSeeds, before: meanBefore, before_values: before, runs: rows }, null, 2) + "\n");
  }
}
destroyGpu();
process.exit(0);
