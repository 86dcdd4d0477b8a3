// Tiny InstructPix2Pix checkpoints with random weights, generated on the host (no GPU): the random
// tiny model of weights/tiny.json (tests, `rl4pix tiny`) and any other spec (pretraining's start).
//
// `writeTinyCheckpoint(dir, opts)` writes a complete diffusers pipeline folder:
//   model_index.json                    StableDiffusionInstructPix2PixPipeline
//   unet/config.json + diffusion_pytorch_model[.fp16].safetensors
//   vae/config.json + diffusion_pytorch_model.safetensors
//   text_encoder/config.json + model.safetensors
//   tokenizer/ vocab.json, merges.txt, special_tokens_map.json, tokenizer_config.json (bpe_builder.ts)
//   scheduler/scheduler_config.json     DDIM with the SD-1.x noise schedule
// The configs are parsed back with `loadPipelineConfig` and the module trees built from them, so the
// weight files hold exactly the keys and shapes the loaders expect.
//
// Weights: every parameter has its own Philox stream (src/tensor/philox.ts) keyed by a hash of
// (seed, component, key), so files are byte-identical for a seed on any runtime, and a parameter's
// values do not depend on the others. Matrices and conv kernels ~ N(0, 1/fan_in), norm weights
// 1 + noise, biases noise, embeddings N(0, std^2); the UNet's conv_out is scaled down so predicted
// noise stays small.
//
// `tinyModelDir()` materialises the random model once per spec into a cache folder (written to a
// temporary sibling and renamed into place, so racing processes are safe) and returns its path.
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readdirSync, rmSync, statSync } from "node:fs";
import { homedir, tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import process from "node:process";
import tinySpecJson from "../../weights/tiny.json" with { type: "json" };
import { UserError } from "../errors.ts";
import { discardFolder, publishCacheFolder, publishFolder, tempSibling, writeFileAtomic } from "../io/atomic.ts";
import { loadPipelineConfig, type PipelineConfig } from "../io/diffusers.ts";
import { writeSafetensors, type TensorToWrite } from "../io/safetensors.ts";
import { CLIPTextModel } from "../nn/clip_text.ts";
import type { Module } from "../nn/module.ts";
import { UNet2DConditionModel } from "../nn/unet.ts";
import { AutoencoderKL } from "../nn/vae.ts";
import { philox4x32, seedKey, wordsToNormals } from "../tensor/philox.ts";
import { BOS_TOKEN, EOS_TOKEN, sortedJson, tokenizerWords, writeBpeTokenizer } from "../text/bpe_builder.ts";

/**
 * Bumped whenever the generator would write different files for the same spec (it is part of the
 * cache folder's hash, so a new program never reuses an old default model).
 */
export const TINY_GENERATOR_VERSION = 1;

type Json = Record<string, unknown>;

export interface TinyInit {
  /** Standard deviation of the noise added to norm weights (which are otherwise 1). */
  norm_weight_noise: number;
  /** Standard deviation of biases. */
  bias_noise: number;
  /** Standard deviation of embedding tables (token and position embeddings). */
  embedding_std: number;
  /** Factor on the UNet's conv_out weight and bias. */
  unet_conv_out_scale: number;
}

/** The JSON spec of a tiny model (weights/tiny.json): seed, component config keys, init scales. */
export interface TinySpec {
  format: "rl4pix-tiny/1";
  description?: string;
  seed: number;
  tokenizer: { synthetic_vocabulary: boolean; extra_words: string[]; model_max_length: number };
  /** diffusers config.json keys (merged over the library's defaults). */
  unet: Json;
  vae: Json;
  /** transformers CLIPTextConfig keys; vocab_size and the token ids come from the tokenizer. */
  text_encoder: Json;
  scheduler: Json;
  init: TinyInit;
}

export interface TinyOptions {
  /** Overrides the spec's seed (a non-negative integer). */
  seed?: number;
  /** Extra weight variants; "fp16" writes unet/diffusion_pytorch_model.fp16.safetensors. */
  variants?: readonly string[];
  /** Config keys merged over the spec's, per component (diffusers/transformers names). */
  unet?: Json;
  vae?: Json;
  text_encoder?: Json;
  scheduler?: Json;
  /** Words that become single tokens in addition to the synthetic vocabulary. */
  extraWords?: readonly string[];
  /** The base spec (default: weights/tiny.json). */
  spec?: TinySpec;
  /** Replace an existing non-empty destination folder (otherwise that is an error). */
  overwrite?: boolean;
}

export interface TinyCheckpointInfo {
  dir: string;
  seed: number;
  /** Hash of everything that determines the files (spec, vocabulary words, generator version). */
  specHash: string;
  vocabSize: number;
  /** Parameter counts per component. */
  parameters: { unet: number; vae: number; text_encoder: number };
  variants: string[];
}

// ---------------------------------------------------------------------------------------------------
// Spec

const DIFFUSERS_VERSION = "0.17.1";
const TRANSFORMERS_VERSION = "4.30.2";

/** Every key diffusers 0.17 writes for UNet2DConditionModel, with its SD-1.x value. */
const UNET_TEMPLATE: Json = {
  _class_name: "UNet2DConditionModel",
  _diffusers_version: DIFFUSERS_VERSION,
  act_fn: "silu",
  addition_embed_type: null,
  addition_embed_type_num_heads: 64,
  attention_head_dim: 8,
  block_out_channels: [320, 640, 1280, 1280],
  center_input_sample: false,
  class_embed_type: null,
  class_embeddings_concat: false,
  conv_in_kernel: 3,
  conv_out_kernel: 3,
  cross_attention_dim: 768,
  cross_attention_norm: null,
  down_block_types: ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
  downsample_padding: 1,
  dual_cross_attention: false,
  encoder_hid_dim: null,
  encoder_hid_dim_type: null,
  flip_sin_to_cos: true,
  freq_shift: 0,
  in_channels: 8,
  layers_per_block: 2,
  mid_block_only_cross_attention: null,
  mid_block_scale_factor: 1,
  mid_block_type: "UNetMidBlock2DCrossAttn",
  norm_eps: 1e-5,
  norm_num_groups: 32,
  num_class_embeds: null,
  only_cross_attention: false,
  out_channels: 4,
  projection_class_embeddings_input_dim: null,
  resnet_out_scale_factor: 1.0,
  resnet_skip_time_act: false,
  resnet_time_scale_shift: "default",
  sample_size: 64,
  time_cond_proj_dim: null,
  time_embedding_act_fn: null,
  time_embedding_dim: null,
  time_embedding_type: "positional",
  timestep_post_act: null,
  up_block_types: ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
  upcast_attention: false,
  use_linear_projection: false,
};

const VAE_TEMPLATE: Json = {
  _class_name: "AutoencoderKL",
  _diffusers_version: DIFFUSERS_VERSION,
  act_fn: "silu",
  block_out_channels: [128, 256, 512, 512],
  down_block_types: ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
  in_channels: 3,
  latent_channels: 4,
  layers_per_block: 2,
  norm_num_groups: 32,
  out_channels: 3,
  sample_size: 512,
  scaling_factor: 0.18215,
  up_block_types: ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"],
};

const TEXT_TEMPLATE: Json = {
  architectures: ["CLIPTextModel"],
  attention_dropout: 0.0,
  hidden_act: "quick_gelu",
  hidden_size: 768,
  initializer_factor: 1.0,
  initializer_range: 0.02,
  intermediate_size: 3072,
  layer_norm_eps: 1e-5,
  max_position_embeddings: 77,
  model_type: "clip_text_model",
  num_attention_heads: 12,
  num_hidden_layers: 12,
  projection_dim: 768,
  torch_dtype: "float32",
  transformers_version: TRANSFORMERS_VERSION,
};

const SCHEDULER_TEMPLATE: Json = {
  _class_name: "DDIMScheduler",
  _diffusers_version: DIFFUSERS_VERSION,
  beta_end: 0.012,
  beta_schedule: "scaled_linear",
  beta_start: 0.00085,
  clip_sample: false,
  clip_sample_range: 1.0,
  dynamic_thresholding_ratio: 0.995,
  num_train_timesteps: 1000,
  prediction_type: "epsilon",
  rescale_betas_zero_snr: false,
  sample_max_value: 1.0,
  set_alpha_to_one: false,
  steps_offset: 1,
  thresholding: false,
  timestep_spacing: "leading",
  trained_betas: null,
};

const MODEL_INDEX: Json = {
  _class_name: "StableDiffusionInstructPix2PixPipeline",
  _diffusers_version: DIFFUSERS_VERSION,
  feature_extractor: [null, null],
  requires_safety_checker: false,
  safety_checker: [null, null],
  scheduler: ["diffusers", "DDIMScheduler"],
  text_encoder: ["transformers", "CLIPTextModel"],
  tokenizer: ["transformers", "CLIPTokenizer"],
  unet: ["diffusers", "UNet2DConditionModel"],
  vae: ["diffusers", "AutoencoderKL"],
};

const SUPPORTED_VARIANTS = ["fp16"] as const;

function isObject(v: unknown): v is Json {
  return v !== null && typeof v === "object" && !Array.isArray(v);
}

function checkSeed(seed: unknown, where: string): number {
  if (typeof seed !== "number" || !Number.isSafeInteger(seed) || seed < 0) {
    throw new UserError(`${where}: seed must be a non-negative integer, got ${JSON.stringify(seed)}`);
  }
  return seed;
}

/** Check a spec read from JSON (weights/tiny.json or a user's file) and return it typed. */
export function parseTinySpec(raw: unknown, source = "tiny spec"): TinySpec {
  if (!isObject(raw)) throw new UserError(`${source}: expected a JSON object`);
  if (raw.format !== "rl4pix-tiny/1") throw new UserError(`${source}: "format" must be "rl4pix-tiny/1", got ${JSON.stringify(raw.format)}`);
  const seed = checkSeed(raw.seed, source);
  for (const k of ["unet", "vae", "text_encoder", "scheduler"]) {
    if (raw[k] !== undefined && !isObject(raw[k])) throw new UserError(`${source}: "${k}" must be an object of config keys`);
  }
  const tok = raw.tokenizer ?? {};
  if (!isObject(tok)) throw new UserError(`${source}: "tokenizer" must be an object`);
  const extra = tok.extra_words ?? [];
  if (!Array.isArray(extra) || !extra.every((w) => typeof w === "string")) {
    throw new UserError(`${source}: "tokenizer.extra_words" must be a list of strings`);
  }
  const synth = tok.synthetic_vocabulary ?? true;
  if (typeof synth !== "boolean") throw new UserError(`${source}: "tokenizer.synthetic_vocabulary" must be true or false`);
  const mml = tok.model_max_length ?? 77;
  if (typeof mml !== "number" || !Number.isInteger(mml) || mml < 2) {
    throw new UserError(`${source}: "tokenizer.model_max_length" must be an integer >= 2`);
  }
  const initRaw = raw.init ?? {};
  if (!isObject(initRaw)) throw new UserError(`${source}: "init" must be an object`);
  const init: TinyInit = { norm_weight_noise: 0.02, bias_noise: 0.02, embedding_std: 0.02, unet_conv_out_scale: 0.1 };
  for (const [k, v] of Object.entries(initRaw)) {
    if (!Object.hasOwn(init, k)) throw new UserError(`${source}: unknown key "init.${k}" (known: ${Object.keys(init).join(", ")})`);
    if (typeof v !== "number" || !Number.isFinite(v) || v < 0) throw new UserError(`${source}: "init.${k}" must be a non-negative number`);
    init[k as keyof TinyInit] = v;
  }
  for (const k of ["vocab_size", "bos_token_id", "eos_token_id", "pad_token_id"]) {
    if (isObject(raw.text_encoder) && Object.hasOwn(raw.text_encoder, k)) {
      throw new UserError(`${source}: "text_encoder.${k}" cannot be set: it comes from the generated tokenizer`);
    }
  }
  return {
    format: "rl4pix-tiny/1",
    ...(typeof raw.description === "string" ? { description: raw.description } : {}),
    seed,
    tokenizer: { synthetic_vocabulary: synth, extra_words: [...extra] as string[], model_max_length: mml },
    unet: { ...((raw.unet as Json) ?? {}) },
    vae: { ...((raw.vae as Json) ?? {}) },
    text_encoder: { ...((raw.text_encoder as Json) ?? {}) },
    scheduler: { ...((raw.scheduler as Json) ?? {}) },
    init,
  };
}

/** The default model's spec (weights/tiny.json, embedded in the program). */
export const DEFAULT_TINY_SPEC: TinySpec = parseTinySpec(tinySpecJson, "weights/tiny.json");

/** The spec with the options' seed, config overrides and extra words applied. */
export function resolveTinySpec(opts: TinyOptions = {}): TinySpec {
  const base = opts.spec ?? DEFAULT_TINY_SPEC;
  const merged = {
    ...base,
    seed: opts.seed ?? base.seed,
    tokenizer: { ...base.tokenizer, extra_words: [...base.tokenizer.extra_words, ...(opts.extraWords ?? [])] },
    unet: { ...base.unet, ...(opts.unet ?? {}) },
    vae: { ...base.vae, ...(opts.vae ?? {}) },
    text_encoder: { ...base.text_encoder, ...(opts.text_encoder ?? {}) },
    scheduler: { ...base.scheduler, ...(opts.scheduler ?? {}) },
    init: { ...base.init },
  };
  delete (merged as { description?: string }).description;
  return parseTinySpec(merged, "tiny model options");
}

/** Hash of everything that determines a tiny checkpoint's files (hex sha256). */
export function tinySpecHash(spec: TinySpec): string {
  const words = tokenizerWords(spec.tokenizer.extra_words, spec.tokenizer.synthetic_vocabulary);
  const { description: _, ...content } = spec;
  return createHash("sha256").update(sortedJson({ generator: TINY_GENERATOR_VERSION, spec: content, words })).digest("hex");
}

// ---------------------------------------------------------------------------------------------------
// Weights

export type TinyComponent = "unet" | "vae" | "text_encoder";

/** The 64-bit Philox seed of one parameter. */
function parameterSeed(seed: number, component: string, key: string): bigint {
  const d = createHash("sha256").update(`rl4pix-tiny/${seed}/${component}/${key}`).digest();
  return new DataView(d.buffer, d.byteOffset, 8).getBigUint64(0, true);
}

/**
 * `n` standard normals of Philox stream `seed` (the values of `hostRandom("normal", n, seed)`,
 * computed per block of four without 64-bit counters).
 */
function philoxNormals(n: number, seed: bigint): Float32Array {
  if (n > 4 * 0xffffffff) throw new Error(`philoxNormals: ${n} values is too many for one stream`);
  const key = seedKey(seed);
  const out = new Float32Array(n);
  const ctr = [0, 0, 0, 0];
  for (let j = 0; 4 * j < n; j++) {
    ctr[0] = j;
    const w = philox4x32(ctr, key);
    const [a, b] = wordsToNormals(w[0], w[1]);
    const [c, d] = wordsToNormals(w[2], w[3]);
    const i = 4 * j;
    out[i] = a;
    if (i + 1 < n) out[i + 1] = b;
    if (i + 2 < n) out[i + 2] = c;
    if (i + 3 < n) out[i + 3] = d;
  }
  return out;
}

/**
 * Random initial values of every parameter of `module` (a tree built from the component's config), by
 * state-dict key, in `namedParameters()` order.
 */
export function tinyWeights(component: TinyComponent, module: Module, seed: number, init: TinyInit): Map<string, { shape: readonly number[]; data: Float32Array }> {
  const out = new Map<string, { shape: readonly number[]; data: Float32Array }>();
  for (const [key, p] of module.namedParameters()) {
    const n = p.shape.reduce((a, b) => a * b, 1);
    const data = philoxNormals(n, parameterSeed(seed, component, key));
    let scale: number;
    let base = 0;
    if (p.role === "embedding") {
      scale = init.embedding_std;
    } else if (p.shape.length >= 2) {
      const fanIn = p.shape.slice(1).reduce((a, b) => a * b, 1);
      scale = 1 / Math.sqrt(fanIn);
    } else if (key.endsWith(".weight")) {
      // 1-D weights are the GroupNorm / LayerNorm scales.
      base = 1;
      scale = init.norm_weight_noise;
    } else {
      scale = init.bias_noise;
    }
    if (component === "unet" && key.startsWith("conv_out.")) scale *= init.unet_conv_out_scale;
    for (let i = 0; i < n; i++) data[i] = base + scale * data[i];
    out.set(key, { shape: p.shape, data });
  }
  return out;
}

function tensorsOf(weights: Map<string, { shape: readonly number[]; data: Float32Array }>, dtype: "F32" | "F16"): Map<string, TensorToWrite> {
  return new Map([...weights].map(([k, w]) => [k, { dtype, shape: w.shape, data: w.data }]));
}

// ---------------------------------------------------------------------------------------------------
// Folder

function configText(obj: Json): string {
  return sortedJson(obj) + "\n";
}

function countParams(m: Module): number {
  return m.namedParameters().reduce((a, [, p]) => a + p.shape.reduce((x, y) => x * y, 1), 0);
}

/** Cross-component checks that the single-component config parsers cannot make. */
function checkPipeline(cfg: PipelineConfig): void {
  const { unet, vae, textEncoder } = cfg;
  if (unet.inChannels !== 2 * vae.latentChannels) {
    throw new UserError(`tiny model: unet in_channels (${unet.inChannels}) must be 2 x vae latent_channels (${vae.latentChannels}) for InstructPix2Pix`);
  }
  if (unet.outChannels !== vae.latentChannels) {
    throw new UserError(`tiny model: unet out_channels (${unet.outChannels}) must equal vae latent_channels (${vae.latentChannels})`);
  }
  unet.crossAttentionDim.forEach((d, i) => {
    if (d !== textEncoder.hiddenSize) {
      throw new UserError(`tiny model: unet cross_attention_dim (${d}, block ${i}) must equal text_encoder hidden_size (${textEncoder.hiddenSize})`);
    }
  });
}

/** Write the whole folder into `dir` (which exists and is empty). */
function materialise(dir: string, spec: TinySpec, variants: readonly string[]): Omit<TinyCheckpointInfo, "dir"> {
  for (const sub of ["unet", "vae", "text_encoder", "tokenizer", "scheduler"]) mkdirSync(join(dir, sub), { recursive: true });
  writeFileAtomic(join(dir, "model_index.json"), configText(MODEL_INDEX));
  const bpe = writeBpeTokenizer(join(dir, "tokenizer"), {
    extraWords: spec.tokenizer.extra_words,
    includeSynthetic: spec.tokenizer.synthetic_vocabulary,
    modelMaxLength: spec.tokenizer.model_max_length,
  });
  const vocabSize = bpe.vocab.size;
  const strip = (o: Json) => Object.fromEntries(Object.entries(o).filter(([k]) => k !== "_class_name" && k !== "_diffusers_version"));
  writeFileAtomic(join(dir, "unet", "config.json"), configText({ ...UNET_TEMPLATE, ...strip(spec.unet) }));
  writeFileAtomic(join(dir, "vae", "config.json"), configText({ ...VAE_TEMPLATE, ...strip(spec.vae) }));
  writeFileAtomic(join(dir, "text_encoder", "config.json"), configText({
    ...TEXT_TEMPLATE,
    ...spec.text_encoder,
    vocab_size: vocabSize,
    bos_token_id: bpe.vocab.get(BOS_TOKEN)!,
    eos_token_id: bpe.vocab.get(EOS_TOKEN)!,
    pad_token_id: bpe.vocab.get(EOS_TOKEN)!,
  }));
  const schedClass = spec.scheduler._class_name ?? "DDIMScheduler";
  writeFileAtomic(join(dir, "scheduler", "scheduler_config.json"), configText({ ...SCHEDULER_TEMPLATE, ...spec.scheduler, _diffusers_version: DIFFUSERS_VERSION }));
  if (schedClass !== "DDIMScheduler") {
    // model_index.json names the scheduler class too.
    writeFileAtomic(join(dir, "model_index.json"), configText({ ...MODEL_INDEX, scheduler: ["diffusers", schedClass] }));
  }

  const cfg = loadPipelineConfig(dir);
  checkPipeline(cfg);
  const unet = new UNet2DConditionModel(cfg.unet);
  const vae = new AutoencoderKL(cfg.vae);
  const text = new CLIPTextModel(cfg.textEncoder);
  const meta = { format: "pt" };

  const unetW = tinyWeights("unet", unet, spec.seed, spec.init);
  writeSafetensors(join(dir, "unet", "diffusion_pytorch_model.safetensors"), tensorsOf(unetW, "F32"), meta);
  if (variants.includes("fp16")) {
    writeSafetensors(join(dir, "unet", "diffusion_pytorch_model.fp16.safetensors"), tensorsOf(unetW, "F16"), meta);
  }
  writeSafetensors(join(dir, "vae", "diffusion_pytorch_model.safetensors"), tensorsOf(tinyWeights("vae", vae, spec.seed, spec.init), "F32"), meta);
  writeSafetensors(join(dir, "text_encoder", "model.safetensors"), tensorsOf(tinyWeights("text_encoder", text, spec.seed, spec.init), "F32"), meta);

  return {
    seed: spec.seed,
    specHash: tinySpecHash(spec),
    vocabSize,
    parameters: { unet: countParams(unet), vae: countParams(vae), text_encoder: countParams(text) },
    variants: [...variants],
  };
}

function isNonEmptyDir(path: string): boolean {
  return statSync(path).isDirectory() && readdirSync(path).length > 0;
}

/** Build the folder in a temporary sibling of `dir`; UserErrors name `dir`, not the temporary folder. */
function buildInTemp(dir: string, spec: TinySpec, variants: readonly string[]): { tmp: string; info: Omit<TinyCheckpointInfo, "dir"> } {
  const tmp = tempSibling(dir);
  try {
    mkdirSync(tmp);
  } catch (e) {
    throw new UserError(`${dir}: cannot create the model folder: ${(e as Error).message}`);
  }
  try {
    return { tmp, info: materialise(tmp, spec, variants) };
  } catch (e) {
    rmSync(tmp, { recursive: true, force: true });
    if (e instanceof UserError) throw new UserError(e.message.split(tmp).join(dir));
    throw e;
  }
}

function checkVariants(variants: readonly string[]): string[] {
  for (const v of variants) {
    if (!(SUPPORTED_VARIANTS as readonly string[]).includes(v)) {
      throw new UserError(`tiny model: unknown weight variant ${JSON.stringify(v)} (supported: ${SUPPORTED_VARIANTS.join(", ")})`);
    }
  }
  return [...new Set(variants)];
}

/**
 * Write a tiny InstructPix2Pix pipeline folder with random weights to `dir` (created, with its
 * parents; an existing non-empty folder is an error unless `overwrite`). Deterministic: the same
 * options give byte-identical files.
 */
export function writeTinyCheckpoint(dir: string, opts: TinyOptions = {}): TinyCheckpointInfo {
  if (opts.seed !== undefined) checkSeed(opts.seed, "tiny model");
  const spec = resolveTinySpec(opts);
  const variants = checkVariants(opts.variants ?? []);
  const target = resolve(dir);
  if (existsSync(target)) {
    if (!statSync(target).isDirectory()) throw new UserError(`${dir}: exists and is not a folder`);
    if (isNonEmptyDir(target) && !opts.overwrite) throw new UserError(`${dir}: folder exists and is not empty (choose a new folder)`);
  }
  try {
    mkdirSync(dirname(target), { recursive: true });
  } catch (e) {
    throw new UserError(`${dir}: cannot create its parent folder: ${(e as Error).message}`);
  }
  const { tmp, info } = buildInTemp(target, spec, variants);
  publishFolder(tmp, target, dir);
  return { dir: target, ...info };
}

// ---------------------------------------------------------------------------------------------------
// The default model

/** Where cached default models live: $RL4PIX_CACHE_DIR, $XDG_CACHE_HOME/rl4pix or ~/.cache/rl4pix. */
export function defaultCacheRoot(): string {
  const env = process.env;
  if (env.RL4PIX_CACHE_DIR) return env.RL4PIX_CACHE_DIR;
  if (env.XDG_CACHE_HOME) return join(env.XDG_CACHE_HOME, "rl4pix");
  let home = "";
  try {
    home = homedir();
  } catch {
    // no home folder
  }
  return home ? join(home, ".cache", "rl4pix") : join(tmpdir(), "rl4pix-cache");
}

/** The files a complete tiny folder has (a cached folder missing one is rebuilt). */
const REQUIRED_FILES = [
  "model_index.json",
  "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
  "vae/config.json", "vae/diffusion_pytorch_model.safetensors",
  "text_encoder/config.json", "text_encoder/model.safetensors",
  "tokenizer/vocab.json", "tokenizer/merges.txt",
  "scheduler/scheduler_config.json",
];

function isComplete(dir: string, variants: readonly string[]): boolean {
  const files = [...REQUIRED_FILES, ...(variants.includes("fp16") ? ["unet/diffusion_pytorch_model.fp16.safetensors"] : [])];
  return files.every((f) => existsSync(join(dir, f)));
}

/** Build `spec` into `root/tiny-<hash>` unless it is there already; safe when processes race. */
function cachedModel(root: string, spec: TinySpec, variants: readonly string[]): string {
  const hash = tinySpecHash(spec).slice(0, 16);
  const final = join(root, `tiny-${hash}${variants.length ? "-" + [...variants].sort().join("-") : ""}`);
  if (isComplete(final, variants)) return final;
  mkdirSync(root, { recursive: true });
  // Published folders appear whole (rename), so an incomplete one was damaged afterwards.
  discardFolder(final);
  const { tmp } = buildInTemp(final, spec, variants);
  // Another process may have published the same folder first: then theirs is used.
  publishCacheFolder(tmp, final, () => isComplete(final, variants), "the default model");
  return final;
}

/**
 * Run `build(root)` with the first usable cache root: `cacheDir` when given, else `defaultCacheRoot()`
 * falling back to the system temp folder when that is not writable.
 */
export function inCacheRoot(cacheDir: string | undefined, build: (root: string) => string): string {
  if (cacheDir) return build(cacheDir);
  const roots = [defaultCacheRoot(), join(tmpdir(), "rl4pix-cache")];
  let lastError: unknown = null;
  for (const root of roots) {
    try {
      return build(root);
    } catch (e) {
      const code = (e as { code?: string }).code;
      const unwritable = code === "EACCES" || code === "EPERM" || code === "EROFS" || code === "ENOTDIR" ||
        (e instanceof UserError && /permission denied|read-only|cannot create/.test(e.message));
      if (!unwritable) throw e;
      lastError = e;
    }
  }
  throw new UserError(`cannot write the default model to ${roots.join(" or ")}: ${(lastError as Error).message}`);
}

/**
 * The folder of the random tiny model (weights/tiny.json), generated on first use into the cache
 * folder and reused afterwards. For tests and `rl4pix tiny`; the commands' default model is the
 * trained one (src/models/default_model.ts).
 */
export async function tinyModelDir(opts: { cacheDir?: string; variants?: readonly string[] } = {}): Promise<string> {
  const variants = checkVariants(opts.variants ?? []);
  return inCacheRoot(opts.cacheDir, (root) => cachedModel(root, DEFAULT_TINY_SPEC, variants));
}
