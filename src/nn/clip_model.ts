// transformers' CLIPModel from a Hugging Face folder (e.g. openai/clip-vit-base-patch32, the model
// MagicBrush's evaluation uses), for CLIP-T / CLIP-I scores:
//
//   config.json               CLIPConfig: text_config, vision_config, projection_dim,
//                             logit_scale_init_value (old files: text_config_dict / vision_config_dict)
//   model.safetensors         text_model.*, vision_model.*, text_projection.weight,
//                             visual_projection.weight, logit_scale (or shards with an index)
//   preprocessor_config.json  CLIPImageProcessor / CLIPFeatureExtractor settings
//   vocab.json, merges.txt    the BPE tokenizer (+ special_tokens_map.json, tokenizer_config.json)
//
// image_embeds = visual_projection(post_layernorm(class token)) and
// text_embeds = text_projection(final_layer_norm(hidden state at the end-of-text token)), as
// CLIPModel.get_image_features / get_text_features. The end-of-text position is the first position of
// the tokenizer's eos id: transformers 4.30 takes argmax(input_ids), which is the same position with
// CLIP's real vocabulary (eos 49407 is the largest id) and the only right one with small vocabularies.
//
// Preprocessing (`preprocessImage`), as CLIPImageProcessor with PIL images: convert to 8-bit RGB,
// resize so the shorter side is `size` (the longer side int(size * long / short)) with PIL's BICUBIC
// filter, center crop to crop_size (top = (h - crop) // 2, zero padding when smaller), rescale by
// 1/255, normalise with image_mean / image_std. The resize reproduces PIL's 8-bit resampling: the
// same filter (a = -0.5, support widened by the shrink factor), coefficients in 22-bit fixed point,
// a horizontal pass rounded to 8 bits and then a vertical pass, each only when that side changes
// (equal to Pillow 9.4's output byte for byte in tests/clip.test.ts). MagicBrush's script uses the
// `clip` package's torchvision transform instead, which crops at round((h - crop) / 2): for
// non-square images whose resized long side minus the crop is odd, its crop sits one pixel
// further; square images (MagicBrush's are 500x500) are processed identically.
import { existsSync, statSync } from "node:fs";
import { join } from "node:path";
import { Tensor } from "../tensor/tensor.ts";
import * as ops from "../tensor/ops/index.ts";
import { noGrad } from "../tensor/autograd.ts";
import { scope } from "../tensor/scope.ts";
import { UserError } from "../errors.ts";
import { ConfigReader, readJsonFile } from "../io/config_reader.ts";
import { parseTextEncoderConfig, type TextEncoderConfig } from "../io/diffusers_config.ts";
import { resolveWeightFiles } from "../io/diffusers.ts";
import { openSafetensors } from "../io/safetensors.ts";
import { toUint8, type PlanarImage } from "../io/image.ts";
import { ClipTokenizer } from "../text/clip_tokenizer.ts";
import { Module } from "./module.ts";
import { Linear } from "./layers.ts";
import { CLIPTextModel } from "./clip_text.ts";
import { CLIPVisionModel, parseVisionConfig, type CLIPVisionConfig } from "./clip_vision.ts";
import { loadWeights } from "./load.ts";

export interface CLIPModelConfig {
  file: string;
  text: TextEncoderConfig;
  vision: CLIPVisionConfig;
  projectionDim: number;
  logitScaleInit: number;
}

export interface ClipProcessorConfig {
  file: string;
  doResize: boolean;
  /** Target of the shorter side. */
  shortestEdge: number;
  doCenterCrop: boolean;
  cropHeight: number;
  cropWidth: number;
  doRescale: boolean;
  rescaleFactor: number;
  doNormalize: boolean;
  imageMean: [number, number, number];
  imageStd: [number, number, number];
}

type Json = Record<string, unknown>;

function isObject(v: unknown): v is Json {
  return v !== null && typeof v === "object" && !Array.isArray(v);
}

