// Images on the host: PNG/JPEG files <-> planar float32 arrays in [0, 1] ([C, H, W], row-major), the
// [-1, 1] scaling of the VAE, and host-side resizing. Decoding and encoding use jimp (loaded on first
// use, so programs that never touch an image do not pay for it).
//
// The format is detected from the file's first bytes, never from its name. JPEG EXIF orientation is
// applied (as diffusers' `load_image` does). Conversions to and from uint8 follow diffusers' image
// processor: u8 / 255 in float32 on the way in; (x * 255).round() with round-half-to-even (numpy) on
// the way out.
import { Buffer } from "node:buffer";
import { readFileSync, statSync } from "node:fs";
import { UserError } from "../errors.ts";
import { writeFileAtomic } from "./atomic.ts";

/** A planar float image: data[c * height * width + y * width + x]. */
export interface PlanarImage {
  width: number;
  height: number;
  channels: number;
  data: Float32Array;
}

/** An RGB image as read from a file, with its alpha plane ([H, W]) when the file has one. */
export interface RgbImage extends PlanarImage {
  channels: 3;
  alpha: Float32Array | null;
}

export type ImageFormat = "png" | "jpeg";

type JimpModule = typeof import("jimp");
let jimpModule: Promise<JimpModule> | null = null;
function jimp(): Promise<JimpModule> {
  jimpModule ??= import("jimp");
  return jimpModule;
}

/** The format named by a file's first bytes (null when it is not an image we can read). */
export function sniffImageFormat(bytes: Uint8Array): ImageFormat | null {
  const png = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];
  if (bytes.length >= 8 && png.every((b, i) => bytes[i] === b)) return "png";
  if (bytes.length >= 3 && bytes[0] === 0xff && bytes[1] === 0xd8 && bytes[2] === 0xff) return "jpeg";
  return null;
}

/** What a file that is not a PNG or JPEG is, for error messages ("a GIF image", "not an image (starts with bytes …)"). */
export function describeOtherFormat(bytes: Uint8Array): string {
  const ascii = (from: number, n: number) => String.fromCharCode(...bytes.subarray(from, from + n));
  if (ascii(0, 2) === "BM") return "a BMP image";
  if (ascii(0, 4) === "GIF8") return "a GIF image";
  if (ascii(0, 4) === "RIFF" && ascii(8, 4) === "WEBP") return "a WebP image";
  if (ascii(0, 4) === "II*\0" || ascii(0, 4) === "MM\0*") return "a TIFF image";
  if (bytes.length === 0) return "an empty file";
  const head = [...bytes.subarray(0, 8)].map((b) => b.toString(16).padStart(2, "0")).join(" ");
  return `not an image (starts with bytes ${head})`;
}

/** Does a PNG carry transparency (an alpha channel, or a tRNS chunk)? */
function pngHasAlpha(bytes: Uint8Array): boolean {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (bytes.length < 26) return false;
  const colorType = bytes[25];
  if (colorType === 4 || colorType === 6) return true;
  let pos = 8;
  while (pos + 8 <= bytes.length) {
    const length = view.getUint32(pos);
    const type = String.fromCharCode(...bytes.subarray(pos + 4, pos + 8));
    if (type === "tRNS") return true;
    if (type === "IDAT" || type === "IEND") return false;
    pos += 12 + length;
  }
  return false;
}

function readFileBytes(path: string): Uint8Array {
  let isDir = false;
  try {
    isDir = statSync(path).isDirectory();
  } catch (e) {
    const code = (e as { code?: string }).code;
    if (code === "ENOENT") throw new UserError(`${path}: file not found`);
    throw new UserError(`${path}: cannot read: ${(e as Error).message}`);
  }
  if (isDir) throw new UserError(`${path}: is a folder, not an image`);
  try {
    return readFileSync(path);
  } catch (e) {
    throw new UserError(`${path}: cannot read: ${(e as Error).message}`);
  }
}

