// Typed configs of the components of a diffusers Stable-Diffusion / InstructPix2Pix checkpoint, read
// from their config.json with the defaults diffusers (UNet2DConditionModel, AutoencoderKL,
// DDIMScheduler) and transformers (CLIPTextConfig) use for absent keys. Options we do not implement
// are refused with a UserError naming the file and the key, instead of being silently ignored.
import { UserError } from "../errors.ts";
import { ConfigReader } from "./config_reader.ts";

// What the model code implements; widen these lists together with the code.
export const SUPPORTED = {
  unetDownBlocks: ["DownBlock2D", "CrossAttnDownBlock2D"],
  unetUpBlocks: ["UpBlock2D", "CrossAttnUpBlock2D"],
  unetMidBlocks: ["UNetMidBlock2DCrossAttn"],
  vaeDownBlocks: ["DownEncoderBlock2D"],
  vaeUpBlocks: ["UpDecoderBlock2D"],
  activations: ["silu"],
  textActivations: ["quick_gelu", "gelu"],
  betaSchedules: ["linear", "scaled_linear", "squaredcos_cap_v2"],
  predictionTypes: ["epsilon"],
  timestepSpacings: ["leading", "trailing", "linspace"],
} as const;

export type UNetDownBlockType = (typeof SUPPORTED.unetDownBlocks)[number];
export type UNetUpBlockType = (typeof SUPPORTED.unetUpBlocks)[number];
export type BetaSchedule = (typeof SUPPORTED.betaSchedules)[number];
export type PredictionType = (typeof SUPPORTED.predictionTypes)[number];
export type TimestepSpacing = (typeof SUPPORTED.timestepSpacings)[number];

/**
 * UNet2DConditionModel. Per-block lists are in down-block order (index 0 = highest resolution); the
 * mid block uses the last entry and up block i uses entry `blocks - 1 - i` (diffusers reverses them).
 */
export interface UNetConfig {
  file: string;
  sampleSize: number | null;
  inChannels: number;
  outChannels: number;
  centerInputSample: boolean;
  flipSinToCos: boolean;
  freqShift: number;
  downBlockTypes: UNetDownBlockType[];
  midBlockType: "UNetMidBlock2DCrossAttn";
  upBlockTypes: UNetUpBlockType[];
  blockOutChannels: number[];
  /** Resnets per down block; up block i has `layersPerBlock[blocks-1-i] + 1`. */
  layersPerBlock: number[];
  downsamplePadding: number;
  midBlockScaleFactor: number;
  actFn: "silu";
  normNumGroups: number;
  normEps: number;
  crossAttentionDim: number[];
  transformerLayersPerBlock: number[];
  /**
   * Attention heads per down block. diffusers' config key `attention_head_dim` holds the number of
   * HEADS in SD-1.x configs (a naming mistake diffusers keeps for compatibility); `num_attention_heads`,
   * when present, takes precedence. Head size = channels / heads.
   */
  attentionHeads: number[];
  useLinearProjection: boolean;
  /** Attention always runs in f32 here, so upcasting changes nothing; kept for completeness. */
  upcastAttention: boolean;
  onlyCrossAttention: boolean[];
  timeEmbeddingType: "positional";
  /** Width of the time embedding MLP (default 4 x blockOutChannels[0]). */
  timeEmbeddingDim: number;
  convInKernel: number;
  convOutKernel: number;
}

export interface VaeConfig {
  file: string;
  inChannels: number;
  outChannels: number;
  downBlockTypes: "DownEncoderBlock2D"[];
  upBlockTypes: "UpDecoderBlock2D"[];
  blockOutChannels: number[];
  layersPerBlock: number;
  actFn: "silu";
  latentChannels: number;
  normNumGroups: number;
  sampleSize: number;
  scalingFactor: number;
  /** SD3-style latent shift (null for SD-1.x/IP2P): latents = (mean - shift) * scale. */
  shiftFactor: number | null;
  forceUpcast: boolean;
  useQuantConv: boolean;
  usePostQuantConv: boolean;
  midBlockAddAttention: boolean;
}

export interface TextEncoderConfig {
  file: string;
  vocabSize: number;
  hiddenSize: number;
  intermediateSize: number;
  numHiddenLayers: number;
  numAttentionHeads: number;
  maxPositionEmbeddings: number;
  hiddenAct: "quick_gelu" | "gelu";
  layerNormEps: number;
  projectionDim: number;
  /** As stored in the config; SD-1.x configs say 0/2/1 while the tokenizer's real ids are 49406/49407. */
  bosTokenId: number;
  eosTokenId: number;
  padTokenId: number;
}

