// `rl4pix train [--config FILE] --out RUN_DIR [--set k=v …]`: InstructRL4Pix training, resumable.
import type { Command } from "commander";
import { existsSync, readFileSync, rmSync } from "node:fs";
import { basename, join } from "node:path";
import { initGpu } from "../gpu/device.ts";
import { UserError } from "../errors.ts";
import { type Config, checkResumable, configFromJSON, saveConfig } from "../rl/config.ts";
import { ensureRunDir, type EpochMetrics, Trainer } from "../rl/trainer.ts";
import { chooseCheckpoint, recoverInterruptedWrites, type ResumePoint, setAside } from "../rl/checkpoint_check.ts";
import { lockRunDir } from "../io/run_lock.ts";
import { type EditDataset, openDataset } from "../io/datasets/index.ts";
import { synthDataset } from "../data/synth_dataset.ts";
import { defaultModelDir } from "../models/default_model.ts";
import { loadIP2P } from "../diffusion/pipeline.ts";
import { writeReport } from "../eval/report.ts";
import { progressBar, type Progress } from "./progress.ts";
import { action } from "./run.ts";
import { loadRunConfig, trainDefaultsHelp } from "./run_config.ts";

export interface TrainOptions {
  config?: string;
  out: string;
  set?: string[];
  force?: boolean;
  /** Resume from this checkpoint (epoch number or folder) instead of the newest. */
  resumeFrom?: string;
  quiet?: boolean;
}

/** The dataset a config names; with the embedded model and no data, a synthetic set in the run dir. */
export async function datasetFor(cfg: Config, runDir: string): Promise<string> {
  if (cfg.data) return cfg.data;
  if (cfg.model) throw new UserError("data: a training run on a real model needs a dataset (--set data=PATH: MagicBrush parquet/folder or a JSONL manifest)");
  const dir = join(runDir, "synth");
  const manifest = join(dir, "manifest.jsonl");
  if (!existsSync(manifest)) await synthDataset(dir, { n: 64, seed: cfg.seed, size: cfg.resolution, grounded: true });
  return manifest;
}

export async function train(o: TrainOptions): Promise<EpochMetrics[]> {
  const { cfg } = await loadRunConfig(o.config, o.set ?? [], "--set"); // the model folder checked, its defaults applied
  if (cfg.mixed_precision === "bf16") throw new UserError("mixed_precision: bf16 has no WebGPU type; use \"fp16\" or \"no\"");
  if (!cfg.use_lora) throw new UserError("use_lora: full fine-tuning is not supported; LoRA (use_lora true) only");
  const runDir = o.out;
  const fresh = !existsSync(runDir);
  ensureRunDir(runDir);
  const lock = lockRunDir(runDir);
  try {
    recoverInterruptedWrites(runDir);
    const resume = chooseCheckpoint(runDir, o.resumeFrom ?? (cfg.resume_from || undefined));
    const cfgPath = join(runDir, "config.json");
    if (existsSync(cfgPath)) {
      let saved: Config;
      try {
        saved = configFromJSON(JSON.parse(readFileSync(cfgPath, "utf8")), cfgPath);
      } catch (e) {
        throw e instanceof UserError ? e : new UserError(`${cfgPath}: unreadable (${(e as Error).message})`);
      }
      if (!o.force) checkResumable(saved, cfg, runDir);
    }
    const dataset = cfg.data ? await openDataset(cfg.data) : null; // a bad dataset fails before anything is written
    saveConfig(cfgPath, cfg);
    if (resume && resume.newer.length > 0) {
      const moved = setAside(runDir, resume.newer);
      console.error(`rl4pix: resuming from ${resume.path}; the newer checkpoints were moved to ${join(runDir, "checkpoints", "abandoned")} (${moved.map((p) => basename(p)).join(", ")})`);
    }
    return await runTraining(o, cfg, runDir, dataset ?? (await openDataset(await datasetFor(cfg, runDir))), resume);
  } catch (e) {
    // a run folder this command created and never started training in is removed: no partial output
    if (fresh && !existsSync(join(runDir, "metrics.jsonl"))) {
      lock.release();
      rmSync(runDir, { recursive: true, force: true });
    }
    throw e;
  } finally {
    lock.release();
  }
}

async function runTraining(o: TrainOptions, cfg: Config, runDir: string, dataset: EditDataset, resume: ResumePoint | null): Promise<EpochMetrics[]> {
  await initGpu();
  const models = loadIP2P(cfg.model || (await defaultModelDir()), { mixedPrecision: cfg.mixed_precision === "fp16" ? "fp16" : "no" });
  const trainer = new Trainer(models, cfg, dataset, runDir, { force: o.force, resume });
  const first = await trainer.init();
  let stop = false;
  let phase = "";
  const onSigint = () => {
    if (stop) process.exit(130); // the previous checkpoint stays; a half-written one is cleared on the next start
    stop = true;
    console.error(phase === "sampling"
      ? "\nrl4pix: stopping: this epoch's sampling is dropped and the last finished epoch checkpointed; press Ctrl-C again to quit now"
      : "\nrl4pix: stopping after this epoch (a checkpoint will be saved); press Ctrl-C again to quit now");
  };
  process.on("SIGINT", onSigint);
  let bar: Progress | null = null;
  let lastReward = "";
  try {
    if (!o.quiet) {
      if (first > 0) console.error(`rl4pix: resuming ${runDir} at epoch ${first}`);
      bar = progressBar("train", cfg.num_epochs, " {phase} reward {reward}");
      bar.update(first, { phase: "", reward: "-" });
    }
    const history = await trainer.run({
      onPhase: (epoch, p, done, total) => {
        phase = p;
        bar?.update(epoch, { phase: `${p} ${done}/${total}`, reward: lastReward || "-" });
      },
      onEpoch: (m) => {
        lastReward = m.reward_mean.toFixed(4);
        bar?.update(m.epoch + 1, { phase: "", reward: lastReward });
        if (!process.stderr.isTTY && !o.quiet) {
          console.error(`epoch ${m.epoch}: reward ${m.reward_mean.toFixed(4)} (cos ${m.reward_cos_mean.toFixed(4)}, clip ${m.reward_clip_mean.toFixed(4)}) kl ${m.approx_kl.toExponential(2)} clipfrac ${m.clipfrac.toFixed(3)} ${m.seconds.toFixed(1)} s`);
        }
      },
      shouldStop: () => stop,
    });
    bar?.stop();
    writeReport(runDir);
    return history;
  } finally {
    process.off("SIGINT", onSigint);
  }
}

export function register(program: Command): void {
  program
    .command("train")
    .description("InstructRL4Pix training: PPO on the denoising chain with LoRA, attention-map reward; resumes from RUN_DIR's latest checkpoint")
    .addHelpText("after", trainDefaultsHelp())
    .option("--config <file>", "JSON config (keys of the paper's Table 4; see configs/)")
    .requiredOption("--out <run-dir>", "run folder: config, metrics.jsonl, samples, checkpoints, report.html")
    .option("--set <key=value...>", "override config keys, e.g. --set train.learning_rate=1e-4 sample.num_steps=20")
    .option("--force", "resume even if RUN_DIR was made with another configuration")
    .option("--resume-from <epoch|dir>", "resume from this checkpoint instead of the newest (e.g. when the newest is damaged); newer ones are moved to checkpoints/abandoned/")
    .action(action(async (o: TrainOptions) => {
      const h = await train(o);
      const last = h[h.length - 1];
      if (last) console.log(`${join(o.out, "report.html")}  (epoch ${last.epoch}: reward ${last.reward_mean.toFixed(4)})`);
    }));
}
