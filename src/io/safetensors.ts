// safetensors files (https://github.com/huggingface/safetensors, format description only):
//   u64 little-endian N | N bytes of JSON header | data section
// The header maps tensor names to {dtype, shape, data_offsets: [begin, end]} (offsets relative to the
// data section) plus an optional "__metadata__" object of string -> string.
//
// Reading is positional (one tensor at a time), so a multi-GB checkpoint never sits in memory whole.
// Every structural problem of a file is a UserError that names the file and the problem.
import { closeSync, fstatSync, openSync, readSync } from "node:fs";
import { UserError } from "../errors.ts";
import { bf16ArrayToF32, f16ArrayToF32, f32ArrayToF16 } from "../tensor/f16.ts";
import { withAtomicFile, writeAll } from "./atomic.ts";

export type SafetensorsDType = "F64" | "F32" | "F16" | "BF16" | "I64" | "I32" | "I16" | "I8" | "U8" | "BOOL";

export const DTYPE_SIZE: Record<SafetensorsDType, number> = {
  F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, BOOL: 1,
};

/** What `readTensor` returns per dtype: F16/BF16 as raw 16-bit patterns, BOOL as 0/1 bytes. */
export type TensorData =
  | Float64Array | Float32Array | Uint16Array | BigInt64Array | Int32Array | Int16Array | Int8Array | Uint8Array;

export interface TensorInfo {
  name: string;
  dtype: SafetensorsDType;
  shape: number[];
  /** Byte range inside the data section, end exclusive. */
  begin: number;
  end: number;
}

/** Headers larger than this are refused (the format's reference reader uses the same bound). */
export const MAX_HEADER_BYTES = 100_000_000;

function isDType(s: unknown): s is SafetensorsDType {
  return typeof s === "string" && Object.hasOwn(DTYPE_SIZE, s);
}

function shapeText(shape: readonly number[]): string {
  return `[${shape.join(",")}]`;
}

