// An image file's format and size from its first bytes (PNG's IHDR, JPEG's SOF marker), without
// decoding any pixels: lets a dataset be checked whole when it is opened — every file an image we
// can read, every mask the shape of its image — before any work starts.
import { closeSync, fstatSync, openSync, readSync } from "node:fs";
import { UserError } from "../errors.ts";
import { describeOtherFormat, sniffImageFormat } from "./image.ts";

export interface ImageHeader {
  format: "png" | "jpeg";
  width: number;
  height: number;
}

/** SOF0-SOF15 carry the frame size; C4 (DHT), C8 (JPG) and CC (DAC) share the range but do not. */
function isSof(marker: number): boolean {
  return marker >= 0xc0 && marker <= 0xcf && marker !== 0xc4 && marker !== 0xc8 && marker !== 0xcc;
}

/** The header of PNG/JPEG bytes, or a description of what is wrong with them. */
export function imageHeaderOf(bytes: Uint8Array): ImageHeader | string {
  const format = sniffImageFormat(bytes);
  if (format === null) return `${describeOtherFormat(bytes)}; expected a PNG or JPEG image`;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (format === "png") {
    if (bytes.length < 24 || String.fromCharCode(...bytes.subarray(12, 16)) !== "IHDR") return "damaged PNG (no IHDR header)";
    const width = view.getUint32(16), height = view.getUint32(20);
    return width > 0 && height > 0 ? { format, width, height } : `damaged PNG (size ${width}x${height})`;
  }
  let pos = 2;
  while (pos + 4 <= bytes.length) {
    if (bytes[pos] !== 0xff) return "damaged JPEG (a marker was expected)";
    const marker = bytes[pos + 1];
    if (marker === 0xff) {
      pos++; // fill byte
      continue;
    }
    if (marker === 0xd8 || marker === 0x01 || (marker >= 0xd0 && marker <= 0xd7)) {
      pos += 2; // markers without a length
      continue;
    }
    if (marker === 0xd9 || marker === 0xda) return "damaged JPEG (no frame header before the image data)";
    const length = view.getUint16(pos + 2);
    if (isSof(marker)) {
      if (pos + 9 > bytes.length) break;
      const height = view.getUint16(pos + 5), width = view.getUint16(pos + 7);
      return width > 0 && height > 0 ? { format, width, height } : `damaged JPEG (size ${width}x${height})`;
    }
    pos += 2 + length;
  }
  return "damaged or truncated JPEG (no frame header)";
}

/** Read just enough of `path` for its header; a UserError names the file and the problem. */
export function readImageHeader(path: string, label = path): ImageHeader {
  let fd: number;
  try {
    fd = openSync(path, "r");
  } catch (e) {
    const code = (e as { code?: string }).code;
    throw new UserError(`${label}: ${code === "ENOENT" ? "file not found" : `cannot read: ${(e as Error).message}`}`);
  }
  try {
    const size = fstatSync(fd).size;
    // JPEG metadata (EXIF, ICC) may push the frame header far in: 256 KiB first, then the whole file
    for (const n of [Math.min(size, 256 * 1024), size]) {
      const bytes = new Uint8Array(n);
      let off = 0;
      while (off < n) {
        const r = readSync(fd, bytes, off, n - off, off);
        if (r === 0) break;
        off += r;
      }
      const h = imageHeaderOf(bytes.subarray(0, off));
      if (typeof h !== "string") return h;
      if (n === size || !h.includes("no frame header")) throw new UserError(`${label}: ${h}`);
    }
    throw new UserError(`${label}: empty file`);
  } finally {
    closeSync(fd);
  }
}

/**
 * A mask must have its image's shape: the same size or another size of the same aspect ratio
 * (MagicBrush ships masks larger than their images; they are resized). Within 1% for rounding.
 */
export function maskShapeProblem(mask: { width: number; height: number }, image: { width: number; height: number }): string | null {
  const a = mask.width * image.height, b = image.width * mask.height;
  if (Math.abs(a - b) <= 0.01 * Math.max(a, b)) return null;
  return `the mask is ${mask.width}x${mask.height} but its image is ${image.width}x${image.height}; a mask must have its image's aspect ratio`;
}
