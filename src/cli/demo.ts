// `rl4pix demo` (what `npm run demo` runs): synthesise a small editing dataset, measure the embedded
// tiny model (attention-cosine reward under the training sampler, and the MagicBrush-style pixel
// metrics), train it with the attention reward for a few minutes, measure again, print the
// before/after table and the report's path.
import type { Command } from "commander";
import { existsSync } from "node:fs";
import { join, resolve } from "node:path";
import { initGpu } from "../gpu/device.ts";
import { synthDataset } from "../data/synth_dataset.ts";
import { defaultTinyClipDir } from "../models/tiny_clip.ts";
import { loadClip } from "../nn/clip_model.ts";
import { type IP2PModels, loadIP2P } from "../diffusion/pipeline.ts";
import { loadLoraFile, removeLora } from "../nn/lora.ts";
import { openDataset } from "../io/datasets/index.ts";
import { runEval } from "../eval/runner.ts";
import type { TableRow } from "../eval/table.ts";
import { writeReport } from "../eval/report.ts";
import type { Config } from "../rl/config.ts";
import { listCheckpoints, LORA_FILE } from "../rl/checkpoint.ts";
import { rewardLayers } from "../rl/trainer.ts";
import { prepareSample, type PreparedSample } from "../rl/prepare.ts";
import { type AttentionEval, evaluateAttention } from "../rl/attention_eval.ts";
import { train } from "./train.ts";
import { loadRunConfig } from "./run_config.ts";
import { action, num } from "./run.ts";

/** The demo's training run: small, and tuned so the reward moves within minutes on 2 CPU cores. */
export const DEMO_SETTINGS = [
  "resolution=32",
  "sample.num_steps=6",
  "sample.batch_size=8",
  "sample.num_batches_per_epoch=1",
  "train.batch_size=1",
  "train.learning_rate=0.003",
  "train.adam_beta2=0.99",
  "train.clip_range=0.2",
  "reward.alpha=0",
  "per_prompt_stat_tracking.buffer_size=16",
  "per_prompt_stat_tracking.min_count=2",
  "report.num_samples=4",
];

interface DemoOptions {
  out?: string;
  /** A diffusers folder instead of the embedded tiny model. */
  model?: string;
  epochs: number;
  samples: number;
}

function stamp(): string {
  const d = new Date();
  const p = (n: number) => String(n).padStart(2, "0");
  return `${d.getFullYear()}${p(d.getMonth() + 1)}${p(d.getDate())}-${p(d.getHours())}${p(d.getMinutes())}${p(d.getSeconds())}`;
}

async function measure(models: IP2PModels, cfg: Config, prepared: PreparedSample[], data: string, out: string, clipDir: string): Promise<{ att: AttentionEval; table: TableRow }> {
  const layers = rewardLayers(models, cfg);
  const att = await evaluateAttention(models, cfg, layers, prepared, [101, 102, 103]);
  const run = await runEval({
    data,
    out,
    turns: "single",
    steps: cfg.sample.num_steps,
    textGuidance: cfg.sample.guidance_scale,
    imageGuidance: cfg.sample.image_guidance_scale,
    seed: 0,
    models,
    clip: async () => loadClip(clipDir),
    labels: { model: "embedded tiny", clip: "tiny random CLIP" },
  });
  return { att, table: run.results.table[0] };
}

function row(name: string, m: { att: AttentionEval; table: TableRow }): string {
  const f = (v: number | null | undefined, d = 4) => (v === null || v === undefined ? "—" : v.toFixed(d));
  const t = m.table as unknown as Record<string, number | null>;
  return [
    name.padEnd(8),
    `${f(m.att.cos)} ± ${f(m.att.cosStderr, 3)}`.padEnd(16),
    f(t["L1"]).padStart(7),
    f(t["L2"]).padStart(7),
    f(t["CLIP-T"]).padStart(7),
    f(t["SSIM"]).padStart(7),
    f(t["PSNR"], 2).padStart(7),
  ].join("  ");
}