function numelOf(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

/** Read exactly `length` bytes at `position` (looping over short reads). */
function readExact(fd: number, into: Uint8Array, position: number, path: string): void {
  let off = 0;
  while (off < into.byteLength) {
    const n = readSync(fd, into, off, Math.min(into.byteLength - off, 1 << 30), position + off);
    if (n === 0) throw new UserError(`${path}: file ended early (truncated while reading)`);
    off += n;
  }
}

function openForReading(path: string): number {
  try {
    return openSync(path, "r");
  } catch (e) {
    const code = (e as { code?: string }).code;
    if (code === "ENOENT") throw new UserError(`${path}: file not found`);
    if (code === "EISDIR") throw new UserError(`${path}: is a folder, not a safetensors file`);
    if (code === "EACCES" || code === "EPERM") throw new UserError(`${path}: permission denied`);
    throw new UserError(`${path}: cannot open: ${(e as Error).message}`);
  }
}

function parseHeader(path: string, json: string, dataBytes: number): {
  tensors: Map<string, TensorInfo>;
  metadata: Record<string, string> | null;
} {
  let raw: unknown;
  try {
    raw = JSON.parse(json);
  } catch (e) {
    throw new UserError(`${path}: header is not valid JSON (${(e as Error).message})`);
  }
  if (raw === null || typeof raw !== "object" || Array.isArray(raw)) {
    throw new UserError(`${path}: header is not a JSON object`);
  }
  let metadata: Record<string, string> | null = null;
  const tensors = new Map<string, TensorInfo>();
  for (const [name, entry] of Object.entries(raw as Record<string, unknown>)) {
    if (name === "__metadata__") {
      if (entry === null || typeof entry !== "object" || Array.isArray(entry)) {
        throw new UserError(`${path}: "__metadata__" must be an object of strings`);
      }
      for (const [k, v] of Object.entries(entry as Record<string, unknown>)) {
        if (typeof v !== "string") throw new UserError(`${path}: "__metadata__" value of '${k}' is not a string`);
      }
      metadata = entry as Record<string, string>;
      continue;
    }
    if (entry === null || typeof entry !== "object" || Array.isArray(entry)) {
      throw new UserError(`${path}: tensor '${name}' has a header entry that is not an object`);
    }
    const { dtype, shape, data_offsets } = entry as Record<string, unknown>;
    if (!isDType(dtype)) {
      throw new UserError(
        `${path}: tensor '${name}' has unsupported dtype ${JSON.stringify(dtype)} (known: ${Object.keys(DTYPE_SIZE).join(", ")})`,
      );
    }
    if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      throw new UserError(`${path}: tensor '${name}' has an invalid shape ${JSON.stringify(shape)}`);
    }
    if (
      !Array.isArray(data_offsets) || data_offsets.length !== 2 ||
      !data_offsets.every((o) => Number.isSafeInteger(o) && o >= 0) || data_offsets[0] > data_offsets[1]
    ) {
      throw new UserError(`${path}: tensor '${name}' has invalid data_offsets ${JSON.stringify(data_offsets)}`);
    }
    const [begin, end] = data_offsets as [number, number];
    const need = numelOf(shape) * DTYPE_SIZE[dtype];
    if (end - begin !== need) {
      throw new UserError(
        `${path}: tensor '${name}' has byte range [${begin}, ${end}) (${end - begin} bytes) but shape ${shapeText(shape)} ${dtype} needs ${need} bytes`,
      );
    }
    if (end > dataBytes) {
      throw new UserError(
        `${path}: tensor '${name}' has byte range [${begin}, ${end}) beyond the end of the data section (${dataBytes} bytes; file truncated?)`,
      );
    }
    tensors.set(name, { name, dtype, shape: shape.slice(), begin, end });
  }
  // Ranges must tile the data section: no overlaps, no holes, nothing left over.
  const sorted = [...tensors.values()].sort((a, b) => a.begin - b.begin || a.end - b.end);
  let pos = 0;
  let prev: TensorInfo | null = null;
  for (const t of sorted) {
    if (t.begin < pos) {
      throw new UserError(
        `${path}: tensors '${prev!.name}' [${prev!.begin}, ${prev!.end}) and '${t.name}' [${t.begin}, ${t.end}) overlap`,
      );
    }
    if (t.begin > pos) {
      throw new UserError(`${path}: bytes [${pos}, ${t.begin}) of the data section belong to no tensor (before '${t.name}')`);
    }
    pos = t.end;
    prev = t;
  }
  if (pos !== dataBytes) {
    throw new UserError(
      `${path}: data section is ${dataBytes} bytes but the tensors cover only ${pos} (extra bytes at the end)`,
    );
  }
  return { tensors, metadata };
}

/** An opened safetensors file: the validated header; tensor data is read on demand. */
export class SafetensorsFile {
  private constructor(
    readonly path: string,
    readonly tensors: ReadonlyMap<string, TensorInfo>,
    readonly metadata: Record<string, string> | null,
    /** Absolute file offset of the data section (8 + header length). */
    readonly dataOffset: number,
    readonly fileSize: number,
  ) {}

  static open(path: string): SafetensorsFile {
    const fd = openForReading(path);
    try {
      const stat = fstatSync(fd);
      if (stat.isDirectory()) throw new UserError(`${path}: is a folder, not a safetensors file`);
      const size = stat.size;
      if (size < 8) throw new UserError(`${path}: too short to be a safetensors file (${size} bytes)`);
      const lenBytes = new Uint8Array(8);
      readExact(fd, lenBytes, 0, path);
      const n = new DataView(lenBytes.buffer).getBigUint64(0, true);
      if (n > BigInt(MAX_HEADER_BYTES)) {
        throw new UserError(`${path}: header length ${n} exceeds the ${MAX_HEADER_BYTES}-byte limit (not a safetensors file?)`);
      }
      const headerLen = Number(n);
      if (headerLen > size - 8) {
        throw new UserError(`${path}: header length ${headerLen} exceeds the file size ${size} (truncated or not a safetensors file)`);
      }
      const headerBytes = new Uint8Array(headerLen);
      readExact(fd, headerBytes, 8, path);
      let json: string;
      try {
        json = new TextDecoder("utf-8", { fatal: true }).decode(headerBytes);
      } catch {
        throw new UserError(`${path}: header is not valid UTF-8 (not a safetensors file?)`);
      }
      const { tensors, metadata } = parseHeader(path, json, size - 8 - headerLen);
      return new SafetensorsFile(path, tensors, metadata, 8 + headerLen, size);
    } finally {
      closeSync(fd);
    }
  }

