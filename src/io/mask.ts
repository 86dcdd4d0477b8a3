// Edit-region masks (SPEC §5): binarisation of mask images, nearest resizing to the image, and
// exact area averaging down to an attention map's resolution.
//
// A mask is a row-major [height, width] Float32Array; binarised masks hold 0 or 1 (1 = edit region).
import { UserError } from "../errors.ts";

/** 8-bit interleaved RGBA pixels (what PNG decoders such as jimp produce). */
export interface RgbaImage {
  width: number;
  height: number;
  /** [height, width, 4], 8-bit. */
  data: Uint8Array | Uint8ClampedArray;
}

/** A single-channel map, row-major [height, width]. */
export interface Mask {
  width: number;
  height: number;
  data: Float32Array;
}

function checkRgba(img: RgbaImage): void {
  if (!(img.width > 0 && img.height > 0) || img.data.length !== img.width * img.height * 4) {
    throw new Error(
      `binarizeMask: expected ${img.width}x${img.height}x4 RGBA bytes, got ${img.data.length} values`,
    );
  }
}

function checkMask(m: Mask, op: string): void {
  if (!(m.width > 0 && m.height > 0) || m.data.length !== m.width * m.height) {
    throw new Error(`${op}: mask ${m.width}x${m.height} has ${m.data.length} values`);
  }
}

/**
 * PIL's "L" conversion of 8-bit RGB: L = (R·19595 + G·38470 + B·7471 + 2^15) >> 16, i.e.
 * round(0.299 R + 0.587 G + 0.114 B) in PIL's fixed point.
 */
export function pilLuminance(r: number, g: number, b: number): number {
  return (r * 19595 + g * 38470 + b * 7471 + 0x8000) >>> 16;
}

/** How a mask image was read. */
export type MaskRule = "alpha" | "luminance";

/** Which rule `binarizeMask` applies: "alpha" when the alpha channel takes more than one value. */
export function maskRule(img: RgbaImage): MaskRule {
  checkRgba(img);
  const d = img.data;
  const a0 = d[3]!;
  for (let i = 7; i < d.length; i += 4) if (d[i] !== a0) return "alpha";
  return "luminance";
}

/**
 * Binarise a mask image into the edit region (1) and the rest (0):
 * - if its alpha channel varies, the edit region is alpha == 0 (MagicBrush's masks are the image
 *   with the edited area made transparent);
 * - otherwise the edit region is PIL luminance > 127 (white = edit).
 */
export function binarizeMask(img: RgbaImage): Mask {
  const rule = maskRule(img);
  const { width, height } = img;
  const d = img.data;
  const out = new Float32Array(width * height);
  if (rule === "alpha") {
    for (let i = 0; i < out.length; i++) out[i] = d[4 * i + 3] === 0 ? 1 : 0;
  } else {
    for (let i = 0; i < out.length; i++) {
      out[i] = pilLuminance(d[4 * i]!, d[4 * i + 1]!, d[4 * i + 2]!) > 127 ? 1 : 0;
    }
  }
  return { width, height, data: out };
}

/**
 * Nearest-neighbour resize (as PIL's NEAREST): output pixel (x, y) takes input pixel
 * (floor((x + 0.5)·inW/outW), floor((y + 0.5)·inH/outH)). Keeps a binary mask binary.
 */
export function resizeMaskTo(mask: Mask, width: number, height: number): Mask {
  checkMask(mask, "resizeMaskTo");
  if (!(width > 0 && height > 0) || !Number.isInteger(width) || !Number.isInteger(height)) {
    throw new Error(`resizeMaskTo: bad target size ${width}x${height}`);
  }
  if (width === mask.width && height === mask.height) return { width, height, data: mask.data.slice() };
  const xs = new Int32Array(width);
  for (let x = 0; x < width; x++) xs[x] = Math.min(mask.width - 1, Math.floor(((x + 0.5) * mask.width) / width));
  const out = new Float32Array(width * height);
  for (let y = 0; y < height; y++) {
    const sy = Math.min(mask.height - 1, Math.floor(((y + 0.5) * mask.height) / height));
    const srow = sy * mask.width;
    for (let x = 0; x < width; x++) out[y * width + x] = mask.data[srow + xs[x]!]!;
  }
  return { width, height, data: out };
}

