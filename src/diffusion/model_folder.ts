// A diffusers InstructPix2Pix folder checked on the host before any GPU work: every config parses,
// the tokenizer reads, and every weight file's header matches the module tree key for key and shape
// for shape (the same strict check `loadIP2P` makes, without reading tensor data). Commands run this
// before starting the device, so a broken `--model` is a one-line error at once, not after the GPU
// came up. Also what the folder says about its native image size.
import { join } from "node:path";
import { loadPipelineConfig, type PipelineConfig, resolveWeightFiles } from "../io/diffusers.ts";
import { ClipTokenizer } from "../text/clip_tokenizer.ts";
import { UNet2DConditionModel } from "../nn/unet.ts";
import { AutoencoderKL } from "../nn/vae.ts";
import { CLIPTextModel } from "../nn/clip_text.ts";
import { matchWeights } from "../nn/load.ts";
import { variantIfPresent } from "./pipeline.ts";

export interface CheckedModel {
  config: PipelineConfig;
  /** The UNet's module tree (no weights loaded): which cross-attention layers it has. */
  unet: UNet2DConditionModel;
}

/** Check a pipeline folder as `loadIP2P(dir, { variant })` would load it; throws a UserError naming the file. */
export function checkModelFolder(dir: string, opts: { variant?: string } = {}): CheckedModel {
  const config = loadPipelineConfig(dir);
  const unet = new UNet2DConditionModel(config.unet);
  matchWeights(unet, resolveWeightFiles(join(dir, "unet"), { variant: opts.variant }));
  const vaeDir = join(dir, "vae");
  matchWeights(new AutoencoderKL(config.vae), resolveWeightFiles(vaeDir, { variant: variantIfPresent(vaeDir, opts.variant) }));
  const textDir = join(dir, "text_encoder");
  matchWeights(new CLIPTextModel(config.textEncoder), resolveWeightFiles(textDir, { variant: variantIfPresent(textDir, opts.variant) }), {
    ignore: CLIPTextModel.IGNORED_KEYS,
  });
  ClipTokenizer.fromDir(config.tokenizer.dir);
  return { config, unet };
}

/** The VAE's downsampling factor: 2^(number of VAE blocks - 1) (8 for SD-1.5). */
export function vaeFactor(config: PipelineConfig): number {
  return 2 ** (config.vae.blockOutChannels.length - 1);
}

/**
 * The image side the model was made for, as diffusers' pipelines default it: the UNet's
 * `sample_size` (latent side) x the VAE factor — 512 for SD-1.5 / InstructPix2Pix (64 x 8). Null when
 * the UNet config has no `sample_size`.
 */
export function nativeResolution(config: PipelineConfig): number | null {
  const s = config.unet.sampleSize;
  return s === null ? null : s * vaeFactor(config);
}