const EXPECTED = "expected a transformers CLIPModel folder such as openai/clip-vit-base-patch32";

/** Read a CLIPModel config.json; anything that is not a CLIPModel (no vision_config, …) is a UserError naming the file. */
export function parseClipConfig(file: string, raw: unknown): CLIPModelConfig {
  const r = new ConfigReader(file, raw);
  const modelType = r.strOrNull("model_type", null);
  if (modelType !== null && modelType !== "clip") {
    r.fail("model_type", `is ${JSON.stringify(modelType)}: not a CLIPModel config (${EXPECTED})`);
  }
  const arch = r.json.architectures;
  if (Array.isArray(arch) && arch.length > 0 && !arch.includes("CLIPModel")) {
    r.fail("architectures", `is ${JSON.stringify(arch)}: not a CLIPModel (${EXPECTED})`);
  }
  const sub = (key: string): Json | null => {
    const main = r.json[key];
    const legacy = r.json[`${key}_dict`];
    if (main !== undefined && main !== null && !isObject(main)) r.fail(key, "must be an object");
    if (legacy !== undefined && legacy !== null && !isObject(legacy)) r.fail(`${key}_dict`, "must be an object");
    if (!isObject(main) && !isObject(legacy)) return null;
    // transformers lets the old *_dict keys override the new ones.
    return { ...(isObject(main) ? main : {}), ...(isObject(legacy) ? legacy : {}) };
  };
  const vision = sub("vision_config");
  if (vision === null) throw new UserError(`${file}: not a CLIPModel config: no "vision_config" (${EXPECTED})`);
  const text = sub("text_config") ?? {};
  return {
    file,
    text: parseTextEncoderConfig(new ConfigReader(`${file} (text_config)`, text)),
    vision: parseVisionConfig(new ConfigReader(`${file} (vision_config)`, vision)),
    projectionDim: r.int("projection_dim", 512),
    logitScaleInit: r.num("logit_scale_init_value", 2.6592),
  };
}

function sizeField(r: ConfigReader, key: string, def: number | null): { h: number; w: number } | { shortest: number } | null {
  if (!r.has(key) || r.json[key] === null) return def === null ? null : { h: def, w: def };
  const v = r.json[key];
  if (Number.isInteger(v) && (v as number) > 0) return { h: v as number, w: v as number };
  if (isObject(v)) {
    if (Number.isInteger(v.shortest_edge) && (v.shortest_edge as number) > 0) return { shortest: v.shortest_edge as number };
    if (Number.isInteger(v.height) && Number.isInteger(v.width) && (v.height as number) > 0 && (v.width as number) > 0) {
      return { h: v.height as number, w: v.width as number };
    }
  }
  return r.fail(key, `must be a positive integer, {"shortest_edge": n} or {"height": h, "width": w}, got ${JSON.stringify(v)}`);
}

function triple(r: ConfigReader, key: string, def: number[]): [number, number, number] {
  const v = r.has(key) && r.json[key] !== null ? r.json[key] : def;
  if (typeof v === "number" && Number.isFinite(v)) return [v, v, v];
  if (!Array.isArray(v) || v.length !== 3 || !v.every((x) => typeof x === "number" && Number.isFinite(x))) {
    r.fail(key, `must be a list of 3 numbers, got ${JSON.stringify(v)}`);
  }
  return [v[0], v[1], v[2]];
}

const OPENAI_CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073];
const OPENAI_CLIP_STD = [0.26862954, 0.26130258, 0.27577711];

