// Shared model flags: --model (default: the embedded tiny model), --variant, --lora.
import type { Command } from "commander";
import { initGpu } from "../gpu/device.ts";
import { defaultModelDir } from "../models/tiny.ts";
import { type IP2PModels, loadIP2P } from "../diffusion/pipeline.ts";
import { loadLoraFile } from "../nn/lora.ts";
import { UserError } from "../errors.ts";

export interface ModelFlags {
  model?: string;
  variant?: string;
  lora?: string;
}

export function addModelFlags(cmd: Command): Command {
  return cmd
    .option("--model <dir>", "diffusers InstructPix2Pix folder (default: the embedded tiny model)")
    .option("--variant <name>", "weight variant, e.g. fp16 (kept f16 on the GPU where supported)")
    .option("--lora <file>", "LoRA weights (peft/diffusers or old attn-procs safetensors) for the UNet");
}

/** The folder `--model` names, or the embedded default (materialised into the cache once). */
export async function modelDir(flags: ModelFlags): Promise<string> {
  return flags.model ?? (await defaultModelDir());
}

export async function loadModelsFromFlags(flags: ModelFlags): Promise<IP2PModels> {
  if (flags.variant && !/^[A-Za-z0-9_-]+$/.test(flags.variant)) throw new UserError(`--variant: '${flags.variant}' is not a variant name`);
  const dir = await modelDir(flags);
  await initGpu();
  const models = loadIP2P(dir, { variant: flags.variant });
  if (flags.lora) loadLoraFile(models.unet, flags.lora);
  return models;
}
