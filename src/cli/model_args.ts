// Shared model flags: --model (default: the embedded tiny model), --variant, --lora. Checked on the
// host (configs, weight headers, tokenizer, LoRA file) before the GPU device starts.
import type { Command } from "commander";
import { initGpu } from "../gpu/device.ts";
import { defaultModelDir } from "../models/default_model.ts";
import { type IP2PModels, loadIP2P } from "../diffusion/pipeline.ts";
import { type CheckedModel, checkModelFolder } from "../diffusion/model_folder.ts";
import { attachLoraLayers, checkLoraLayers } from "../nn/lora.ts";
import { type LoraFile, readLoraFile } from "../io/lora_format.ts";
import { UserError } from "../errors.ts";

export interface ModelFlags {
  model?: string;
  variant?: string;
  lora?: string;
}

/** What the model flags name, checked: the folder, its configs and module trees, the LoRA file. */
export interface CheckedModelFlags {
  dir: string;
  model: CheckedModel;
  lora: LoraFile | null;
}

export function addModelFlags(cmd: Command): Command {
  return cmd
    .option("--model <dir>", "diffusers InstructPix2Pix folder (default: the embedded tiny model)")
    .option("--variant <name>", "weight variant, e.g. fp16 (f16 weights; the UNet, VAE and text encoder compute on f16 activations where the adapter has shader-f16)")
    .option("--lora <file>", "LoRA weights (peft/diffusers or old attn-procs safetensors) for the UNet");
}

/** The folder `--model` names, or the embedded default (materialised into the cache once). */
export async function modelDir(flags: ModelFlags): Promise<string> {
  return flags.model ?? (await defaultModelDir());
}

/** Check the model flags without a GPU; every problem is a UserError naming the file. */
export async function checkModelFlags(flags: ModelFlags): Promise<CheckedModelFlags> {
  if (flags.variant !== undefined && !/^[A-Za-z0-9_-]+$/.test(flags.variant)) throw new UserError(`--variant: '${flags.variant}' is not a variant name`);
  const dir = await modelDir(flags);
  const model = checkModelFolder(dir, { variant: flags.variant });
  const lora = flags.lora !== undefined ? readLoraFile(flags.lora) : null;
  if (lora) checkLoraLayers(model.unet, lora.layers, flags.lora!);
  return { dir, model, lora };
}

/** Check the flags (unless `checked` is given), then start the GPU and load the models. */
export async function loadModelsFromFlags(flags: ModelFlags, checked?: CheckedModelFlags): Promise<IP2PModels> {
  const c = checked ?? (await checkModelFlags(flags));
  await initGpu();
  const models = loadIP2P(c.dir, { variant: flags.variant });
  if (c.lora) attachLoraLayers(models.unet, c.lora.layers, flags.lora!);
  return models;
}
