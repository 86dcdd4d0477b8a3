// Size-bucketed pool of storage buffers, with the byte counters that leak tests and benchmarks read.

import { BufferUsage } from "./constants.ts";

export const STORAGE_USAGE = BufferUsage.STORAGE | BufferUsage.COPY_SRC | BufferUsage.COPY_DST;

/** Round a request up to its bucket: powers of two up to 1 MiB, then 8 buckets per octave (<= 12.5% waste). */
export function bucketBytes(bytes: number): number {
  const b = Math.max(16, Math.ceil(bytes / 16) * 16);
  const e = Math.ceil(Math.log2(b));
  if (e <= 20) return 2 ** e;
  const step = 2 ** (e - 4);
  return Math.ceil(b / step) * step;
}

export interface PoolStats {
  /** Bytes in buffers handed out and not yet released. */
  liveBytes: number;
  /** Bytes of every buffer this pool created and has not destroyed (live + free). */
  allocatedBytes: number;
  /** The most `allocatedBytes` has been since the last `resetPeak`. */
  peakAllocatedBytes: number;
  liveBuffers: number;
  freeBuffers: number;
}

export class BufferPool {
  private free = new Map<number, GPUBuffer[]>();
  private sizeOf = new WeakMap<GPUBuffer, number>();
  private stats: PoolStats = { liveBytes: 0, allocatedBytes: 0, peakAllocatedBytes: 0, liveBuffers: 0, freeBuffers: 0 };
  private serial = 0;

  constructor(private device: GPUDevice, private maxBufferSize: number) {}

  acquire(bytes: number, label: string): GPUBuffer {
    const size = bucketBytes(bytes);
    if (size > this.maxBufferSize) {
      throw new Error(`${label}: ${bytes} bytes exceed the adapter's maxBufferSize (${this.maxBufferSize})`);
    }
    const list = this.free.get(size);
    let buf = list?.pop();
    if (buf) {
      this.stats.freeBuffers--;
    } else {
      buf = this.device.createBuffer({ size, usage: STORAGE_USAGE, label: `${label}#${this.serial++}` });
      this.sizeOf.set(buf, size);
      this.stats.allocatedBytes += size;
      if (this.stats.allocatedBytes > this.stats.peakAllocatedBytes) this.stats.peakAllocatedBytes = this.stats.allocatedBytes;
    }
    this.stats.liveBytes += size;
    this.stats.liveBuffers++;
    return buf;
  }

  release(buf: GPUBuffer): void {
    const size = this.sizeOf.get(buf);
    if (size === undefined) throw new Error(`buffer ${buf.label} does not belong to the pool`);
    this.stats.liveBytes -= size;
    this.stats.liveBuffers--;
    this.stats.freeBuffers++;
    let list = this.free.get(size);
    if (!list) this.free.set(size, (list = []));
    list.push(buf);
  }

  /** Destroy every free buffer (after a phase that needed much memory). */
  trim(): void {
    for (const list of this.free.values()) {
      for (const buf of list) {
        this.stats.allocatedBytes -= this.sizeOf.get(buf)!;
        buf.destroy();
      }
    }
    this.free.clear();
    this.stats.freeBuffers = 0;
  }

  resetPeak(): void {
    this.stats.peakAllocatedBytes = this.stats.allocatedBytes;
  }

  snapshot(): PoolStats {
    return { ...this.stats };
  }
}
