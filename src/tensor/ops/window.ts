// Windows over flat element ranges, so that kernels can process tensors larger than the storage
// binding limit: every window's bindings stay under the limit and start at an offset aligned for
// storage bindings.
import { gpu, type GpuBinding } from "../../gpu/device.ts";
import type { Tensor } from "../tensor.ts";
import { DTYPE_BYTES } from "../tensor.ts";

export interface ElementWindow {
  start: number;
  count: number;
}

/** Windows are whole multiples of this many elements (keeps 2- and 4-byte offsets 256-byte aligned). */
const WINDOW_ALIGN_ELEMS = 256;

/**
 * Split `n` elements into windows such that a binding of `count * maxBytesPerElement` bytes fits the
 * storage binding limit. Returns one empty window for n = 0 callers to skip.
 */
export function elementWindows(n: number, maxBytesPerElement = 4, limitBytes = gpu().maxBinding): ElementWindow[] {
  const fit = Math.floor(limitBytes / maxBytesPerElement);
  const per = Math.max(WINDOW_ALIGN_ELEMS, Math.floor(fit / WINDOW_ALIGN_ELEMS) * WINDOW_ALIGN_ELEMS);
  const out: ElementWindow[] = [];
  for (let start = 0; start < n; start += per) out.push({ start, count: Math.min(per, n - start) });
  return out;
}

/** Binding of elements [start, start + count) of `t`, padded to whole 4-byte words. */
export function windowBinding(t: Tensor, start: number, count: number): GpuBinding {
  const b = DTYPE_BYTES[t.dtype];
  return { buffer: t.buffer, offset: start * b, size: Math.max(4, Math.ceil((count * b) / 4) * 4) };
}

function gcd(a: number, b: number): number {
  while (b) [a, b] = [b, a % b];
  return a;
}

/**
 * Windows over the rows of a [rows, rowElems] table: each window's byte offset is aligned to the
 * device's storage offset alignment and its size fits the binding limit.
 */
export function rowWindows(rows: number, rowBytes: number, limitBytes = gpu().maxBinding): ElementWindow[] {
  const align = gpu().limits.minStorageBufferOffsetAlignment ?? 256;
  const rowsAlign = align / gcd(rowBytes, align);
  const fit = Math.floor(limitBytes / Math.max(rowBytes, 1));
  const per = Math.floor(fit / rowsAlign) * rowsAlign;
  if (per < 1) throw new Error(`a row of ${rowBytes} bytes does not fit a ${limitBytes}-byte storage binding`);
  const out: ElementWindow[] = [];
  for (let start = 0; start < rows; start += per) out.push({ start, count: Math.min(per, rows - start) });
  return out;
}