/** Read preprocessor_config.json (CLIPImageProcessor's defaults for absent keys). */
export function parseProcessorConfig(file: string, raw: unknown): ClipProcessorConfig {
  const r = new ConfigReader(file, raw);
  const cls = r.strOrNull("image_processor_type", null) ?? r.strOrNull("feature_extractor_type", null);
  if (cls !== null && !["CLIPImageProcessor", "CLIPFeatureExtractor"].includes(cls)) {
    r.fail(r.has("image_processor_type") ? "image_processor_type" : "feature_extractor_type", `is ${JSON.stringify(cls)}; expected CLIPImageProcessor or CLIPFeatureExtractor`);
  }
  const resample = r.int("resample", 3, 0);
  if (resample !== 3) r.fail("resample", `is ${resample}: only 3 (PIL bicubic, CLIP's filter) is supported`);
  const size = sizeField(r, "size", null) ?? { shortest: 224 };
  if (!("shortest" in size)) {
    if (size.h !== size.w) r.fail("size", `gives ${size.w}x${size.h}: only a shortest-edge size is supported (as CLIPImageProcessor)`);
  }
  const shortestEdge = "shortest" in size ? size.shortest : size.h;
  const crop = sizeField(r, "crop_size", 224)!;
  if ("shortest" in crop) r.fail("crop_size", "must be a size, not a shortest edge");
  const c = crop as { h: number; w: number };
  const doRgb = r.bool("do_convert_rgb", true);
  if (!doRgb) r.fail("do_convert_rgb", "is false: images are always converted to RGB here");
  return {
    file,
    doResize: r.bool("do_resize", true),
    shortestEdge,
    doCenterCrop: r.bool("do_center_crop", true),
    cropHeight: c.h,
    cropWidth: c.w,
    doRescale: r.bool("do_rescale", true),
    rescaleFactor: r.num("rescale_factor", 1 / 255),
    doNormalize: r.bool("do_normalize", true),
    imageMean: triple(r, "image_mean", OPENAI_CLIP_MEAN),
    imageStd: triple(r, "image_std", OPENAI_CLIP_STD),
  };
}

// ---------------------------------------------------------------------------------------------------
// PIL's 8-bit bicubic resampling

const PRECISION_BITS = 22; // PIL: 32 - 8 - 2
const ONE = 2 ** PRECISION_BITS;

function bicubic(x: number): number {
  const a = -0.5;
  x = Math.abs(x);
  if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
  if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
  return 0;
}

interface FixedTaps {
  start: Int32Array;
  count: Int32Array;
  /** Fixed-point weights, `max` per output position. */
  k: Float64Array;
  max: number;
}

/** Per output position: first source index, number of taps and their 22-bit fixed-point weights. */
function bicubicTaps(inSize: number, outSize: number): FixedTaps {
  const scale = inSize / outSize;
  const filterScale = Math.max(scale, 1);
  const support = 2 * filterScale;
  const max = Math.ceil(support) * 2 + 1;
  const start = new Int32Array(outSize);
  const count = new Int32Array(outSize);
  const k = new Float64Array(outSize * max);
  const w = new Float64Array(max);
  for (let o = 0; o < outSize; o++) {
    const centre = (o + 0.5) * scale;
    const lo = Math.max(0, Math.trunc(centre - support + 0.5));
    const hi = Math.min(inSize, Math.trunc(centre + support + 0.5));
    const n = Math.min(hi - lo, max);
    let sum = 0;
    for (let x = 0; x < n; x++) {
      w[x] = bicubic((x + lo - centre + 0.5) / filterScale);
      sum += w[x];
    }
    for (let x = 0; x < n; x++) {
      const v = sum !== 0 ? w[x] / sum : w[x];
      k[o * max + x] = v < 0 ? Math.trunc(v * ONE - 0.5) : Math.trunc(v * ONE + 0.5);
    }
    start[o] = lo;
    count[o] = n;
  }
  return { start, count, k, max };
}

function clip8(acc: number): number {
  const v = Math.floor(acc / ONE);
  return v <= 0 ? 0 : v >= 255 ? 255 : v;
}

/**
 * Resize 8-bit planes ([planes, h, w]) to outW x outH as PIL's `Image.resize(…, BICUBIC)` does for
 * 8-bit images: horizontal pass (rounded to 8 bits) when the width changes, then vertical.
 */
