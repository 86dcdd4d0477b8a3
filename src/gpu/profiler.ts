// Per-kernel GPU time from timestamp queries (`rl4pix bench --profile`, RL4PIX_PROFILE=1). While
// active, every dispatch runs in its own compute pass whose begin/end timestamps are recorded.
import { BufferUsage, MAP_MODE_READ } from "./constants.ts";

const MAX_QUERIES = 4096;

export interface KernelTime {
  name: string;
  calls: number;
  ms: number;
}

export class KernelProfiler {
  private querySet: GPUQuerySet;
  private resolveBuf: GPUBuffer;
  private labels: string[] = [];
  private pending: { buf: GPUBuffer; labels: string[] }[] = [];
  private totals = new Map<string, KernelTime>();

  constructor(private device: GPUDevice) {
    this.querySet = device.createQuerySet({ type: "timestamp", count: MAX_QUERIES, label: "profiler" });
    this.resolveBuf = device.createBuffer({ size: MAX_QUERIES * 8, usage: BufferUsage.QUERY_RESOLVE | BufferUsage.COPY_SRC, label: "profiler-resolve" });
  }

  /** Whether another dispatch fits before the batch must be flushed. */
  get full(): boolean {
    return this.labels.length * 2 >= MAX_QUERIES;
  }

  /** The pass descriptor for the next dispatch, which is recorded under `label`. */
  passFor(label: string): GPUComputePassDescriptor {
    const i = this.labels.length;
    this.labels.push(label);
    return { label, timestampWrites: { querySet: this.querySet, beginningOfPassWriteIndex: 2 * i, endOfPassWriteIndex: 2 * i + 1 } };
  }

  /** Before submitting a batch: resolve its queries into a readable buffer. */
  resolve(encoder: GPUCommandEncoder): void {
    const n = this.labels.length;
    if (n === 0) return;
    encoder.resolveQuerySet(this.querySet, 0, 2 * n, this.resolveBuf, 0);
    const buf = this.device.createBuffer({ size: 2 * n * 8, usage: BufferUsage.MAP_READ | BufferUsage.COPY_DST, label: "profiler-read" });
    encoder.copyBufferToBuffer(this.resolveBuf, 0, buf, 0, 2 * n * 8);
    this.pending.push({ buf, labels: this.labels });
    this.labels = [];
  }

  /** Read every resolved batch (after its submit) into the per-kernel totals. */
  async collect(): Promise<KernelTime[]> {
    for (const { buf, labels } of this.pending.splice(0)) {
      await buf.mapAsync(MAP_MODE_READ);
      const t = new BigUint64Array(buf.getMappedRange().slice(0));
      buf.unmap();
      buf.destroy();
      labels.forEach((name, i) => {
        const ns = Number(t[2 * i + 1] - t[2 * i]);
        const e = this.totals.get(name) ?? { name, calls: 0, ms: 0 };
        e.calls++;
        e.ms += ns / 1e6;
        this.totals.set(name, e);
      });
    }
    return [...this.totals.values()].sort((a, b) => b.ms - a.ms);
  }

  reset(): void {
    this.totals.clear();
  }

  destroy(): void {
    this.querySet.destroy();
    this.resolveBuf.destroy();
  }
}

/** Per-kernel totals as a table, most expensive first (`bench --profile`, RL4PIX_PROFILE=1). */
export function formatProfile(rows: KernelTime[], top = 25): string {
  const total = rows.reduce((a, r) => a + r.ms, 0);
  const calls = rows.reduce((a, r) => a + r.calls, 0);
  const lines = rows.slice(0, top).map((r) =>
    `  ${r.name.padEnd(28)} ${r.ms.toFixed(1).padStart(9)} ms ${(100 * r.ms / total).toFixed(1).padStart(5)}% ${String(r.calls).padStart(6)} calls`
  );
  return [`profile: ${total.toFixed(1)} ms GPU time in ${calls} dispatches`, ...lines].join("\n");
}