/**
 * Noise-schedule settings. Whatever scheduler class the folder names, sampling uses DDIM: like
 * `DDIMScheduler.from_config(pipe.scheduler.config)` (what DDPO does), keys DDIM knows are taken from
 * the file and the rest get DDIM's defaults.
 */
export interface SchedulerConfig {
  file: string;
  /** The class stored in the file (e.g. "PNDMScheduler"); informational. */
  className: string | null;
  numTrainTimesteps: number;
  betaStart: number;
  betaEnd: number;
  betaSchedule: BetaSchedule;
  trainedBetas: number[] | null;
  clipSample: boolean;
  clipSampleRange: number;
  setAlphaToOne: boolean;
  stepsOffset: number;
  predictionType: PredictionType;
  timestepSpacing: TimestepSpacing;
  rescaleBetasZeroSnr: boolean;
}

function checkDivisible(r: ConfigReader, key: string, channels: number, by: number, what: string): void {
  if (channels % by !== 0) r.fail(key, `= ${by} does not divide ${channels} channels (${what})`);
}

export function parseUNetConfig(r: ConfigReader): UNetConfig {
  const downBlockTypes = r.strList("down_block_types", ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"]);
  const upBlockTypes = r.strList("up_block_types", ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]);
  for (const b of downBlockTypes) {
    if (!(SUPPORTED.unetDownBlocks as readonly string[]).includes(b)) {
      r.fail("down_block_types", `contains ${JSON.stringify(b)}, which is not supported (supported: ${SUPPORTED.unetDownBlocks.join(", ")})`);
    }
  }
  for (const b of upBlockTypes) {
    if (!(SUPPORTED.unetUpBlocks as readonly string[]).includes(b)) {
      r.fail("up_block_types", `contains ${JSON.stringify(b)}, which is not supported (supported: ${SUPPORTED.unetUpBlocks.join(", ")})`);
    }
  }
  const blocks = downBlockTypes.length;
  if (blocks === 0) r.fail("down_block_types", "is empty");
  if (upBlockTypes.length !== blocks) r.fail("up_block_types", `has ${upBlockTypes.length} entries but down_block_types has ${blocks}`);
  const blockOutChannels = r.intList("block_out_channels", [320, 640, 1280, 1280]);
  if (blockOutChannels.length !== blocks) r.fail("block_out_channels", `has ${blockOutChannels.length} entries but down_block_types has ${blocks}`);
  // A cross-attention down block pairs with a cross-attention up block at the same resolution.
  for (let i = 0; i < blocks; i++) {
    const downAttn = downBlockTypes[i].startsWith("CrossAttn");
    const upAttn = upBlockTypes[blocks - 1 - i].startsWith("CrossAttn");
    if (downAttn !== upAttn) {
      r.fail("up_block_types", `entry ${blocks - 1 - i} (${upBlockTypes[blocks - 1 - i]}) does not mirror down block ${i} (${downBlockTypes[i]})`);
    }
  }

  // diffusers refuses a non-null `num_attention_heads` for this class; if a file has one anyway it can
  // only mean the head count, so it wins over `attention_head_dim`.
  const headsKey = r.has("num_attention_heads") && r.json.num_attention_heads !== null ? "num_attention_heads" : "attention_head_dim";
  const attentionHeads = r.perBlockInts(headsKey, blocks, 8);
  const normNumGroups = r.int("norm_num_groups", 32);
  for (let i = 0; i < blocks; i++) {
    checkDivisible(r, "norm_num_groups", blockOutChannels[i], normNumGroups, `block_out_channels[${i}]`);
    if (downBlockTypes[i].startsWith("CrossAttn")) {
      checkDivisible(r, headsKey, blockOutChannels[i], attentionHeads[i], `attention heads of block ${i}`);
    }
  }
  if (r.strOrNull("mid_block_type", "UNetMidBlock2DCrossAttn") === null) r.fail("mid_block_type", "is null (a UNet without a mid block is not supported)");
  const midBlockType = r.oneOf("mid_block_type", SUPPORTED.unetMidBlocks, "UNetMidBlock2DCrossAttn");
  checkDivisible(r, headsKey, blockOutChannels[blocks - 1], attentionHeads[blocks - 1], "attention heads of the mid block");

  // Options of UNet2DConditionModel that change the architecture in ways we do not implement.
  r.require("class_embed_type", null, "class embeddings are not supported");
  r.require("num_class_embeds", null, "class embeddings are not supported");
  r.require("addition_embed_type", null, "additional embeddings (SDXL-style) are not supported");
  r.require("encoder_hid_dim", null, "an encoder_hid_proj is not supported");
  r.require("encoder_hid_dim_type", null, "an encoder_hid_proj is not supported");
  r.require("time_cond_proj_dim", null, "timestep conditioning projections are not supported");
  r.require("time_embedding_act_fn", null, "an extra time-embedding activation is not supported");
  r.require("timestep_post_act", null, "a post-timestep activation is not supported");
  r.require("dual_cross_attention", false);
  r.require("resnet_time_scale_shift", "default", "scale-shift time conditioning is not supported");
  r.require("resnet_skip_time_act", false);
  r.require("resnet_out_scale_factor", 1);
  r.require("cross_attention_norm", null, "cross-attention norms are not supported");
  r.require("class_embeddings_concat", false);
  r.require("attention_type", "default", "gated (GLIGEN) attention is not supported");
  r.require("reverse_transformer_layers_per_block", null);
  r.require("mid_block_only_cross_attention", null);
  const onlyCrossAttention = r.perBlockBools("only_cross_attention", blocks, false);
  if (onlyCrossAttention.some((x) => x)) r.fail("only_cross_attention", "is true for some block: only-cross-attention blocks are not supported");

  const convInKernel = r.int("conv_in_kernel", 3);
  const convOutKernel = r.int("conv_out_kernel", 3);
  if (convInKernel % 2 === 0) r.fail("conv_in_kernel", `must be odd, got ${convInKernel}`);
  if (convOutKernel % 2 === 0) r.fail("conv_out_kernel", `must be odd, got ${convOutKernel}`);

  return {
    file: r.file,
    sampleSize: r.numOrNull("sample_size", null),
    inChannels: r.int("in_channels", 4),
    outChannels: r.int("out_channels", 4),
    centerInputSample: r.bool("center_input_sample", false),
    flipSinToCos: r.bool("flip_sin_to_cos", true),
    freqShift: r.num("freq_shift", 0),
    downBlockTypes: downBlockTypes as UNetDownBlockType[],
    midBlockType,
    upBlockTypes: upBlockTypes as UNetUpBlockType[],
    blockOutChannels,
    layersPerBlock: r.perBlockInts("layers_per_block", blocks, 2),
    downsamplePadding: r.int("downsample_padding", 1, 0),
    midBlockScaleFactor: r.num("mid_block_scale_factor", 1),
    actFn: r.oneOf("act_fn", SUPPORTED.activations, "silu"),
    normNumGroups,
    normEps: r.num("norm_eps", 1e-5),
    crossAttentionDim: r.perBlockInts("cross_attention_dim", blocks, 1280),
    transformerLayersPerBlock: r.perBlockInts("transformer_layers_per_block", blocks, 1),
    attentionHeads,
    useLinearProjection: r.bool("use_linear_projection", false),
    upcastAttention: r.bool("upcast_attention", false),
    onlyCrossAttention,
    timeEmbeddingType: r.oneOf("time_embedding_type", ["positional"] as const, "positional"),
    timeEmbeddingDim: r.has("time_embedding_dim") && r.json.time_embedding_dim !== null
      ? r.int("time_embedding_dim")
      : blockOutChannels[0] * 4,
    convInKernel,
    convOutKernel,
  };
}