export function resizeBicubicU8(src: Uint8Array, planes: number, w: number, h: number, outW: number, outH: number): Uint8Array {
  let cur = src;
  let cw = w;
  if (outW !== w) {
    const t = bicubicTaps(w, outW);
    const next = new Uint8Array(planes * h * outW);
    for (let p = 0; p < planes * h; p++) {
      const row = p * w;
      for (let o = 0; o < outW; o++) {
        let acc = ONE / 2;
        const s = t.start[o], base = o * t.max;
        for (let x = 0; x < t.count[o]; x++) acc += cur[row + s + x] * t.k[base + x];
        next[p * outW + o] = clip8(acc);
      }
    }
    cur = next;
    cw = outW;
  }
  if (outH !== h) {
    const t = bicubicTaps(h, outH);
    const next = new Uint8Array(planes * outH * cw);
    for (let p = 0; p < planes; p++) {
      const plane = p * h * cw;
      for (let o = 0; o < outH; o++) {
        const s = t.start[o], base = o * t.max;
        for (let x = 0; x < cw; x++) {
          let acc = ONE / 2;
          for (let y = 0; y < t.count[o]; y++) acc += cur[plane + (s + y) * cw + x] * t.k[base + y];
          next[(p * outH + o) * cw + x] = clip8(acc);
        }
      }
    }
    cur = next;
  }
  return cur === src ? src.slice() : cur;
}

/** transformers' shortest-edge output size: the short side becomes `size`, the long side int(size * long / short). */
export function shortestEdgeSize(width: number, height: number, size: number): [number, number] {
  const short = Math.min(width, height), long = Math.max(width, height);
  if (short === size) return [width, height];
  const newLong = Math.trunc((size * long) / short);
  return width <= height ? [size, newLong] : [newLong, size];
}

