// The training sample stream: the dataset read in order, again and again, through a seeded shuffle
// buffer. Its state (samples consumed, the buffer's sample indices, the RNG) is small, so a resumed
// run draws exactly the samples an uninterrupted one would.
import type { EditDataset, EditSample } from "../io/datasets/index.ts";
import { Prng } from "../data/prng.ts";
import { UserError } from "../errors.ts";

export interface StreamState {
  /** Samples taken from the dataset so far (over all passes). */
  consumed: number;
  /** Global indices (pass * size + index) of the samples in the shuffle buffer. */
  buffer: number[];
  rng: number[];
}

export class SampleStream {
  private iter: AsyncIterator<EditSample> | null = null;
  private pass = 0;
  private buffer: { global: number; sample: EditSample }[] = [];
  private consumed = 0;
  private rng: Prng;
  readonly bufferSize: number;

  constructor(private dataset: EditDataset, seed: number, bufferSize = 256) {
    if (dataset.size === 0) throw new UserError(`${dataset.path}: the dataset is empty`);
    this.bufferSize = Math.max(1, Math.min(bufferSize, dataset.size));
    this.rng = new Prng(seed);
  }

  private async pull(): Promise<{ global: number; sample: EditSample }> {
    for (;;) {
      this.iter ??= this.dataset.samples();
      const r = await this.iter.next();
      if (!r.done) {
        const global = this.pass * this.dataset.size + r.value.index;
        this.consumed++;
        return { global, sample: r.value };
      }
      this.iter = null;
      this.pass++;
    }
  }

  /** The next `n` samples (each drawn uniformly from the shuffle buffer, which is then refilled). */
  async take(n: number): Promise<EditSample[]> {
    const out: EditSample[] = [];
    while (this.buffer.length < this.bufferSize) this.buffer.push(await this.pull());
    for (let i = 0; i < n; i++) {
      const k = this.rng.int(0, this.buffer.length - 1);
      out.push(this.buffer[k].sample);
      this.buffer[k] = await this.pull();
    }
    return out;
  }

  state(): StreamState {
    return { consumed: this.consumed, buffer: this.buffer.map((b) => b.global), rng: this.rng.state() };
  }

  /** Re-read the dataset up to where `s` was taken, keeping the buffered samples. */
  async restore(s: StreamState): Promise<void> {
    this.iter = null;
    this.pass = 0;
    this.consumed = 0;
    const want = new Map(s.buffer.map((g, i) => [g, i]));
    const buf: ({ global: number; sample: EditSample } | undefined)[] = new Array(s.buffer.length);
    while (this.consumed < s.consumed) {
      const p = await this.pull();
      const slot = want.get(p.global);
      if (slot !== undefined) buf[slot] = p;
    }
    if (buf.some((b) => !b)) throw new Error("sample stream: the checkpoint's shuffle buffer does not match the dataset");
    this.buffer = buf as { global: number; sample: EditSample }[];
    this.rng = Prng.fromState(s.rng);
  }
}
