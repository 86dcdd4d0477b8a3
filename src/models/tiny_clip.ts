// A tiny CLIPModel with random weights in the Hugging Face folder layout (what `loadClip` reads), for
// tests and the demo: config.json (CLIPConfig with text_config / vision_config), model.safetensors,
// preprocessor_config.json (CLIPFeatureExtractor: shortest edge and crop = the vision image size,
// bicubic, OpenAI's mean/std) and a BPE tokenizer over the synthetic vocabulary (bpe_builder.ts).
//
// Weights are generated on the host from a seed (each parameter its own stream, keyed by a hash of
// the seed and the key), so the files are the same on every runtime: matrices and conv kernels
// ~ N(0, 1/fan_in), LayerNorm weights 1 + N(0, 0.02²), biases N(0, 0.02²), token and position tables
// N(0, 0.02²), the class token N(0, 1/hidden), logit_scale = logit_scale_init_value. Scores made
// with it are not meaningful; they exercise the code paths.
//
// `defaultTinyClipDir()` materialises the default tiny CLIP once into the cache folder (next to the
// default tiny InstructPix2Pix) and returns its path.
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readdirSync, rmSync, statSync } from "node:fs";
import { join, resolve, dirname } from "node:path";
import { UserError } from "../errors.ts";
import { discardFolder, publishCacheFolder, publishFolder, tempSibling, writeFileAtomic } from "../io/atomic.ts";
import { writeSafetensors, type TensorToWrite } from "../io/safetensors.ts";
import { hostRandn } from "../nn/load.ts";
import { CLIPModel, parseClipConfig } from "../nn/clip_model.ts";
import { BOS_TOKEN, EOS_TOKEN, sortedJson, writeBpeTokenizer } from "../text/bpe_builder.ts";
import { defaultCacheRoot } from "./tiny.ts";

/** Bumped whenever the generator would write different files for the same options. */
export const TINY_CLIP_GENERATOR_VERSION = 1;

export interface TinyClipOptions {
  seed?: number;
  /** Vision input size (square) and patch size; image_size / patch_size patches per side. */
  imageSize?: number;
  patchSize?: number;
  visionHidden?: number;
  visionLayers?: number;
  visionHeads?: number;
  textHidden?: number;
  textLayers?: number;
  textHeads?: number;
  projectionDim?: number;
  /** Words that become single tokens besides the synthetic vocabulary. */
  extraWords?: readonly string[];
  /** Replace an existing non-empty folder. */
  overwrite?: boolean;
}

const DEFAULTS: Required<Omit<TinyClipOptions, "extraWords" | "overwrite">> = {
  seed: 0,
  imageSize: 32,
  patchSize: 8,
  visionHidden: 32,
  visionLayers: 2,
  visionHeads: 4,
  textHidden: 32,
  textLayers: 2,
  textHeads: 4,
  projectionDim: 16,
};

const LOGIT_SCALE_INIT = 2.6592;
const OPENAI_MEAN = [0.48145466, 0.4578275, 0.40821073];
const OPENAI_STD = [0.26862954, 0.26130258, 0.27577711];

function paramSeed(seed: number, key: string): number {
  return createHash("sha256").update(`rl4pix-tiny-clip/${seed}/${key}`).digest().readUInt32LE(0);
}

/** The config.json object of a tiny CLIPModel. */
function configJson(o: Required<Omit<TinyClipOptions, "extraWords" | "overwrite">>, vocab: { size: number; bos: number; eos: number }): Record<string, unknown> {
  return {
    architectures: ["CLIPModel"],
    initializer_factor: 1.0,
    logit_scale_init_value: LOGIT_SCALE_INIT,
    model_type: "clip",
    projection_dim: o.projectionDim,
    torch_dtype: "float32",
    transformers_version: "4.30.2",
    text_config: {
      attention_dropout: 0.0,
      bos_token_id: vocab.bos,
      eos_token_id: vocab.eos,
      hidden_act: "quick_gelu",
      hidden_size: o.textHidden,
      intermediate_size: 2 * o.textHidden,
      layer_norm_eps: 1e-5,
      max_position_embeddings: 77,
      model_type: "clip_text_model",
      num_attention_heads: o.textHeads,
      num_hidden_layers: o.textLayers,
      pad_token_id: vocab.eos,
      projection_dim: o.projectionDim,
      vocab_size: vocab.size,
    },
    vision_config: {
      attention_dropout: 0.0,
      hidden_act: "quick_gelu",
      hidden_size: o.visionHidden,
      image_size: o.imageSize,
      intermediate_size: 2 * o.visionHidden,
      layer_norm_eps: 1e-5,
      model_type: "clip_vision_model",
      num_attention_heads: o.visionHeads,
      num_channels: 3,
      num_hidden_layers: o.visionLayers,
      patch_size: o.patchSize,
      projection_dim: o.projectionDim,
    },
  };
}

function preprocessorJson(size: number): Record<string, unknown> {
  return {
    crop_size: { height: size, width: size },
    do_center_crop: true,
    do_convert_rgb: true,
    do_normalize: true,
    do_rescale: true,
    do_resize: true,
    feature_extractor_type: "CLIPFeatureExtractor",
    image_mean: OPENAI_MEAN,
    image_std: OPENAI_STD,
    resample: 3,
    rescale_factor: 1 / 255,
    size: { shortest_edge: size },
  };
}