export function parseVaeConfig(r: ConfigReader): VaeConfig {
  const downBlockTypes = r.strList("down_block_types", ["DownEncoderBlock2D"]);
  const upBlockTypes = r.strList("up_block_types", ["UpDecoderBlock2D"]);
  for (const b of downBlockTypes) if (b !== "DownEncoderBlock2D") r.fail("down_block_types", `contains ${JSON.stringify(b)}, which is not supported (supported: DownEncoderBlock2D)`);
  for (const b of upBlockTypes) if (b !== "UpDecoderBlock2D") r.fail("up_block_types", `contains ${JSON.stringify(b)}, which is not supported (supported: UpDecoderBlock2D)`);
  const blockOutChannels = r.intList("block_out_channels", [64]);
  if (downBlockTypes.length !== blockOutChannels.length) r.fail("down_block_types", `has ${downBlockTypes.length} entries but block_out_channels has ${blockOutChannels.length}`);
  if (upBlockTypes.length !== blockOutChannels.length) r.fail("up_block_types", `has ${upBlockTypes.length} entries but block_out_channels has ${blockOutChannels.length}`);
  const normNumGroups = r.int("norm_num_groups", 32);
  blockOutChannels.forEach((c, i) => checkDivisible(r, "norm_num_groups", c, normNumGroups, `block_out_channels[${i}]`));
  return {
    file: r.file,
    inChannels: r.int("in_channels", 3),
    outChannels: r.int("out_channels", 3),
    downBlockTypes: downBlockTypes as "DownEncoderBlock2D"[],
    upBlockTypes: upBlockTypes as "UpDecoderBlock2D"[],
    blockOutChannels,
    layersPerBlock: r.int("layers_per_block", 1),
    actFn: r.oneOf("act_fn", SUPPORTED.activations, "silu"),
    latentChannels: r.int("latent_channels", 4),
    normNumGroups,
    sampleSize: r.int("sample_size", 32),
    scalingFactor: r.num("scaling_factor", 0.18215),
    shiftFactor: r.numOrNull("shift_factor", null),
    forceUpcast: r.bool("force_upcast", true),
    useQuantConv: r.bool("use_quant_conv", true),
    usePostQuantConv: r.bool("use_post_quant_conv", true),
    midBlockAddAttention: r.bool("mid_block_add_attention", true),
  };
}

