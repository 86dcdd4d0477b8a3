// rl4pix as a library: the runtime, the models, editing, training and evaluation.
export { initGpu, gpu, destroyGpu, NoAdapterError, type GpuOptions } from "./src/gpu/device.ts";
export * from "./src/tensor/index.ts";
export * as ops from "./src/tensor/ops/index.ts";
export { UNet2DConditionModel } from "./src/nn/unet.ts";
export { AutoencoderKL } from "./src/nn/vae.ts";
export { CLIPTextModel } from "./src/nn/clip_text.ts";
export { initLora, loadLoraFile, exportLora, loraParameters } from "./src/nn/lora.ts";
export { loadWeights } from "./src/nn/load.ts";
export { ClipTokenizer } from "./src/text/clip_tokenizer.ts";
export { DDIMScheduler } from "./src/diffusion/ddim.ts";
export {
  loadIP2P,
  encodePrompts,
  encodeImages,
  decodeLatents,
  guidedConditioning,
  guidedNoise,
  sampleChain,
  type IP2PModels,
  type Trajectory,
} from "./src/diffusion/pipeline.ts";
export { editImage, writeTrajectory, type EditOptions, type EditResult } from "./src/diffusion/edit.ts";
export { checkModelFolder, nativeResolution, type CheckedModel } from "./src/diffusion/model_folder.ts";
export { scoreChain, stepLogProb } from "./src/diffusion/score.ts";
export { AttentionMapRecorder, crossAttentionLayers, selectCrossAttentionLayers } from "./src/diffusion/attention_store.ts";
export { loadConfig, defaultConfig, type Config } from "./src/rl/config.ts";
export { defaultRewardLayers, modelConfigDefaults } from "./src/rl/model_defaults.ts";
export { Trainer } from "./src/rl/trainer.ts";
export { instructReward } from "./src/rl/reward.ts";
export { PerPromptStatTracker } from "./src/rl/stat_tracker.ts";
export { pairMetrics, ssim, psnr, l1, l2 } from "./src/eval/metrics.ts";
export { writeReport } from "./src/eval/report.ts";
export { openDataset } from "./src/io/datasets/index.ts";
export { readImage, writePng } from "./src/io/image.ts";
export { openSafetensors, writeSafetensors } from "./src/io/safetensors.ts";
export { tinyModelDir, writeTinyCheckpoint } from "./src/models/tiny.ts";
export { defaultModelDir } from "./src/models/default_model.ts";
export { synthDataset } from "./src/data/synth_dataset.ts";
export { UserError } from "./src/errors.ts";
