// `rl4pix pretrain --out DIR`: supervised InstructPix2Pix fine-tuning of a model's whole UNet on
// synthetic edits (src/diffusion/finetune.ts), written as a new diffusers folder (the other
// components copied unchanged). Its use: a trained starting point for the embedded tiny model.
import type { Command } from "commander";
import { cpSync, existsSync, mkdirSync, readdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import { initGpu } from "../gpu/device.ts";
import { loadIP2P } from "../diffusion/pipeline.ts";
import { finetuneUnet } from "../diffusion/finetune.ts";
import { readParameters } from "../nn/load.ts";
import { writeSafetensors } from "../io/safetensors.ts";
import { publishFolder, tempSibling } from "../io/atomic.ts";
import { rgbToPlanar, synthSample } from "../data/synth.ts";
import { UserError } from "../errors.ts";
import { modelDir } from "./model_args.ts";
import { action, num } from "./run.ts";

export interface PretrainOptions {
  out: string;
  model?: string;
  steps: number;
  batch: number;
  size: number;
  lr: number;
  seed: number;
  dataSeed: number;
  /** Train the text encoder too (written into the folder as well). */
  trainTextEncoder?: boolean;
  /** Stop early after this many seconds (the folder is written either way). */
  maxSeconds?: number;
  quiet?: boolean;
}

/** Fine-tune and write the folder; returns the per-step losses. */
export async function pretrain(o: PretrainOptions): Promise<number[]> {
  if (existsSync(o.out) && readdirSync(o.out).length > 0) throw new UserError(`${o.out}: the output folder exists and is not empty`);
  const src = await modelDir({ model: o.model });
  await initGpu();
  const models = loadIP2P(src);
  const example = (i: number) => {
    const s = synthSample(o.dataSeed, i, { size: o.size });
    return { source: rgbToPlanar(s.source, s.width, s.height), target: rgbToPlanar(s.target, s.width, s.height), instruction: s.instruction };
  };
  const t0 = performance.now();
  let window = 0;
  const losses = await finetuneUnet(models, {
    steps: o.steps,
    batch: o.batch,
    size: o.size,
    learningRate: o.lr,
    seed: o.seed,
    example,
    trainTextEncoder: o.trainTextEncoder,
    stop: () => o.maxSeconds !== undefined && performance.now() - t0 > o.maxSeconds * 1000,
    onStep: (step, loss) => {
      window += loss;
      if (!o.quiet && ((step + 1) % 50 === 0 || step + 1 === o.steps)) {
        const n = (step % 50) + 1;
        console.error(`step ${step + 1}/${o.steps}: loss ${(window / n).toFixed(4)} (mean of the last ${n}) ${((performance.now() - t0) / 1000).toFixed(0)} s`);
        window = 0;
      }
    },
  });
  const tmp = tempSibling(o.out);
  try {
    cpSync(src, tmp, { recursive: true });
    const unetDir = join(tmp, "unet");
    for (const f of readdirSync(unetDir)) if (f.endsWith(".safetensors") || f.endsWith(".bin")) rmSync(join(unetDir, f));
    mkdirSync(unetDir, { recursive: true });
    const meta = {
      format: "pt",
      rl4pix_pretrain: JSON.stringify({ from: src, steps: losses.length, batch: o.batch, size: o.size, lr: o.lr, seed: o.seed, data_seed: o.dataSeed, text_encoder: Boolean(o.trainTextEncoder) }),
    };
    const asF32 = (w: Map<string, { shape: readonly number[]; data: Float32Array }>) => new Map([...w].map(([k, v]) => [k, { dtype: "F32" as const, shape: v.shape, data: v.data }]));
    writeSafetensors(join(unetDir, "diffusion_pytorch_model.safetensors"), asF32(await readParameters(models.unet)), meta);
    if (o.trainTextEncoder) {
      const textDir = join(tmp, "text_encoder");
      for (const f of readdirSync(textDir)) if (f.endsWith(".safetensors") || f.endsWith(".bin")) rmSync(join(textDir, f));
      writeSafetensors(join(textDir, "model.safetensors"), asF32(await readParameters(models.textEncoder)), meta);
    }
  } catch (e) {
    rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
  publishFolder(tmp, o.out, o.out);
  return losses;
}

export function register(program: Command): void {
  program
    .command("pretrain")
    .description("supervised InstructPix2Pix fine-tuning of the whole UNet on synthetic edits; writes a new diffusers folder")
    .requiredOption("--out <dir>", "output folder (must not exist or be empty)")
    .option("--model <dir>", "diffusers folder to start from (default: the embedded tiny model)")
    .option("--steps <n>", "optimizer steps", num("--steps", 1, 1e7, true), 2000)
    .option("--batch <n>", "examples per step", num("--batch", 1, 4096, true), 16)
    .option("--size <px>", "image size", num("--size", 16, 4096, true), 32)
    .option("--lr <x>", "AdamW learning rate", num("--lr", 0, 1), 1e-3)
    .option("--seed <n>", "noise and dropout seed", num("--seed", 0, 2 ** 31 - 1, true), 0)
    .option("--train-text-encoder", "train the text encoder too (IP2P keeps it frozen)")
    .option("--max-seconds <s>", "stop early after this long (the folder is written either way)", num("--max-seconds", 1, 1e7))
    .option("--data-seed <n>", "synthetic data seed (examples 0, 1, 2, … of it)", num("--data-seed", 0, 2 ** 31 - 1, true), 1000)
    .action(action(async (o: PretrainOptions) => {
      await pretrain(o);
      console.log(o.out);
    }));
}