  /** Tensor names in file order of their data (ascending offsets). */
  names(): string[] {
    return [...this.tensors.values()].sort((a, b) => a.begin - b.begin).map((t) => t.name);
  }

  has(name: string): boolean {
    return this.tensors.has(name);
  }

  info(name: string): TensorInfo {
    const t = this.tensors.get(name);
    if (!t) throw new UserError(`${this.path}: no tensor named '${name}'`);
    return t;
  }

  /** Name -> shape of every tensor (for strict state-dict matching). */
  shapes(): Map<string, number[]> {
    return new Map([...this.tensors.values()].map((t) => [t.name, t.shape]));
  }

  /** The raw little-endian bytes of one tensor, in a fresh (aligned) buffer. */
  readBytes(name: string): Uint8Array {
    const t = this.info(name);
    const bytes = new Uint8Array(t.end - t.begin);
    const fd = openForReading(this.path);
    try {
      if (fstatSync(fd).size !== this.fileSize) throw new UserError(`${this.path}: file changed while it was being read`);
      readExact(fd, bytes, this.dataOffset + t.begin, this.path);
    } finally {
      closeSync(fd);
    }
    return bytes;
  }

  /** One tensor as the typed array of its dtype (F16/BF16: raw bits in a Uint16Array; BOOL: Uint8Array). */
  readTensor(name: string): TensorData {
    const t = this.info(name);
    const buf = this.readBytes(name).buffer as ArrayBuffer;
    switch (t.dtype) {
      case "F64": return new Float64Array(buf);
      case "F32": return new Float32Array(buf);
      case "F16":
      case "BF16": return new Uint16Array(buf);
      case "I64": return new BigInt64Array(buf);
      case "I32": return new Int32Array(buf);
      case "I16": return new Int16Array(buf);
      case "I8": return new Int8Array(buf);
      case "U8":
      case "BOOL": return new Uint8Array(buf);
    }
  }

  /** One tensor converted to float32 (any dtype; I64 values beyond 2^53 lose precision). */
  toF32(name: string): Float32Array {
    const t = this.info(name);
    const data = this.readTensor(name);
    switch (t.dtype) {
      case "F32": return data as Float32Array;
      case "F16": return f16ArrayToF32(data as Uint16Array);
      case "BF16": return bf16ArrayToF32(data as Uint16Array);
      case "I64": {
        const src = data as BigInt64Array;
        const out = new Float32Array(src.length);
        for (let i = 0; i < src.length; i++) out[i] = Number(src[i]);
        return out;
      }
      default: return Float32Array.from(data as ArrayLike<number>);
    }
  }

  /** One integer (or BOOL) tensor as int32; I64 values outside the int32 range are an error. */
  toI32(name: string): Int32Array {
    const t = this.info(name);
    if (t.dtype.startsWith("F") || t.dtype === "BF16") {
      throw new UserError(`${this.path}: tensor '${name}' is ${t.dtype}, not an integer tensor`);
    }
    const data = this.readTensor(name);
    if (t.dtype === "I32") return data as Int32Array;
    if (t.dtype === "I64") {
      const src = data as BigInt64Array;
      const out = new Int32Array(src.length);
      for (let i = 0; i < src.length; i++) {
        const v = src[i];
        if (v > 2147483647n || v < -2147483648n) {
          throw new UserError(`${this.path}: tensor '${name}' element ${i} = ${v} does not fit in int32`);
        }
        out[i] = Number(v);
      }
      return out;
    }
    return Int32Array.from(data as ArrayLike<number>);
  }
}

export function openSafetensors(path: string): SafetensorsFile {
  return SafetensorsFile.open(path);
}

// ---------------------------------------------------------------------------------------------------
// Writing

export interface TensorToWrite {
  dtype: SafetensorsDType;
  shape: readonly number[];
  /**
   * The values. Native arrays per dtype (Float32Array for F32, BigInt64Array for I64, raw-bit
   * Uint16Array for F16/BF16, Uint8Array for U8/BOOL, …); also accepted: Float32Array for F16/BF16
   * (rounded to nearest even) and Int32Array for I64.
   */
  data: TensorData;
}

