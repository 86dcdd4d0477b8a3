// LoRA weight files for the UNet's linear and convolution layers, normalised to
//   module path ("down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q")
//     -> { down: [rank, in] row-major, up: [out, rank] row-major, alpha? }
// (a convolution's, as peft writes it: down [rank, in, k, k], up [out, rank, 1, 1]).
// The layer's update is W += (alpha / rank) * up @ down (over a convolution's flattened
// [in, k, k] weight); without alpha the scale is 1.
//
// Read: the peft/diffusers format (`unet.<module>.lora_A.weight` / `lora_B.weight`, optional
// `<module>.alpha`), its `<module>.lora.down.weight` / `lora.up.weight` spelling, and the old diffusers
// attention-processor format (`<block>.processor.to_q_lora.down.weight`, to_k/to_v/to_out).
// Write: the peft/diffusers format, which diffusers' `load_lora_weights` reads.
import { UserError } from "../errors.ts";
import { numel } from "../tensor/tensor.ts";
import { openSafetensors, writeSafetensors, type SafetensorsFile, type TensorToWrite } from "./safetensors.ts";

export interface LoraLayer {
  /** [rank, inFeatures], or a convolution's [rank, inFeatures, k, k] */
  down: Float32Array;
  /** [outFeatures, rank] (a convolution's [outFeatures, rank, 1, 1] holds the same values) */
  up: Float32Array;
  rank: number;
  /** Input features; a convolution's input channels. */
  inFeatures: number;
  /** Output features; a convolution's output channels. */
  outFeatures: number;
  /** Present for a convolution: its (square) kernel size k. */
  kernelSize?: number;
  /** Network alpha; the update is scaled by alpha / rank. Absent means scale 1. */
  alpha?: number;
}

/** The tensor shapes of a layer's down and up weights, as peft stores them. */
export function loraShapes(l: Pick<LoraLayer, "rank" | "inFeatures" | "outFeatures" | "kernelSize">): { down: number[]; up: number[] } {
  const k = l.kernelSize;
  return k === undefined
    ? { down: [l.rank, l.inFeatures], up: [l.outFeatures, l.rank] }
    : { down: [l.rank, l.inFeatures, k, k], up: [l.outFeatures, l.rank, 1, 1] };
}

/**
 * A layer's sizes from the shapes of its down and up tensors (a linear layer's [rank, in] and
 * [out, rank], or a convolution's [rank, in, k, k] and [out, rank, 1, 1]); a string says what is
 * wrong with them.
 */
export function loraDims(down: readonly number[], up: readonly number[]): Pick<LoraLayer, "rank" | "inFeatures" | "outFeatures" | "kernelSize"> | string {
  const s = (shape: readonly number[]) => `[${shape.join(",")}]`;
  if (down.length === 2) {
    if (up.length !== 2) return `down has shape ${s(down)} (linear) but up has shape ${s(up)}; expected [out, rank]`;
    if (up[1] !== down[0]) return `down has rank ${down[0]} (shape ${s(down)}) but up has rank ${up[1]} (shape ${s(up)})`;
    return { rank: down[0], inFeatures: down[1], outFeatures: up[0] };
  }
  if (down.length === 4) {
    if (down[2] !== down[3]) return `down has shape ${s(down)}; only square convolution kernels are supported`;
    if (up.length !== 4 || up[2] !== 1 || up[3] !== 1) return `down has shape ${s(down)} (convolution) but up has shape ${s(up)}; expected [out, rank, 1, 1]`;
    if (up[1] !== down[0]) return `down has rank ${down[0]} (shape ${s(down)}) but up has rank ${up[1]} (shape ${s(up)})`;
    return { rank: down[0], inFeatures: down[1], outFeatures: up[0], kernelSize: down[2] };
  }
  return `down has shape ${s(down)}; expected [rank, in] (linear) or [rank, in, k, k] (convolution)`;
}

export type LoraFormat = "peft" | "attn-procs";

export interface LoraFile {
  format: LoraFormat;
  /** Module path -> weights, in sorted module order. */
  layers: Map<string, LoraLayer>;
  /** Module path -> the file's own key names of its down and up tensors. */
  keys: Map<string, { down: string; up: string }>;
}

type Part = "down" | "up" | "alpha";
interface ParsedKey {
  module: string;
  part: Part;
  format: LoraFormat;
}

const ATTN_PROC_KEY = /^(.+)\.processor\.(to_q|to_k|to_v|to_out)_lora\.(down|up)\.weight$/;
const PEFT_KEY = /^(.+)\.lora_([AB])(?:\.[A-Za-z0-9_-]+)?\.weight$/;
const LORA_DOWN_UP_KEY = /^(.+)\.lora\.(down|up)\.weight$/;
const ALPHA_KEY = /^(.+)\.alpha$/;
const MODEL_PREFIXES = ["base_model.model.unet.", "base_model.model.", "unet."];

function stripPrefix(key: string, path: string): string {
  if (key.startsWith("text_encoder") || key.startsWith("lora_te") || key.startsWith("te_")) {
    throw new UserError(`${path}: tensor '${key}' is a text-encoder LoRA; only UNet LoRAs are supported`);
  }
  for (const p of MODEL_PREFIXES) if (key.startsWith(p)) return key.slice(p.length);
  return key;
}