interface DecodedRgba {
  width: number;
  height: number;
  /** Interleaved RGBA bytes, row-major. */
  rgba: Uint8Array;
  hasAlpha: boolean;
}

async function decodeRgba(bytes: Uint8Array, name: string): Promise<DecodedRgba> {
  const format = sniffImageFormat(bytes);
  if (format === null) throw new UserError(`${name}: ${describeOtherFormat(bytes)}; expected a PNG or JPEG image`);
  const { Jimp } = await jimp();
  let image: Awaited<ReturnType<typeof Jimp.fromBuffer>>;
  try {
    image = await Jimp.fromBuffer(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength));
  } catch (e) {
    throw new UserError(`${name}: cannot decode ${format.toUpperCase()} (${(e as Error).message}; damaged or truncated file?)`);
  }
  const { width, height, data } = image.bitmap;
  if (!(width > 0 && height > 0) || data.length < width * height * 4) {
    throw new UserError(`${name}: decoded ${format.toUpperCase()} has no pixels (${width}x${height})`);
  }
  return {
    width,
    height,
    rgba: new Uint8Array(data.buffer, data.byteOffset, width * height * 4),
    hasAlpha: format === "png" && pngHasAlpha(bytes),
  };
}

function planes(d: DecodedRgba, channels: 3 | 4): Float32Array {
  const n = d.width * d.height;
  const out = new Float32Array(channels * n);
  for (let i = 0; i < n; i++) {
    for (let c = 0; c < channels; c++) out[c * n + i] = d.rgba[i * 4 + c] / 255;
  }
  return out;
}

function toRgbImage(d: DecodedRgba): RgbImage {
  const n = d.width * d.height;
  let alpha: Float32Array | null = null;
  if (d.hasAlpha) {
    alpha = new Float32Array(n);
    for (let i = 0; i < n; i++) alpha[i] = d.rgba[i * 4 + 3] / 255;
  }
  return { width: d.width, height: d.height, channels: 3, data: planes(d, 3), alpha };
}

/** Decode PNG/JPEG bytes (e.g. from a parquet column) to RGB planes in [0, 1]; `name` labels errors. */
export async function decodeImage(bytes: Uint8Array, name: string): Promise<RgbImage> {
  return toRgbImage(await decodeRgba(bytes, name));
}

/** Read a PNG or JPEG file as RGB planes in [0, 1] (plus the alpha plane when the file has one). */
export async function readImage(path: string): Promise<RgbImage> {
  return decodeImage(readFileBytes(path), path);
}

/** Read a PNG or JPEG file as 4 planes R, G, B, A in [0, 1] (A = 1 where the file has no alpha). */
export async function readImageRGBA(path: string): Promise<PlanarImage & { channels: 4; hasAlpha: boolean }> {
  const d = await decodeRgba(readFileBytes(path), path);
  return { width: d.width, height: d.height, channels: 4, data: planes(d, 4), hasAlpha: d.hasAlpha };
}

// ---------------------------------------------------------------------------------------------------
// Value conversions

/** Round half to even, as numpy's `round`. */
function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return r - x === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** [0, 1] floats -> uint8 as diffusers' `numpy_to_pil`: clamp, (x * 255) in float32, round half to even. */
export function toUint8(data: Float32Array): Uint8Array {
  const out = new Uint8Array(data.length);
  for (let i = 0; i < data.length; i++) {
    const v = Number.isNaN(data[i]) ? 0 : Math.min(1, Math.max(0, data[i]));
    out[i] = roundHalfEven(Math.fround(v * 255));
  }
  return out;
}

/** [0, 1] -> [-1, 1] (2x - 1), the VAE's input range. */
export function toMinusOneOne(data: Float32Array): Float32Array {
  const out = new Float32Array(data.length);
  for (let i = 0; i < data.length; i++) out[i] = 2 * data[i] - 1;
  return out;
}