/** An RGB image ([3, h, w] in [0, 1]) -> pixel values [3, cropH, cropW] for the vision tower. */
export function preprocessImage(img: PlanarImage, p: ClipProcessorConfig): Float32Array {
  const { width, height } = img;
  if (img.channels < 3 || img.data.length < 3 * width * height) throw new Error(`preprocessImage: expects an RGB image, got ${img.channels} channels`);
  // 8-bit RGB, as the PIL image a processor is given (round half to even, like our PNG writer).
  let u8 = toUint8(img.data.subarray(0, 3 * width * height));
  let w = width, h = height;
  if (p.doResize) {
    const [nw, nh] = shortestEdgeSize(w, h, p.shortestEdge);
    u8 = resizeBicubicU8(u8, 3, w, h, nw, nh);
    w = nw;
    h = nh;
  }
  let outW = w, outH = h, top = 0, left = 0;
  if (p.doCenterCrop) {
    outW = p.cropWidth;
    outH = p.cropHeight;
    // transformers crops at ((h - crop) // 2, (w - crop) // 2); a smaller image is centred on zeros
    // (the padding's offset rounds up).
    top = h >= outH ? Math.floor((h - outH) / 2) : -Math.ceil((outH - h) / 2);
    left = w >= outW ? Math.floor((w - outW) / 2) : -Math.ceil((outW - w) / 2);
  }
  const out = new Float32Array(3 * outW * outH);
  for (let c = 0; c < 3; c++) {
    const mean = p.doNormalize ? p.imageMean[c] : 0;
    const std = p.doNormalize ? p.imageStd[c] : 1;
    const scale = p.doRescale ? p.rescaleFactor : 1;
    for (let y = 0; y < outH; y++) {
      const sy = y + top;
      for (let x = 0; x < outW; x++) {
        const sx = x + left;
        const v = sy >= 0 && sy < h && sx >= 0 && sx < w ? u8[(c * h + sy) * w + sx] : 0;
        out[(c * outH + y) * outW + x] = (v * scale - mean) / std;
      }
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------
// The model

export class CLIPModel extends Module {
  readonly text: CLIPTextModel;
  readonly vision: CLIPVisionModel;
  readonly visual_projection: Linear;
  readonly text_projection: Linear;
  /** log of the logit scale (from the checkpoint's `logit_scale`, else the config's init value). */
  logitScale: number;
  static readonly IGNORED_KEYS = [...CLIPTextModel.IGNORED_KEYS, ...CLIPVisionModel.IGNORED_KEYS, "logit_scale"];

  constructor(readonly config: CLIPModelConfig) {
    super();
    this.text = new CLIPTextModel(config.text);
    this.vision = new CLIPVisionModel(config.vision);
    // The towers' trees sit directly under this module, so keys are `text_model.…` / `vision_model.…`.
    this.child("text_model", this.text.text_model);
    this.child("vision_model", this.vision.vision_model);
    this.visual_projection = this.child("visual_projection", new Linear(config.vision.hiddenSize, config.projectionDim, false));
    this.text_projection = this.child("text_projection", new Linear(config.text.hiddenSize, config.projectionDim, false));
    this.logitScale = config.logitScaleInit;
  }

  /** pixels [B, 3, S, S] (preprocessed) -> image_embeds [B, P] (not normalised). */
  imageFeatures(pixels: Tensor): Tensor {
    return this.visual_projection.forward(this.vision.forward(pixels).pooled);
  }

  /**
   * ids [B, L] (row-major) and, per row, the end-of-text position -> text_embeds [B, P] (not normalised).
   */
  textFeatures(ids: Int32Array, batch: number, eosPositions: readonly number[]): Tensor {
    const L = ids.length / batch;
    if (!Number.isInteger(L) || eosPositions.length !== batch) throw new Error(`textFeatures: ${ids.length} ids for ${batch} rows and ${eosPositions.length} positions`);
    const h = this.text.forward(ids, batch).lastHiddenState; // [B, L, D]
    const D = h.shape[2];
    const rows = Int32Array.from(eosPositions, (p, b) => b * L + p);
    const pooled = ops.embedding(ops.reshape(h, [batch * L, D]), Tensor.from(rows, [batch], "i32", "eos_rows")); // [B, D]
    return this.text_projection.forward(pooled);
  }
}

/** A loaded CLIP folder: model, tokenizer and image processor settings. */
export interface ClipBundle {
  dir: string;
  model: CLIPModel;
  tokenizer: ClipTokenizer;
  processor: ClipProcessorConfig;
  /** Token sequence length used for text (tokenizer max length, at most the position table). */
  maxLength: number;
}

function isDir(p: string): boolean {
  try {
    return statSync(p).isDirectory();
  } catch {
    return false;
  }
}

/** Read and check a CLIP folder's configs without loading weights. */
export function loadClipConfigs(dir: string): { config: CLIPModelConfig; processor: ClipProcessorConfig } {
  if (!isDir(dir)) throw new UserError(`${dir}: CLIP folder not found`);
  if (existsSync(join(dir, "model_index.json"))) {
    throw new UserError(`${join(dir, "model_index.json")}: this is a diffusers pipeline folder, not a CLIPModel folder (${EXPECTED})`);
  }
  const configPath = join(dir, "config.json");
  if (!existsSync(configPath)) throw new UserError(`${configPath}: file not found (${EXPECTED})`);
  const config = parseClipConfig(configPath, readJsonFile(configPath));
  const procPath = join(dir, "preprocessor_config.json");
  if (!existsSync(procPath)) throw new UserError(`${procPath}: file not found (a CLIPModel folder has the image processor's settings there)`);
  const processor = parseProcessorConfig(procPath, readJsonFile(procPath));
  const v = config.vision;
  if (processor.doCenterCrop ? processor.cropHeight !== v.imageSize || processor.cropWidth !== v.imageSize : true) {
    const got = processor.doCenterCrop ? `${processor.cropWidth}x${processor.cropHeight}` : "no center crop";
    throw new UserError(`${procPath}: the processor gives ${got} but the vision model takes ${v.imageSize}x${v.imageSize} (${configPath} vision_config.image_size)`);
  }
  return { config, processor };
}

/** Load a CLIPModel folder (strict weights; the GPU must be initialised). */
export function loadClip(dir: string): ClipBundle {
  const { config, processor } = loadClipConfigs(dir);
  for (const f of ["vocab.json", "merges.txt"]) {
    if (!existsSync(join(dir, f))) throw new UserError(`${join(dir, f)}: file not found (the CLIP tokenizer's files belong in the CLIP folder)`);
  }
  const tokenizer = ClipTokenizer.fromDir(dir);
  if (tokenizer.vocabSize > config.text.vocabSize) {
    throw new UserError(`${join(dir, "vocab.json")}: ${tokenizer.vocabSize} tokens but ${config.file} text_config.vocab_size is ${config.text.vocabSize}`);
  }
  const files = resolveWeightFiles(dir);
  const model = new CLIPModel(config);
  loadWeights(model, files, { ignore: CLIPModel.IGNORED_KEYS });
  for (const f of files) {
    const st = openSafetensors(f);
    if (st.has("logit_scale")) model.logitScale = st.toF32("logit_scale")[0];
  }
  const maxLength = Math.min(tokenizer.modelMaxLength, config.text.maxPositionEmbeddings);
  return { dir, model, tokenizer, processor, maxLength };
}

/** Image embeddings (not normalised) of preprocessed images, in batches; host arrays of length P. */
export async function clipImageEmbeddings(clip: ClipBundle, images: readonly PlanarImage[], batchSize = 8): Promise<Float32Array[]> {
  const out: Float32Array[] = [];
  const S = clip.model.config.vision.imageSize;
  const per = 3 * S * S;
  for (let i = 0; i < images.length; i += batchSize) {
    const chunk = images.slice(i, i + batchSize);
    const pixels = new Float32Array(chunk.length * per);
    chunk.forEach((img, j) => pixels.set(preprocessImage(img, clip.processor), j * per));
    const emb = noGrad(() => scope(() => clip.model.imageFeatures(Tensor.from(pixels, [chunk.length, 3, S, S], "f32", "pixel_values")).keep()));
    const host = await emb.readF32();
    emb.dispose();
    const P = host.length / chunk.length;
    for (let j = 0; j < chunk.length; j++) out.push(host.slice(j * P, (j + 1) * P));
  }
  return out;
}

export interface TextEmbeddings {
  embeds: Float32Array[];
  /** Texts longer than the model's context, cut (bos + first tokens + eos). */
  truncated: boolean[];
}

/** Text embeddings (not normalised), in batches padded to the longest text of the batch. */
export async function clipTextEmbeddings(clip: ClipBundle, texts: readonly string[], batchSize = 16): Promise<TextEmbeddings> {
  const embeds: Float32Array[] = [];
  const truncated: boolean[] = [];
  const tok = clip.tokenizer;
  for (let i = 0; i < texts.length; i += batchSize) {
    const chunk = texts.slice(i, i + batchSize);
    const encoded = chunk.map((t) => tok.encode(t, clip.maxLength));
    // The encoder is causal: tokens after the end-of-text token do not change its state, so each batch
    // is cut to its longest text.
    const eos = encoded.map((e) => e.inputIds.indexOf(tok.eosId, 1));
    const L = Math.max(...eos) + 1;
    const ids = new Int32Array(chunk.length * L);
    encoded.forEach((e, j) => ids.set(e.inputIds.slice(0, L), j * L));
    const emb = noGrad(() => scope(() => clip.model.textFeatures(ids, chunk.length, eos).keep()));
    const host = await emb.readF32();
    emb.dispose();
    const P = host.length / chunk.length;
    for (let j = 0; j < chunk.length; j++) embeds.push(host.slice(j * P, (j + 1) * P));
    for (const e of encoded) truncated.push(e.untruncatedLength > clip.maxLength);
  }
  return { embeds, truncated };
}