function parseKey(key: string, path: string): ParsedKey {
  const name = stripPrefix(key, path);
  let m = ATTN_PROC_KEY.exec(name);
  if (m) {
    const proj = m[2] === "to_out" ? "to_out.0" : m[2];
    return { module: `${m[1]}.${proj}`, part: m[3] as "down" | "up", format: "attn-procs" };
  }
  m = PEFT_KEY.exec(name);
  if (m) return { module: m[1], part: m[2] === "A" ? "down" : "up", format: "peft" };
  m = LORA_DOWN_UP_KEY.exec(name);
  if (m) return { module: m[1], part: m[2] as "down" | "up", format: "peft" };
  m = ALPHA_KEY.exec(name);
  if (m) return { module: m[1], part: "alpha", format: "peft" };
  throw new UserError(
    `${path}: tensor '${key}' is not a LoRA weight (expected <module>.lora_A.weight / lora_B.weight, <module>.lora.down/up.weight, <module>.alpha or <block>.processor.to_q_lora.down/up.weight)`,
  );
}

/** Parse the LoRA tensors of an opened safetensors file. */
export function parseLora(file: SafetensorsFile): LoraFile {
  const path = file.path;
  const parts = new Map<string, Partial<Record<Part, string>>>();
  const formats = new Set<LoraFormat>();
  for (const key of file.names()) {
    const k = parseKey(key, path);
    formats.add(k.format);
    const entry = parts.get(k.module) ?? {};
    if (entry[k.part] !== undefined) {
      throw new UserError(`${path}: tensors '${entry[k.part]}' and '${key}' are both the ${k.part} weight of '${k.module}'`);
    }
    entry[k.part] = key;
    parts.set(k.module, entry);
  }
  if (parts.size === 0) throw new UserError(`${path}: holds no LoRA weights`);

  const layers = new Map<string, LoraLayer>();
  const keys = new Map<string, { down: string; up: string }>();
  for (const module of [...parts.keys()].sort()) {
    const { down, up, alpha } = parts.get(module)!;
    if (down === undefined || up === undefined) {
      const have = (down ?? up ?? alpha)!;
      throw new UserError(`${path}: '${module}' has '${have}' but no ${down === undefined ? "down (lora_A)" : "up (lora_B)"} weight`);
    }
    const dims = loraDims(file.info(down).shape, file.info(up).shape);
    if (typeof dims === "string") throw new UserError(`${path}: '${module}': ${dims}`);
    const layer: LoraLayer = { down: file.toF32(down), up: file.toF32(up), ...dims };
    if (alpha !== undefined) {
      const a = file.info(alpha);
      if (a.shape.reduce((x, y) => x * y, 1) !== 1) throw new UserError(`${path}: '${alpha}' must hold one number, has shape [${a.shape.join(",")}]`);
      const value = file.toF32(alpha)[0];
      if (!(value > 0) || !Number.isFinite(value)) throw new UserError(`${path}: '${alpha}' = ${value}; alpha must be a positive number`);
      layer.alpha = value;
    }
    layers.set(module, layer);
    keys.set(module, { down, up });
  }
  return { format: formats.size === 1 && formats.has("attn-procs") ? "attn-procs" : "peft", layers, keys };
}

/** Read a LoRA safetensors file (any supported format). */
export function readLoraFile(path: string): LoraFile {
  return parseLora(openSafetensors(path));
}

/** The effective scale alpha / rank of a layer (1 without alpha). */
export function loraScale(layer: LoraLayer): number {
  return layer.alpha === undefined ? 1 : layer.alpha / layer.rank;
}

/**
 * Write layers in the peft/diffusers format: `unet.<module>.lora_A.weight` [rank, in] and
 * `unet.<module>.lora_B.weight` [out, rank] (a convolution's [rank, in, k, k] and [out, rank, 1, 1]). A scale other than 1 (alpha != rank) is folded into
 * lora_B, so the file means the same to every reader whether or not it understands alphas.
 */
export function writeLoraFile(path: string, layers: ReadonlyMap<string, LoraLayer>, metadata: Record<string, string> = {}): void {
  const tensors = new Map<string, TensorToWrite>();
  for (const [module, l] of layers) {
    const shapes = loraShapes(l);
    if (l.down.length !== numel(shapes.down)) {
      throw new Error(`writeLoraFile: '${module}' down has ${l.down.length} values, expected ${shapes.down.join("x")}`);
    }
    if (l.up.length !== numel(shapes.up)) {
      throw new Error(`writeLoraFile: '${module}' up has ${l.up.length} values, expected ${shapes.up.join("x")}`);
    }
    const scale = loraScale(l);
    const up = scale === 1 ? l.up : l.up.map((v) => v * scale);
    tensors.set(`unet.${module}.lora_A.weight`, { dtype: "F32", shape: shapes.down, data: l.down });
    tensors.set(`unet.${module}.lora_B.weight`, { dtype: "F32", shape: shapes.up, data: up });
  }
  writeSafetensors(path, tensors, { format: "pt", ...metadata });
}