/** f32 -> bf16 bits, round to nearest even (as torch's `.to(torch.bfloat16)`); NaN stays NaN. */
function f32ArrayToBf16(src: Float32Array): Uint16Array {
  const bits = new Uint32Array(src.buffer, src.byteOffset, src.length);
  const out = new Uint16Array(src.length);
  for (let i = 0; i < src.length; i++) {
    const x = bits[i];
    if ((x & 0x7f800000) === 0x7f800000 && (x & 0x7fffff) !== 0) {
      out[i] = (x >>> 16) | 0x40;
      continue;
    }
    out[i] = (x + 0x7fff + ((x >>> 16) & 1)) >>> 16;
  }
  return out;
}

const NATIVE: Record<SafetensorsDType, new (...args: never[]) => TensorData> = {
  F64: Float64Array, F32: Float32Array, F16: Uint16Array, BF16: Uint16Array, I64: BigInt64Array,
  I32: Int32Array, I16: Int16Array, I8: Int8Array, U8: Uint8Array, BOOL: Uint8Array,
};

function tensorBytes(name: string, t: TensorToWrite): Uint8Array {
  if (!isDType(t.dtype)) throw new Error(`writeSafetensors: tensor '${name}' has unknown dtype ${t.dtype}`);
  const n = numelOf(t.shape);
  let data: TensorData = t.data;
  if ((t.dtype === "F16" || t.dtype === "BF16") && data instanceof Float32Array) {
    data = t.dtype === "F16" ? f32ArrayToF16(data) : f32ArrayToBf16(data);
  } else if (t.dtype === "I64" && data instanceof Int32Array) {
    data = BigInt64Array.from(data, (v) => BigInt(v));
  }
  if (!(data instanceof NATIVE[t.dtype])) {
    throw new Error(`writeSafetensors: tensor '${name}' is ${t.dtype} but its data is a ${data.constructor.name}`);
  }
  if (data.length !== n) {
    throw new Error(`writeSafetensors: tensor '${name}' has shape ${shapeText(t.shape)} (${n} elements) but ${data.length} values`);
  }
  return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
}

/**
 * Write tensors to `path` (atomically). Data is laid out by (element size descending, name), so every
 * tensor starts at an offset aligned to its element size; the header is padded with spaces to a
 * multiple of 8 bytes.
 */
export function writeSafetensors(
  path: string,
  tensors: Record<string, TensorToWrite> | Map<string, TensorToWrite>,
  metadata?: Record<string, string>,
): void {
  const entries = tensors instanceof Map ? [...tensors.entries()] : Object.entries(tensors);
  const prepared = entries
    .map(([name, t]) => {
      if (name === "__metadata__") throw new Error(`writeSafetensors: '__metadata__' is not a valid tensor name`);
      return { name, t, bytes: tensorBytes(name, t) };
    })
    .sort((a, b) => DTYPE_SIZE[b.t.dtype] - DTYPE_SIZE[a.t.dtype] || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));

  const header: Record<string, unknown> = {};
  if (metadata) {
    for (const [k, v] of Object.entries(metadata)) {
      if (typeof v !== "string") throw new Error(`writeSafetensors: metadata '${k}' must be a string`);
    }
    header.__metadata__ = metadata;
  }
  let offset = 0;
  for (const { name, t, bytes } of prepared) {
    header[name] = { dtype: t.dtype, shape: [...t.shape], data_offsets: [offset, offset + bytes.byteLength] };
    offset += bytes.byteLength;
  }
  const jsonBytes = new TextEncoder().encode(JSON.stringify(header));
  const padded = Math.ceil(jsonBytes.byteLength / 8) * 8;
  const head = new Uint8Array(8 + padded).fill(0x20);
  new DataView(head.buffer).setBigUint64(0, BigInt(padded), true);
  head.set(jsonBytes, 8);

  withAtomicFile(path, (fd) => {
    writeAll(fd, head);
    for (const { bytes } of prepared) writeAll(fd, bytes);
  });
}