export function parseTextEncoderConfig(r: ConfigReader): TextEncoderConfig {
  if (r.has("text_config")) {
    throw new UserError(`${r.file}: this is a full CLIPModel config (it has "text_config"); expected a CLIPTextModel config`);
  }
  const modelType = r.str("model_type", "clip_text_model");
  if (modelType !== "clip_text_model") r.fail("model_type", `is ${JSON.stringify(modelType)}; expected "clip_text_model"`);
  const hiddenSize = r.int("hidden_size", 512);
  const numAttentionHeads = r.int("num_attention_heads", 8);
  checkDivisible(r, "num_attention_heads", hiddenSize, numAttentionHeads, "hidden_size");
  return {
    file: r.file,
    vocabSize: r.int("vocab_size", 49408),
    hiddenSize,
    intermediateSize: r.int("intermediate_size", 2048),
    numHiddenLayers: r.int("num_hidden_layers", 12),
    numAttentionHeads,
    maxPositionEmbeddings: r.int("max_position_embeddings", 77),
    hiddenAct: r.oneOf("hidden_act", SUPPORTED.textActivations, "quick_gelu"),
    layerNormEps: r.num("layer_norm_eps", 1e-5),
    projectionDim: r.int("projection_dim", 512),
    bosTokenId: r.int("bos_token_id", 49406, 0),
    eosTokenId: r.int("eos_token_id", 49407, 0),
    padTokenId: r.int("pad_token_id", 1, 0),
  };
}

export function parseSchedulerConfig(r: ConfigReader): SchedulerConfig {
  const numTrainTimesteps = r.int("num_train_timesteps", 1000);
  let trainedBetas: number[] | null = null;
  if (r.has("trained_betas") && r.json.trained_betas !== null) {
    const v = r.json.trained_betas;
    if (!Array.isArray(v) || !v.every((b) => typeof b === "number" && b > 0 && b < 1)) {
      r.fail("trained_betas", "must be null or a list of numbers in (0, 1)");
    }
    if (v.length !== numTrainTimesteps) r.fail("trained_betas", `has ${v.length} entries but num_train_timesteps is ${numTrainTimesteps}`);
    trainedBetas = [...v];
  }
  r.require("thresholding", false, "dynamic thresholding is not supported");
  const stepsOffset = r.int("steps_offset", 0, 0);
  if (stepsOffset >= numTrainTimesteps) r.fail("steps_offset", `= ${stepsOffset} must be below num_train_timesteps (${numTrainTimesteps})`);
  const betaStart = r.num("beta_start", 0.0001);
  const betaEnd = r.num("beta_end", 0.02);
  if (!(betaStart > 0 && betaEnd < 1 && betaStart <= betaEnd)) {
    r.fail("beta_start", `= ${betaStart} with beta_end = ${betaEnd}: need 0 < beta_start <= beta_end < 1`);
  }
  return {
    file: r.file,
    className: r.strOrNull("_class_name", null),
    numTrainTimesteps,
    betaStart,
    betaEnd,
    betaSchedule: r.oneOf("beta_schedule", SUPPORTED.betaSchedules, "linear"),
    trainedBetas,
    clipSample: r.bool("clip_sample", true),
    clipSampleRange: r.num("clip_sample_range", 1),
    setAlphaToOne: r.bool("set_alpha_to_one", true),
    stepsOffset,
    predictionType: r.oneOf("prediction_type", SUPPORTED.predictionTypes, "epsilon"),
    timestepSpacing: r.oneOf("timestep_spacing", SUPPORTED.timestepSpacings, "leading"),
    rescaleBetasZeroSnr: r.bool("rescale_betas_zero_snr", false),
  };
}