/**
 * Overlap weights along one axis: output cell o covers input interval [o·s, (o+1)·s) with
 * s = inSize / outSize; weight of input pixel i is the length of [i, i+1) ∩ that interval.
 * Returned as a sparse list per output cell.
 */
function overlapWeights(inSize: number, outSize: number): { start: number; w: number[] }[] {
  const cells: { start: number; w: number[] }[] = [];
  for (let o = 0; o < outSize; o++) {
    // Exact rational bounds: lo = o·in/out, hi = (o+1)·in/out.
    const loNum = o * inSize;
    const hiNum = (o + 1) * inSize;
    const first = Math.floor(loNum / outSize);
    const last = Math.min(inSize - 1, Math.ceil(hiNum / outSize) - 1);
    const w: number[] = [];
    for (let i = first; i <= last; i++) {
      // overlap of [i, i+1) with [lo, hi), in units of 1/outSize to stay exact in integers
      const a = Math.max(i * outSize, loNum);
      const b = Math.min((i + 1) * outSize, hiNum);
      w.push(Math.max(0, b - a) / outSize);
    }
    cells.push({ start: first, w });
  }
  return cells;
}

/**
 * Area-average a map down (or up) to outW x outH: each output cell is the mean of the input area
 * it covers, partial pixels weighted by the covered fraction (exact for non-integer ratios; the
 * output's mean equals the input's mean).
 */
export function areaAverage(mask: Mask, outW: number, outH: number): Mask {
  checkMask(mask, "areaAverage");
  if (!(outW > 0 && outH > 0) || !Number.isInteger(outW) || !Number.isInteger(outH)) {
    throw new Error(`areaAverage: bad target size ${outW}x${outH}`);
  }
  const { width: iw, height: ih } = mask;
  const wx = overlapWeights(iw, outW);
  const wy = overlapWeights(ih, outH);
  const cellArea = (iw / outW) * (ih / outH);
  // Rows first: tmp[y, ox] = Σ_x wx · m[y, x]
  const tmp = new Float64Array(ih * outW);
  for (let y = 0; y < ih; y++) {
    const row = y * iw;
    for (let ox = 0; ox < outW; ox++) {
      const { start, w } = wx[ox]!;
      let s = 0;
      for (let j = 0; j < w.length; j++) s += w[j]! * mask.data[row + start + j]!;
      tmp[y * outW + ox] = s;
    }
  }
  const out = new Float32Array(outW * outH);
  for (let oy = 0; oy < outH; oy++) {
    const { start, w } = wy[oy]!;
    for (let ox = 0; ox < outW; ox++) {
      let s = 0;
      for (let j = 0; j < w.length; j++) s += w[j]! * tmp[(start + j) * outW + ox]!;
      out[oy * outW + ox] = s / cellArea;
    }
  }
  return { width: outW, height: outH, data: out };
}

/**
 * The ground-truth attention map of SPEC §5 from a mask image: binarise, resize (nearest) to the
 * image's size, then area-average to the attention map's size.
 */
export function maskToAttentionMap(
  img: RgbaImage,
  imageWidth: number,
  imageHeight: number,
  mapWidth: number,
  mapHeight: number,
): Mask {
  return areaAverage(resizeMaskTo(binarizeMask(img), imageWidth, imageHeight), mapWidth, mapHeight);
}

/**
 * Decode mask file bytes (PNG, JPEG, …) into RGBA with jimp. Images without alpha decode with
 * alpha 255 everywhere, so `binarizeMask` falls back to luminance for them. `name` labels errors.
 */
export async function decodeRgba(bytes: Uint8Array, name = "mask"): Promise<RgbaImage> {
  const { Jimp } = await import("jimp");
  const buf = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer;
  let img;
  try {
    img = await Jimp.fromBuffer(buf);
  } catch (e) {
    throw new UserError(`${name}: cannot decode the mask image (${(e as Error).message})`);
  }
  const { width, height, data } = img.bitmap;
  return { width, height, data: new Uint8Array(data.buffer, data.byteOffset, width * height * 4) };
}

/** Read a mask image from bytes and binarise it (1 = edit region). */
export async function decodeMask(bytes: Uint8Array, name = "mask"): Promise<Mask> {
  return binarizeMask(await decodeRgba(bytes, name));
}
