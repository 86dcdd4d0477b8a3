// `rl4pix pretrain --out RUN_DIR`: train our own small InstructPix2Pix from scratch (VAE, optionally
// its decoder alone, then text encoder + UNet as text-to-image, then the editor; src/pretrain/run.ts). Resumes RUN_DIR; Ctrl-C or
// --max-seconds checkpoint and stop (exit 130 / 0), and the same command continues later.
import type { Command } from "commander";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import editorSpecJson from "../../configs/editor-tiny.json" with { type: "json" };
import { initGpu } from "../gpu/device.ts";
import { Interrupted, UserError } from "../errors.ts";
import { parseTinySpec, type TinySpec } from "../models/tiny.ts";
import { type PretrainSettings, preparePretrainDir, runPretrain } from "../pretrain/run.ts";
import { action, num } from "./run.ts";

export interface PretrainOptions {
  out: string;
  spec?: string;
  size: number;
  batch: number;
  seed: number;
  vaeSteps: number;
  decoderSteps: number;
  decoderLr: number;
  t2iSteps: number;
  editorSteps: number;
  vaeLr: number;
  t2iLr: number;
  editorLr: number;
  editorBatch?: number;
  editorLoss?: string;
  textLrScale: number;
  evalEvery: number;
  heldOut: number;
  evalSampleSteps: number;
  checkpointEvery: number;
  maxSeconds?: number;
  /** Continue a stage kept as finished without its AdamW moments, with a restarted optimizer. */
  freshOptimizer?: boolean;
  quiet?: boolean;
}

function readSpec(path?: string): TinySpec {
  if (!path) return parseTinySpec(editorSpecJson, "configs/editor-tiny.json");
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(path, "utf8"));
  } catch (e) {
    throw new UserError(`${path}: cannot read the architecture spec (${(e as Error).message})`);
  }
  return parseTinySpec(raw, path);
}

export function pretrainSettings(o: PretrainOptions): PretrainSettings {
  const spec = readSpec(o.spec);
  if (o.batch % 2 !== 0) throw new UserError(`--batch: must be even (the VAE stage pairs sources and targets), got ${o.batch}`);
  const editorLoss = o.editorLoss ?? "v";
  if (editorLoss !== "eps" && editorLoss !== "v") throw new UserError(`--editor-loss: must be eps or v, got '${editorLoss}'`);
  return {
    spec,
    size: o.size,
    batch: o.batch,
    seed: o.seed,
    vae: { steps: o.vaeSteps, lr: o.vaeLr, klWeight: 1e-5 },
    // absent when 0 steps: runs made before the decoder stage existed keep their settings
    ...(o.decoderSteps > 0 ? { decoder: { steps: o.decoderSteps, lr: o.decoderLr } } : {}),
    t2i: { steps: o.t2iSteps, lr: o.t2iLr, textLrScale: o.textLrScale, captionDropout: 0.1 },
    // The editor batch when it is --batch, and the eps weighting, are left out of the settings: runs
    // made before these options existed (eps, one batch) still match.
    editor: {
      steps: o.editorSteps,
      lr: o.editorLr,
      dropout: 0.05,
      ...(o.editorBatch !== undefined && o.editorBatch !== o.batch ? { batch: o.editorBatch } : {}),
      ...(editorLoss !== "eps" ? { weighting: editorLoss } : {}),
    },
    warmupSteps: 100,
    weightDecay: 0.01,
    maxGradNorm: 1,
    checkpointEvery: o.checkpointEvery,
    evalEvery: o.evalEvery,
    heldOut: o.heldOut,
    evalSampleSteps: o.evalSampleSteps,
  };
}

