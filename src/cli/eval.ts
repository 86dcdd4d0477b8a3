// `rl4pix eval --data DIR|MANIFEST|PARQUET --out DIR [--model DIR] [--lora FILE] [--clip DIR|tiny] …`:
// the MagicBrush evaluation (src/eval/runner.ts). Prints the table in the paper's layout and writes
// OUT/results.json (the report shows OUT when it is RUN_DIR/eval/<name>).
import type { Command } from "commander";
import { existsSync } from "node:fs";
import { resolve } from "node:path";
import { UserError } from "../errors.ts";
import { initGpu } from "../gpu/device.ts";
import { loadClip, loadClipConfigs } from "../nn/clip_model.ts";
import { defaultTinyClipDir } from "../models/tiny_clip.ts";
import { runEval, type TurnsOption } from "../eval/runner.ts";
import { formatTable } from "../eval/table.ts";
import { addModelFlags, checkModelFlags, loadModelsFromFlags, type ModelFlags } from "./model_args.ts";
import { nativeResolution } from "../diffusion/model_folder.ts";
import { progressBar } from "./progress.ts";
import { action, num } from "./run.ts";

interface EvalFlags extends ModelFlags {
  data: string;
  out: string;
  clip?: string;
  turns: string;
  limit?: number;
  steps: number;
  textGuidance: number;
  imageGuidance: number;
  seed: number;
  resolution?: number;
}

/** `--clip tiny` is the embedded tiny random CLIP (for demos), unless a folder named `tiny` exists. */
export function clipDirFromFlag(flag: string): string {
  if (flag === "tiny" && !existsSync(flag)) return defaultTinyClipDir();
  return flag;
}

export async function evalCommand(o: EvalFlags): Promise<void> {
  if (!["single", "multi", "both"].includes(o.turns)) throw new UserError(`--turns: expected single, multi or both, got '${o.turns}'`);
  if (o.lora && !existsSync(o.lora)) throw new UserError(`--lora: ${o.lora}: file not found`);
  // Check the CLIP folder before any editing (a wrong folder should not fail after hours of work).
  const clipDir = o.clip ? clipDirFromFlag(o.clip) : null;
  if (clipDir) loadClipConfigs(clipDir);
  const checked = await checkModelFlags(o); // a broken --model or --lora fails here, before the GPU starts
  const model = checked.dir;
  // by default every input is scaled to the model's native size (not edited at its own size)
  const resolution = o.resolution ?? nativeResolution(checked.model.config) ?? undefined;
  const run = await runEval({
    data: o.data,
    out: o.out,
    turns: o.turns as TurnsOption,
    limit: o.limit,
    steps: o.steps,
    textGuidance: o.textGuidance,
    imageGuidance: o.imageGuidance,
    seed: o.seed,
    resolution,
    models: () => loadModelsFromFlags(o, checked),
    clip: clipDir
      ? async () => {
        await initGpu();
        return loadClip(clipDir);
      }
      : null,
    labels: {
      model: resolve(model) + (o.variant ? ` (variant ${o.variant})` : ""),
      lora: o.lora ? resolve(o.lora) : null,
      clip: o.clip === "tiny" && clipDir !== "tiny" ? "tiny (random weights)" : clipDir ? resolve(clipDir) : null,
    },
    progress: (total) => progressBar("eval", total),
  });
  const r = run.results;
  const s = r.settings;
  const parts = [
    `${r.n} sample${r.n === 1 ? "" : "s"} (${s.sessions} session${s.sessions === 1 ? "" : "s"}) from ${o.data}`,
    `DDIM ${o.steps} steps`,
    `s_T ${o.textGuidance}`,
    `s_I ${o.imageGuidance}`,
    `seed ${o.seed}`,
    resolution === undefined ? "each input at its own size" : `resolution ${resolution}${o.resolution ? "" : " (the model's native size)"}`,
    `CLIP ${s.clip ?? "none"}`,
  ];
  console.log(`MagicBrush evaluation: ${parts.join(" · ")}`);
  console.log(`single-turn: every turn scored; multi-turn: final turn of each session scored (${run.edited} edited, ${run.reused} reused)`);
  if (typeof s.truncated_sessions === "number" && s.truncated_sessions > 0) {
    console.log(`note: --limit cut ${s.truncated_sessions} session(s) short; their last edited turn is scored as the final turn`);
  }
  console.log(formatTable(r.table));
  console.log(run.resultsPath);
}

export function register(program: Command): void {
  addModelFlags(
    program
      .command("eval")
      .description("MagicBrush evaluation: edit every sample, write the outputs and OUT/results.json, print L1 L2 CLIP-T SSIM PSNR CLIP-I")
      .requiredOption("--data <path>", "dataset: MagicBrush folder (edit_sessions.json), parquet file/folder, or JSONL manifest")
      .requiredOption("--out <dir>", "output folder (resumable: existing outputs are reused)"),
  )
    .option("--clip <dir>", "CLIPModel folder (e.g. openai/clip-vit-base-patch32) for CLIP-T and CLIP-I; 'tiny' = a tiny random CLIP")
    .option("--turns <which>", "settings: single, multi or both", "both")
    .option("--limit <n>", "only the first N samples (turns)", num("--limit", 1, Number.MAX_SAFE_INTEGER, true))
    .option("--steps <n>", "DDIM steps", num("--steps", 1, 1000, true), 50)
    .option("--text-guidance <s>", "text guidance scale s_T", num("--text-guidance"), 7.5)
    .option("--image-guidance <s>", "image guidance scale s_I", num("--image-guidance"), 1.5)
    .option("--seed <n>", "random seed (the same for every edit)", num("--seed", 0, 2 ** 32 - 1, true), 0)
    .option("--resolution <px>", "scale each input's longer side to this many pixels first (default: the model's native size, UNet sample_size x VAE factor: 512 for SD-1.5)", num("--resolution", 8, 4096, true))
    .action(action(async (o: EvalFlags) => await evalCommand(o)));
}
