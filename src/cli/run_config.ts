// The configuration of a training run as `train` and `demo` build it: the schema's defaults, then the
// model's own defaults (rl/model_defaults.ts: native resolution, reward layers), then the config file,
// then --set. The model folder is checked on the host first and the reward layers are matched against
// its UNet, so a broken model or a layer spec the model lacks is a one-line error before anything is
// written or the GPU starts.
import { defaultModelDir } from "../models/default_model.ts";
import { type CheckedModel, checkModelFolder } from "../diffusion/model_folder.ts";
import { type Config, defaultConfig, loadConfig, loraTargetModules } from "../rl/config.ts";
import { checkLoraTargets } from "../nn/lora.ts";
import { modelConfigDefaults } from "../rl/model_defaults.ts";
import { rewardLayers } from "../rl/trainer.ts";

export interface RunConfig {
  cfg: Config;
  /** The model folder (config `model`, or the embedded default's cache folder). */
  modelDir: string;
  model: CheckedModel;
}

/** What `train --help` says about the defaults that depend on the model, and the main others. */
export function trainDefaultsHelp(): string {
  const d = defaultConfig();
  return `
Defaults that depend on the model (written into RUN_DIR/config.json; a config file or --set wins):
  resolution     the model's native size: UNet sample_size x VAE factor (512 for SD-1.5)
  reward.layers  res:N, the cross-attention (attn2) layers whose map is latent/4 per side
                 (SD-1.5: down_blocks.2 and up_blocks.1, 16x16 at 512 px); a UNet without them uses
                 the ones closest to latent/4 per side (the finer map of two equally close)
The others are the paper's (Table 4, configs/paper.json): sample.num_steps ${d.sample.num_steps}, sample.eta ${d.sample.eta},
text guidance sample.guidance_scale ${d.sample.guidance_scale}, sample.image_guidance_scale ${d.sample.image_guidance_scale}, num_epochs ${d.num_epochs}.
With the embedded model and no data, a 64-sample synthetic dataset is made in RUN_DIR/synth.`;
}

export async function loadRunConfig(file: string | undefined, overrides: readonly string[], flag: string): Promise<RunConfig> {
  const first = loadConfig(file, overrides, flag); // every key checked, and which model
  const modelDir = first.model || (await defaultModelDir());
  const model = checkModelFolder(modelDir);
  const cfg = loadConfig(file, overrides, flag, modelConfigDefaults(model));
  rewardLayers(model, cfg); // the spec selects layers of this UNet, of one map size
  checkLoraTargets(model.unet, loraTargetModules(cfg)); // each target names a module of this UNet
  return { cfg, modelDir, model };
}