/** Returns true when every stage finished. */
export async function pretrain(o: PretrainOptions): Promise<boolean> {
  const settings = pretrainSettings(o);
  preparePretrainDir(o.out, settings); // every host-side check before the GPU starts
  await initGpu();
  const t0 = performance.now();
  let interrupted = false;
  const onSigint = () => {
    if (interrupted) process.exit(130);
    interrupted = true;
    console.error("\nrl4pix: stopping after this step (a checkpoint will be saved); press Ctrl-C again to quit now");
  };
  process.on("SIGINT", onSigint);
  try {
    const done = await runPretrain(o.out, settings, {
      stop: () => interrupted || (o.maxSeconds !== undefined && performance.now() - t0 > o.maxSeconds * 1000),
      log: o.quiet ? undefined : (line) => console.error(line),
      freshOptimizer: o.freshOptimizer,
    });
    if (interrupted) throw new Interrupted(`interrupted; run the same command to resume ${o.out}`);
    return done;
  } finally {
    process.off("SIGINT", onSigint);
  }
}

export function register(program: Command): void {
  program
    .command("pretrain")
    .description("train a small InstructPix2Pix from scratch on grounded synthetic edits (VAE, text-to-image, editor); resumes --out")
    .requiredOption("--out <dir>", "run folder (checkpoints, metrics.jsonl per stage, model/ when a stage finishes); resumed when it exists")
    .option("--spec <file>", "architecture (rl4pix-tiny/1 JSON; default configs/editor-tiny.json)")
    .option("--size <px>", "image size", num("--size", 16, 512, true), 32)
    .option("--batch <n>", "examples per step (even)", num("--batch", 2, 4096, true), 16)
    .option("--seed <n>", "noise and dropout seed", num("--seed", 0, 2 ** 31 - 1, true), 0)
    .option("--vae-steps <n>", "VAE (autoencoder) steps", num("--vae-steps", 0, 1e7, true), 1500)
    .option("--decoder-steps <n>", "steps fine-tuning the VAE's decoder alone after the VAE stage (MSE on the frozen encoder's latents, learning rate falling to 0; 0 = none)", num("--decoder-steps", 0, 1e7, true), 0)
    .option("--decoder-lr <x>", "decoder fine-tuning learning rate (before its linear decay)", num("--decoder-lr", 0, 1), 3e-4)
    .option("--t2i-steps <n>", "text-to-image steps (text encoder + UNet on captions)", num("--t2i-steps", 0, 1e7, true), 3000)
    .option("--editor-steps <n>", "InstructPix2Pix steps", num("--editor-steps", 0, 1e7, true), 2000)
    .option("--vae-lr <x>", "VAE learning rate", num("--vae-lr", 0, 1), 1e-3)
    .option("--t2i-lr <x>", "text-to-image learning rate", num("--t2i-lr", 0, 1), 1e-3)
    .option("--editor-lr <x>", "editor learning rate", num("--editor-lr", 0, 1), 1e-3)
    .option("--editor-batch <n>", "examples per editor step (default: --batch)", num("--editor-batch", 1, 4096, true))
    .option("--editor-loss <w>", "editor loss weighting over timesteps: v (the v-prediction loss's weights, 1/alphā_t: the editor keeps the source far sooner) or eps (the plain noise loss)", "v")
    .option("--text-lr-scale <x>", "text encoder learning rate / UNet's in the text-to-image stage", num("--text-lr-scale", 0, 10), 0.5)
    .option("--eval-every <n>", "held-out evaluation every N steps", num("--eval-every", 0, 1e7, true), 500)
    .option("--held-out <n>", "held-out examples in the periodic evaluations", num("--held-out", 1, 4096, true), 32)
    .option("--eval-sample-steps <n>", "DDIM steps of the editor's sampled evaluation", num("--eval-sample-steps", 1, 1000, true), 20)
    .option("--checkpoint-every <n>", "steps between checkpoints", num("--checkpoint-every", 1, 1e7, true), 100)
    .option("--max-seconds <s>", "checkpoint and stop after this long (run again to resume)", num("--max-seconds", 1, 1e8))
    .option("--fresh-optimizer", "lengthen a stage whose checkpoint holds the weights only (kept as finished, e.g. in checkpoints/) with a restarted AdamW and warm-up (not an exact resume)")
    .action(action(async (o: PretrainOptions) => {
      const done = await pretrain(o);
      console.log(done ? join(o.out, "model") : `${o.out} (stopped; run the same command to resume)`);
    }));
}