export async function demo(o: DemoOptions): Promise<void> {
  const t0 = performance.now();
  const say = (s: string) => console.log(`[demo ${((performance.now() - t0) / 1000).toFixed(0).padStart(4)} s] ${s}`);
  const runDir = resolve(o.out ?? join("runs", `demo-${stamp()}`));
  if (existsSync(join(runDir, "config.json"))) say(`resuming the run in ${runDir}`);
  const data = join(runDir, "data");
  const manifest = join(data, "manifest.jsonl");
  const settings = [...DEMO_SETTINGS, `data=${manifest}`, `num_epochs=${o.epochs}`, `save_freq=${o.epochs}`, ...(o.model ? [`model=${resolve(o.model)}`] : [])];
  // the model folder and the settings are checked before anything is written or the GPU starts;
  // the reward layers are the model's default (rl/model_defaults.ts)
  const { cfg, modelDir } = await loadRunConfig(undefined, settings, "demo");
  if (!existsSync(manifest)) await synthDataset(data, { n: o.samples, seed: 5, size: 32 });
  say(`synthetic dataset: ${o.samples} edits (insert / remove / replace / transform) in ${data}`);

  await initGpu();
  const clipDir = defaultTinyClipDir();
  const models = loadIP2P(modelDir);
  const layers = rewardLayers(models, cfg);
  const mapSide = Math.ceil(cfg.resolution / models.vae.scaleFactor / layers[0].factor);
  const prepared: PreparedSample[] = [];
  for await (const s of (await openDataset(manifest)).samples()) prepared.push(await prepareSample(s, cfg.resolution, mapSide));

  say("measuring the embedded tiny model before training");
  const before = await measure(models, cfg, prepared, manifest, join(runDir, "eval", "before"), clipDir);

  say(`training ${o.epochs} epochs (PPO + LoRA, attention reward; progress below)`);
  await train({ out: runDir, set: settings });

  const ck = listCheckpoints(runDir);
  const lora = join(ck[ck.length - 1][1], LORA_FILE);
  loadLoraFile(models.unet, lora);
  say(`measuring again with the trained LoRA (${lora})`);
  const after = await measure(models, cfg, prepared, manifest, join(runDir, "eval", "after"), clipDir);
  removeLora(models.unet);
  const report = writeReport(runDir);

  const minutes = (performance.now() - t0) / 60000;
  console.log("");
  console.log(`${"model".padEnd(8)}  ${"attention cos ↑".padEnd(16)}  ${"L1↓".padStart(7)}  ${"L2↓".padStart(7)}  ${"CLIP-T↑".padStart(7)}  ${"SSIM↑".padStart(7)}  ${"PSNR↑".padStart(7)}`);
  console.log(row("before", before));
  console.log(row("after", after));
  console.log("");
  console.log(`attention cos: mean over ${before.att.n} stochastic edits (${prepared.length} samples x 3 seeds, eta ${cfg.sample.eta}); pixel metrics: deterministic edits vs the synthetic targets (the tiny model is random: its edits are not meaningful).`);
  console.log(`report: ${report}`);
  console.log(`demo finished in ${minutes.toFixed(1)} minutes`);
}

export function register(program: Command): void {
  program
    .command("demo")
    .description("synthesise data, train the embedded tiny model with the attention reward, evaluate before/after, write a report")
    .option("--out <dir>", "run folder (default runs/demo-<time>)")
    .option("--model <dir>", "a diffusers folder instead of the embedded tiny model (e.g. from rl4pix pretrain)")
    .option("--epochs <n>", "training epochs", num("--epochs", 1, 10000, true), 16)
    .option("--samples <n>", "synthetic training edits", num("--samples", 1, 10000, true), 4)
    .action(action(async (o: DemoOptions) => await demo(o)));
}
