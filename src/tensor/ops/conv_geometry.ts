// Conv2d geometry (output size from stride and padding) and the splitting of a conv into passes
// whose storage bindings stay under the adapter's binding limit.
import { gpu, type GpuBinding } from "../../gpu/device.ts";
import { DTYPE_BYTES, type Tensor } from "../tensor.ts";

export interface ConvGeometry {
  n: number;
  cin: number;
  h: number;
  w: number;
  cout: number;
  kh: number;
  kw: number;
  sh: number;
  sw: number;
  /** Padding: top, bottom, left, right. */
  pt: number;
  pb: number;
  pl: number;
  pr: number;
  ho: number;
  wo: number;
}

export interface Conv2dOptions {
  stride?: number | [number, number];
  /** One number for all sides, or [top, bottom, left, right]. */
  padding?: number | [number, number, number, number];
}

export function convGeometry(xShape: readonly number[], wShape: readonly number[], opts: Conv2dOptions, op = "conv2d"): ConvGeometry {
  const shapes = `input [${xShape.join(",")}], weight [${wShape.join(",")}]`;
  if (xShape.length !== 4 || wShape.length !== 4) throw new Error(`${op}: expects NCHW input and [Cout,Cin,kh,kw] weight, got ${shapes}`);
  const [n, cin, h, w] = xShape;
  const [cout, wcin, kh, kw] = wShape;
  if (wcin !== cin) throw new Error(`${op}: input has ${cin} channels, weight expects ${wcin} (${shapes})`);
  const [sh, sw] = typeof opts.stride === "number" ? [opts.stride, opts.stride] : opts.stride ?? [1, 1];
  const pad = opts.padding ?? 0;
  const [pt, pb, pl, pr] = typeof pad === "number" ? [pad, pad, pad, pad] : pad;
  for (const v of [sh, sw]) if (!Number.isInteger(v) || v < 1) throw new Error(`${op}: bad stride ${v}`);
  for (const v of [pt, pb, pl, pr]) if (!Number.isInteger(v) || v < 0) throw new Error(`${op}: bad padding ${v}`);
  const ho = Math.floor((h + pt + pb - kh) / sh) + 1;
  const wo = Math.floor((w + pl + pr - kw) / sw) + 1;
  if (ho < 1 || wo < 1 || kh < 1 || kw < 1) throw new Error(`${op}: kernel larger than the padded input (${shapes})`);
  return { n, cin, h, w, cout, kh, kw, sh, sw, pt, pb, pl, pr, ho, wo };
}

/** One pass over images [n0, n0+nc), GEMM rows [m0, m0+mc), reduction channels [c0, c0+cc). */
export interface ConvPass {
  n0: number;
  nc: number;
  m0: number;
  mc: number;
  c0: number;
  cc: number;
}

/**
 * Split a GEMM-shaped conv pass over images, rows and channels so that the source window
 * (channels × srcPlane per image) and the destination window (rows × dstPlane per image) each fit
 * in one binding. Row and channel chunks are multiples of `rowAlign` and `chanAlign` (channel
 * counts are counted padded to `chanAlign`). One pass when everything fits.
 */
let limitOverride: number | null = null;

/** Bytes one storage binding may hold; tests lower it to exercise the multi-pass paths. */
export function bindingLimitBytes(): number {
  return limitOverride ?? gpu().maxBinding;
}

/** Pretend the binding limit is `bytes` (tests only); `null` restores the adapter's limit. */
export function setBindingLimitForTests(bytes: number | null): void {
  limitOverride = bytes;
}

export function planPasses(batch: number, rows: number, chans: number, srcPlane: number, dstPlane: number, rowAlign: number, chanAlign: number, op: string): ConvPass[] {
  const limit = Math.floor((bindingLimitBytes() - 2 * bindAlign()) / 4); // elements per binding window
  const srcImg = Math.ceil(chans / chanAlign) * chanAlign * srcPlane;
  const dstImg = rows * dstPlane;
  const passes: ConvPass[] = [];
  if (srcImg <= limit && dstImg <= limit) {
    const per = Math.max(1, Math.floor(limit / Math.max(srcImg, dstImg, 1)));
    for (let n0 = 0; n0 < batch; n0 += per) passes.push({ n0, nc: Math.min(per, batch - n0), m0: 0, mc: rows, c0: 0, cc: chans });
    return passes;
  }
  const cChunk = Math.floor(limit / srcPlane / chanAlign) * chanAlign;
  const mChunk = Math.floor(limit / dstPlane / rowAlign) * rowAlign;
  if (cChunk < 1) throw new Error(`${op}: ${chanAlign} input planes of ${srcPlane} elements exceed the storage binding limit`);
  if (mChunk < 1) throw new Error(`${op}: ${rowAlign} output planes of ${dstPlane} elements exceed the storage binding limit`);
  for (let n0 = 0; n0 < batch; n0++) {
    for (let m0 = 0; m0 < rows; m0 += mChunk) {
      for (let c0 = 0; c0 < chans; c0 += cChunk) {
        passes.push({ n0, nc: 1, m0, mc: Math.min(mChunk, rows - m0), c0, cc: Math.min(cChunk, chans - c0) });
      }
    }
  }
  return passes;
}

function bindAlign(): number {
  return gpu().limits.minStorageBufferOffsetAlignment ?? 256;
}

/**
 * A binding of elements [start, start + count) of `t` (elements of its dtype: 4 bytes, or 2 for
 * f16), starting at an aligned byte offset at or below `start`; `skip` is the number of elements
 * between that offset and `start`. The size is rounded up to whole words.
 */
export function windowBinding(t: Tensor, start: number, count: number): { binding: GpuBinding; skip: number } {
  const align = bindAlign();
  const eb = DTYPE_BYTES[t.dtype];
  const byteStart = start * eb;
  const offset = Math.floor(byteStart / align) * align;
  const end = Math.min(t.storage.bytes, Math.max(byteStart + count * eb, offset + 4));
  return { binding: { buffer: t.buffer, offset, size: Math.ceil((end - offset) / 4) * 4 }, skip: (byteStart - offset) / eb };
}
