// Small commands: tiny, synth, tokenize, metrics, report.
import type { Command } from "commander";
import { join } from "node:path";
import { writeTinyCheckpoint } from "../models/tiny.ts";
import { synthDataset } from "../data/synth_dataset.ts";
import { ClipTokenizer } from "../text/clip_tokenizer.ts";
import { loadPipelineConfig } from "../io/diffusers.ts";
import { readImage } from "../io/image.ts";
import { pairMetrics } from "../eval/metrics.ts";
import { reportCommand } from "../eval/report.ts";
import { modelDir } from "./model_args.ts";
import { action, num } from "./run.ts";

export function register(program: Command): void {
  program
    .command("tiny")
    .description("write a small random InstructPix2Pix checkpoint in diffusers layout (its edits are not meaningful)")
    .argument("<dir>", "output folder (must not exist or be empty)")
    .option("--seed <n>", "weight seed", num("--seed", 0, 2 ** 31 - 1, true))
    .option("--fp16", "also write the fp16 UNet variant")
    .action(action(async (dir: string, o: { seed?: number; fp16?: boolean }) => {
      const info = writeTinyCheckpoint(dir, { seed: o.seed, variants: o.fp16 ? ["fp16"] : [] });
      console.log(`${info.dir} (seed ${info.seed}, ${info.parameters.unet + info.parameters.vae + info.parameters.text_encoder} parameters, vocabulary ${info.vocabSize})`);
    }));

  program
    .command("synth")
    .description("write a synthetic editing dataset (shapes; insert/remove/replace/transform) as a JSONL manifest")
    .argument("<dir>", "output folder")
    .requiredOption("--n <n>", "number of samples", num("--n", 1, 1e7, true))
    .option("--seed <n>", "seed", num("--seed", 0, 2 ** 31 - 1, true), 0)
    .option("--size <px>", "image size", num("--size", 16, 4096, true), 64)
    .option("--grounded", "2-3 shapes of distinct colours per scene; the instruction names the edited one (what pretrain trains on)")
    .action(action(async (dir: string, o: { n: number; seed: number; size: number; grounded?: boolean }) => {
      console.log(await synthDataset(dir, { n: o.n, seed: o.seed, size: o.size, grounded: o.grounded }));
    }));

  program
    .command("tokenize")
    .description("CLIP-tokenize TEXT with a model's tokenizer")
    .argument("<text>", "text to tokenize")
    .option("--model <dir>", "diffusers folder (default: the embedded tiny model)")
    .option("--json", "print JSON")
    .action(action(async (text: string, o: { model?: string; json?: boolean }) => {
      const dir = await modelDir(o);
      const tok = ClipTokenizer.fromDir(loadPipelineConfig(dir).tokenizer.dir);
      const enc = tok.encode(text);
      if (enc.untruncatedLength > tok.modelMaxLength) console.error(`rl4pix: warning: ${enc.untruncatedLength} tokens, truncated to ${tok.modelMaxLength}`);
      if (o.json) console.log(JSON.stringify({ input_ids: enc.inputIds, attention_mask: enc.attentionMask }));
      else console.log(`${tok.tokenize(text).join(" ")}\n${enc.inputIds.join(" ")}`);
    }));

  program
    .command("metrics")
    .description("pixel metrics of one pair (the generated image is resized to the target first)")
    .argument("<generated>", "generated image")
    .argument("<target>", "ground-truth image")
    .option("--json", "print JSON")
    .action(action(async (gen: string, tgt: string, o: { json?: boolean }) => {
      const m = pairMetrics(await readImage(gen), await readImage(tgt));
      if (o.json) console.log(JSON.stringify(m));
      else for (const [k, v] of Object.entries(m)) console.log(`${k.padEnd(5)} ${Number(v).toFixed(6)}`);
    }));

  program
    .command("report")
    .description("(re)write RUN_DIR/report.html from a training or evaluation run")
    .argument("<run-dir>", "run folder")
    .action(action(async (runDir: string) => {
      console.log(reportCommand(runDir));
    }));
  void join;
}
