// The training defaults that depend on the model (SPEC §5 names SD-1.5's layers; other UNets need a
// rule). Applied by the command line between the schema's defaults and the user's config file and
// --set overrides, so whatever the user gives wins and config.json records the values used.
//   resolution     the model's native image side: UNet sample_size x VAE factor (512 for SD-1.5)
//   reward.layers  "res:N" for the attn2 layers whose map is latent/4 per side — SD-1.5's
//                  down_blocks.2 and up_blocks.1 (16x16 at 512 px) — and on a UNet without such
//                  layers, those whose map is closest to latent/4 per side in powers of two; of two
//                  equally close, the finer map (a coarse map can shrink to a few pixels on a small
//                  model, too few to compare with a mask).
import { defaultLayerFactor } from "../diffusion/attention_store.ts";
import { type CheckedModel, nativeResolution } from "../diffusion/model_folder.ts";
import type { UNet2DConditionModel } from "../nn/unet.ts";

/** The default `reward.layers` of a UNet (see the file header; the rule is `defaultLayerFactor`'s). */
export function defaultRewardLayers(unet: UNet2DConditionModel): string {
  return `res:${defaultLayerFactor(unet)}`;
}

/** The model's defaults as `key=value` settings (resolution only when the UNet config gives a usable size). */
export function modelConfigDefaults(model: CheckedModel): string[] {
  const out = [`reward.layers=${defaultRewardLayers(model.unet)}`];
  const res = nativeResolution(model.config);
  if (res !== null && res % 8 === 0) out.push(`resolution=${res}`);
  return out;
}