function resolveOptions(opts: TinyClipOptions): Required<Omit<TinyClipOptions, "extraWords" | "overwrite">> {
  const o = { ...DEFAULTS };
  for (const k of Object.keys(DEFAULTS) as (keyof typeof DEFAULTS)[]) {
    const v = opts[k];
    if (v === undefined) continue;
    if (!Number.isSafeInteger(v) || v < (k === "seed" ? 0 : 1)) throw new UserError(`tiny CLIP: ${k} must be a ${k === "seed" ? "non-negative" : "positive"} integer, got ${v}`);
    o[k] = v;
  }
  if (o.visionHidden % o.visionHeads !== 0) throw new UserError(`tiny CLIP: visionHeads ${o.visionHeads} does not divide visionHidden ${o.visionHidden}`);
  if (o.textHidden % o.textHeads !== 0) throw new UserError(`tiny CLIP: textHeads ${o.textHeads} does not divide textHidden ${o.textHidden}`);
  if (o.patchSize > o.imageSize) throw new UserError(`tiny CLIP: patchSize ${o.patchSize} exceeds imageSize ${o.imageSize}`);
  return o;
}

/** Write the folder's files into `dir` (existing, empty). */
function materialise(dir: string, opts: TinyClipOptions): void {
  const o = resolveOptions(opts);
  const bpe = writeBpeTokenizer(dir, { extraWords: opts.extraWords ?? [] });
  const vocab = { size: bpe.vocab.size, bos: bpe.vocab.get(BOS_TOKEN)!, eos: bpe.vocab.get(EOS_TOKEN)! };
  const cfgObj = configJson(o, vocab);
  writeFileAtomic(join(dir, "config.json"), sortedJson(cfgObj) + "\n");
  writeFileAtomic(join(dir, "preprocessor_config.json"), sortedJson(preprocessorJson(o.imageSize)) + "\n");
  const model = new CLIPModel(parseClipConfig(join(dir, "config.json"), cfgObj));
  const tensors = new Map<string, TensorToWrite>();
  for (const [key, p] of model.namedParameters()) {
    const n = p.shape.reduce((a, b) => a * b, 1);
    const data = hostRandn(n, paramSeed(o.seed, key));
    let scale: number;
    let base = 0;
    if (p.role === "embedding") scale = 0.02;
    else if (p.shape.length >= 2) scale = 1 / Math.sqrt(p.shape.slice(1).reduce((a, b) => a * b, 1));
    else if (key.endsWith("class_embedding")) scale = 1 / Math.sqrt(p.shape[0]);
    else if (key.endsWith(".weight")) {
      base = 1; // LayerNorm scales
      scale = 0.02;
    } else scale = 0.02;
    for (let i = 0; i < n; i++) data[i] = base + scale * data[i];
    tensors.set(key, { dtype: "F32", shape: p.shape, data });
  }
  tensors.set("logit_scale", { dtype: "F32", shape: [], data: Float32Array.of(LOGIT_SCALE_INIT) });
  writeSafetensors(join(dir, "model.safetensors"), tensors, { format: "pt" });
}

/** Build in a temporary sibling of `dir`; returns it. UserErrors name `dir`. */
function buildInTemp(dir: string, opts: TinyClipOptions): string {
  const tmp = tempSibling(dir);
  try {
    mkdirSync(tmp, { recursive: true });
  } catch (e) {
    throw new UserError(`${dir}: cannot create the folder: ${(e as Error).message}`);
  }
  try {
    materialise(tmp, opts);
  } catch (e) {
    rmSync(tmp, { recursive: true, force: true });
    if (e instanceof UserError) throw new UserError(e.message.split(tmp).join(dir));
    throw e;
  }
  return tmp;
}

/**
 * Write a tiny random CLIPModel folder to `dir` (created with its parents; an existing non-empty
 * folder is an error unless `overwrite`). Deterministic: the same options give the same files.
 */
export function writeTinyClip(dir: string, opts: TinyClipOptions = {}): string {
  resolveOptions(opts);
  const target = resolve(dir);
  if (existsSync(target)) {
    if (!statSync(target).isDirectory()) throw new UserError(`${dir}: exists and is not a folder`);
    if (readdirSync(target).length > 0 && !opts.overwrite) throw new UserError(`${dir}: folder exists and is not empty (choose a new folder)`);
  }
  mkdirSync(dirname(target), { recursive: true });
  const tmp = buildInTemp(target, opts);
  publishFolder(tmp, target, dir);
  return target;
}

const REQUIRED = ["config.json", "model.safetensors", "preprocessor_config.json", "vocab.json", "merges.txt"];

/**
 * The default tiny CLIP (the options' defaults), generated on first use into `cacheDir` (default: the
 * cache folder of the default tiny model) and reused afterwards; safe when processes race.
 */
export function defaultTinyClipDir(cacheDir = defaultCacheRoot()): string {
  const hash = createHash("sha256").update(sortedJson({ generator: TINY_CLIP_GENERATOR_VERSION, defaults: DEFAULTS })).digest("hex").slice(0, 16);
  const final = join(cacheDir, `tiny-clip-${hash}`);
  if (REQUIRED.every((f) => existsSync(join(final, f)))) return final;
  mkdirSync(cacheDir, { recursive: true });
  discardFolder(final);
  const tmp = buildInTemp(final, {});
  publishCacheFolder(tmp, final, () => REQUIRED.every((f) => existsSync(join(final, f))), "the tiny CLIP");
  return final;
}