/** [-1, 1] -> [0, 1] as diffusers' postprocess: (x / 2 + 0.5).clamp(0, 1) in float32. */
export function fromMinusOneOne(data: Float32Array): Float32Array {
  const out = new Float32Array(data.length);
  for (let i = 0; i < data.length; i++) {
    const v = Math.fround(Math.fround(data[i] / 2) + 0.5);
    out[i] = Number.isNaN(v) ? 0 : Math.min(1, Math.max(0, v));
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------
// Writing

/**
 * Write a planar image (1 = grey, 3 = RGB, 4 = RGBA channels, values in [0, 1], clamped) as an 8-bit
 * PNG, atomically.
 */
export async function writePng(path: string, img: PlanarImage): Promise<void> {
  const { width, height, channels, data } = img;
  const n = width * height;
  if (!(Number.isInteger(width) && Number.isInteger(height) && width > 0 && height > 0)) {
    throw new Error(`writePng: invalid size ${width}x${height}`);
  }
  if (![1, 3, 4].includes(channels)) throw new Error(`writePng: ${channels} channels; expected 1, 3 or 4`);
  if (data.length !== channels * n) throw new Error(`writePng: ${data.length} values for ${channels}x${height}x${width}`);
  const q = toUint8(data);
  const rgba = Buffer.alloc(n * 4, 255);
  for (let i = 0; i < n; i++) {
    for (let c = 0; c < 3; c++) rgba[i * 4 + c] = q[(channels === 1 ? 0 : c) * n + i];
    if (channels === 4) rgba[i * 4 + 3] = q[3 * n + i];
  }
  const { Jimp } = await jimp();
  const image = new Jimp({ width, height, data: rgba });
  // PNG colour types: 0 grey, 2 RGB, 6 RGBA
  const colorType = channels === 1 ? 0 : channels === 3 ? 2 : 6;
  const bytes = await image.getBuffer("image/png", { colorType, deflateLevel: 6 });
  writeFileAtomic(path, new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength));
}

// ---------------------------------------------------------------------------------------------------
// Resizing

export type ResizeMode = "bilinear" | "area" | "nearest";

/** Per output index along one axis: source indices and weights (summing to 1). */
interface AxisWeights {
  start: Int32Array;
  count: Int32Array;
  weights: Float64Array[];
}

/**
 * Triangle-filter weights, widened by the scale when shrinking (antialiased bilinear): output pixel
 * centre o + 0.5 maps to source position (o + 0.5) * in / out; a source pixel centred at distance d
 * gets weight max(0, 1 - |d| / support) with support = max(1, in / out); weights are normalised.
 */
function bilinearWeights(inSize: number, outSize: number): AxisWeights {
  const scale = inSize / outSize;
  const support = Math.max(1, scale);
  const start = new Int32Array(outSize);
  const count = new Int32Array(outSize);
  const weights: Float64Array[] = [];
  for (let o = 0; o < outSize; o++) {
    const centre = (o + 0.5) * scale;
    const lo = Math.max(0, Math.floor(centre - support));
    const hi = Math.min(inSize - 1, Math.ceil(centre + support));
    const w: number[] = [];
    let first = -1;
    let sum = 0;
    for (let i = lo; i <= hi; i++) {
      const d = Math.abs(i + 0.5 - centre) / support;
      const v = d < 1 ? 1 - d : 0;
      if (v > 0) {
        if (first < 0) first = i;
        w.push(v);
        sum += v;
      } else if (first >= 0) {
        break;
      }
    }
    if (first < 0) {
      // cannot happen for a positive support, but keep the nearest pixel rather than nothing
      first = Math.min(inSize - 1, Math.floor(centre));
      w.push(1);
      sum = 1;
    }
    start[o] = first;
    count[o] = w.length;
    weights.push(Float64Array.from(w, (v) => v / sum));
  }
  return { start, count, weights };
}

/** Exact area averaging: output pixel o covers source [o * in / out, (o + 1) * in / out). */
function areaWeights(inSize: number, outSize: number): AxisWeights {
  const scale = inSize / outSize;
  const start = new Int32Array(outSize);
  const count = new Int32Array(outSize);
  const weights: Float64Array[] = [];
  for (let o = 0; o < outSize; o++) {
    const a = o * scale;
    const b = (o + 1) * scale;
    const first = Math.floor(a);
    const last = Math.min(inSize - 1, Math.ceil(b) - 1);
    const w: number[] = [];
    for (let i = first; i <= last; i++) w.push(Math.min(b, i + 1) - Math.max(a, i));
    const sum = w.reduce((x, y) => x + y, 0);
    start[o] = first;
    count[o] = w.length;
    weights.push(Float64Array.from(w, (v) => v / sum));
  }
  return { start, count, weights };
}

/** Nearest neighbour by pixel centres: source index floor((o + 0.5) * in / out). */
function nearestWeights(inSize: number, outSize: number): AxisWeights {
  const start = new Int32Array(outSize);
  for (let o = 0; o < outSize; o++) start[o] = Math.min(inSize - 1, Math.floor(((o + 0.5) * inSize) / outSize));
  return { start, count: new Int32Array(outSize).fill(1), weights: new Array(outSize).fill(Float64Array.of(1)) };
}

function axisWeights(mode: ResizeMode, inSize: number, outSize: number): AxisWeights {
  if (mode === "bilinear") return bilinearWeights(inSize, outSize);
  if (mode === "area") return areaWeights(inSize, outSize);
  return nearestWeights(inSize, outSize);
}

/**
 * Resize every plane to width x height, separably (rows then columns), in float64 arithmetic.
 *  - "bilinear": triangle filter; plain bilinear with half-pixel centres when enlarging, antialiased
 *    (the filter widened by the shrink factor) when shrinking, like PIL's BILINEAR (in float, without
 *    PIL's 8-bit rounding).
 *  - "area": each output pixel is the exact area-weighted mean of the source pixels it covers (for
 *    integer factors, the mean of each block, as torch's `F.interpolate(mode="area")`).
 *  - "nearest": the source pixel under the output pixel's centre.
 */
export function resize<T extends PlanarImage>(img: T, width: number, height: number, mode: ResizeMode = "bilinear"): T {
  if (!(Number.isInteger(width) && Number.isInteger(height) && width > 0 && height > 0)) {
    throw new Error(`resize: invalid target size ${width}x${height}`);
  }
  const { width: w0, height: h0, channels } = img;
  const extra = "alpha" in img && img.alpha instanceof Float32Array ? { alpha: (img as unknown as RgbImage).alpha } : null;
  const planesIn = channels + (extra ? 1 : 0);
  const src = extra ? concatPlanes(img.data, extra.alpha!) : img.data;
  const xs = axisWeights(mode, w0, width);
  const ys = axisWeights(mode, h0, height);
  const tmp = new Float64Array(h0 * width);
  const out = new Float32Array(planesIn * width * height);
  for (let c = 0; c < planesIn; c++) {
    const plane = src.subarray(c * w0 * h0, (c + 1) * w0 * h0);
    for (let y = 0; y < h0; y++) {
      const row = y * w0;
      for (let x = 0; x < width; x++) {
        const s = xs.start[x];
        const wts = xs.weights[x];
        let acc = 0;
        for (let k = 0; k < xs.count[x]; k++) acc += wts[k] * plane[row + s + k];
        tmp[y * width + x] = acc;
      }
    }
    const dst = c * width * height;
    for (let y = 0; y < height; y++) {
      const s = ys.start[y];
      const wts = ys.weights[y];
      for (let x = 0; x < width; x++) {
        let acc = 0;
        for (let k = 0; k < ys.count[y]; k++) acc += wts[k] * tmp[(s + k) * width + x];
        out[dst + y * width + x] = acc;
      }
    }
  }
  const n = width * height;
  const result = { ...img, width, height, data: extra ? out.slice(0, channels * n) : out };
  if (extra) (result as unknown as RgbImage).alpha = out.slice(channels * n);
  return result;
}

function concatPlanes(a: Float32Array, b: Float32Array): Float32Array {
  const out = new Float32Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}
