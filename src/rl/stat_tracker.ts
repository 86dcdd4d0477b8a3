// Per-prompt reward normalisation for DDPO (SPEC §4), with the semantics of ddpo-pytorch's
// PerPromptStatTracker:
//
// - every key (the caller builds it with `sampleKey(img_id, turn, instruction)`) owns a buffer of its
//   most recent `bufferSize` rewards, kept across epochs;
// - `update(keys, rewards)` first appends each key's rewards of this batch to its buffer (in batch
//   order, dropping the oldest beyond `bufferSize`), then normalises them: while the key's buffer
//   holds fewer than `minCount` values, with the mean and std of the WHOLE current batch (every key's
//   rewards); afterwards with the buffer's mean and std;
// - advantage = (r − mean) / (std + 1e-6), std the population std (ddof 0, numpy's default, which
//   ddpo-pytorch uses through `np.std`).
//
// Arithmetic is float64 and reproduces numpy 2's float64 `np.mean` / `np.std` to the bit: sums use
// numpy's pairwise summation (blocks of 8 partial sums, recursive halving above 128 values), the mean
// is sum / n, the variance sum((x − mean)²) / n. ddpo-pytorch itself feeds float32 arrays; we keep
// float64 throughout (the difference is far below anything the training can notice).
//
// The state serialises to plain JSON (`toJSON` / `fromJSON`) for checkpoints: float64 values survive
// JSON exactly (shortest round-trip formatting), and -0 is stored as +0 when it enters a buffer, so a
// resumed run computes bit-identical advantages.
import { UserError } from "../errors.ts";

/** The added constant of ddpo-pytorch's advantage denominator. */
export const STD_EPS = 1e-6;

/** numpy's pairwise summation of a[lo, lo + n) (numpy 2.x `add.reduce` on a contiguous float64 array). */
function pairwiseSum(a: ArrayLike<number>, lo: number, n: number): number {
  if (n < 8) {
    let res = -0;
    for (let i = 0; i < n; i++) res += a[lo + i];
    return res;
  }
  if (n <= 128) {
    const r = [a[lo], a[lo + 1], a[lo + 2], a[lo + 3], a[lo + 4], a[lo + 5], a[lo + 6], a[lo + 7]];
    let i = 8;
    for (; i < n - (n % 8); i += 8) {
      for (let j = 0; j < 8; j++) r[j] += a[lo + i + j];
    }
    let res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
    for (; i < n; i++) res += a[lo + i];
    return res;
  }
  let n2 = Math.floor(n / 2);
  n2 -= n2 % 8;
  return pairwiseSum(a, lo, n2) + pairwiseSum(a, lo + n2, n - n2);
}

/** `np.mean(a)` for a float64 array (NaN for an empty one, as numpy). */
export function npMean(a: ArrayLike<number>): number {
  return pairwiseSum(a, 0, a.length) / a.length;
}

/** `np.std(a)` (ddof 0) for a float64 array. */
export function npStd(a: ArrayLike<number>): number {
  const n = a.length;
  const mean = npMean(a);
  const sq = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const d = a[i] - mean;
    sq[i] = d * d;
  }
  return Math.sqrt(pairwiseSum(sq, 0, n) / n);
}

/**
 * The stat-tracker key of one sample: unambiguous for any strings (JSON of the triple), so that
 * ("a", 1, "b c") and ("a 1", …) never collide.
 */
export function sampleKey(imgId: string, turn: number, instruction: string): string {
  return JSON.stringify([imgId, turn, instruction]);
}

/** Clip advantages to [−max, max] (ddpo-pytorch's `adv_clip_max`); returns a new array. */
export function clipAdvantages(adv: ArrayLike<number>, max: number): number[] {
  if (!(max >= 0)) throw new Error(`clipAdvantages: max must be >= 0, got ${max}`);
  return Array.from(adv, (a) => Math.min(max, Math.max(-max, a)));
}

export interface KeyStats {
  count: number;
  mean: number;
  std: number;
}

/** The checkpointed state: the sizes and every key's buffer, oldest value first. */
export interface StatTrackerState {
  buffer_size: number;
  min_count: number;
  buffers: Record<string, number[]>;
}

export class PerPromptStatTracker {
  private readonly buffers = new Map<string, number[]>();

  constructor(readonly bufferSize: number, readonly minCount: number) {
    if (!Number.isInteger(bufferSize) || bufferSize < 1) throw new Error(`PerPromptStatTracker: buffer_size must be an integer >= 1, got ${bufferSize}`);
    if (!Number.isInteger(minCount) || minCount < 1) throw new Error(`PerPromptStatTracker: min_count must be an integer >= 1, got ${minCount}`);
  }

  /**
   * Record one batch of rewards and return their advantages (same order as the inputs). Rewards must
   * be finite: a NaN would poison its key's buffer for `bufferSize` more updates.
   */
  update(keys: readonly string[], rewards: ArrayLike<number>): number[] {
    if (keys.length !== rewards.length) {
      throw new Error(`PerPromptStatTracker.update: ${keys.length} keys but ${rewards.length} rewards`);
    }
    const n = keys.length;
    for (let i = 0; i < n; i++) {
      if (!Number.isFinite(rewards[i])) throw new Error(`PerPromptStatTracker.update: reward ${rewards[i]} of ${keys[i]} is not finite`);
    }
    const batch = Float64Array.from(rewards);
    let batchMean = NaN;
    let batchStd = NaN;
    const advantages = new Array<number>(n);
    // indices of each key in the batch, in first-appearance order (numpy sorts the keys; every key is
    // independent of the others, so the order does not change any value)
    const groups = new Map<string, number[]>();
    for (let i = 0; i < n; i++) {
      const g = groups.get(keys[i]);
      if (g) g.push(i);
      else groups.set(keys[i], [i]);
    }
    for (const [key, idx] of groups) {
      let buf = this.buffers.get(key);
      if (!buf) {
        buf = [];
        this.buffers.set(key, buf);
      }
      for (const i of idx) buf.push(batch[i] + 0); // + 0 turns -0 into +0 (JSON cannot keep -0)
      if (buf.length > this.bufferSize) buf.splice(0, buf.length - this.bufferSize);
      let mean: number;
      let std: number;
      if (buf.length < this.minCount) {
        if (Number.isNaN(batchMean)) {
          batchMean = npMean(batch);
          batchStd = npStd(batch);
        }
        mean = batchMean;
        std = batchStd + STD_EPS;
      } else {
        mean = npMean(buf);
        std = npStd(buf) + STD_EPS;
      }
      for (const i of idx) advantages[i] = (batch[i] - mean) / std;
    }
    return advantages;
  }

  /** Per key: how many rewards its buffer holds, and their mean and std. */
  stats(): Record<string, KeyStats> {
    const out: Record<string, KeyStats> = {};
    for (const [k, v] of this.buffers) out[k] = { count: v.length, mean: npMean(v), std: npStd(v) };
    return out;
  }

  /** Number of distinct keys seen. */
  get size(): number {
    return this.buffers.size;
  }

  toJSON(): StatTrackerState {
    const buffers: Record<string, number[]> = {};
    for (const [k, v] of this.buffers) buffers[k] = [...v];
    return { buffer_size: this.bufferSize, min_count: this.minCount, buffers };
  }

  /**
   * Rebuild a tracker from `toJSON`'s output (e.g. read back from a checkpoint). `source` names the
   * file in error messages; a malformed state is a UserError.
   */
  static fromJSON(state: unknown, source = "stat tracker state"): PerPromptStatTracker {
    const bad = (what: string): never => {
      throw new UserError(`${source}: per-prompt stat tracker state ${what}`);
    };
    if (state === null || typeof state !== "object" || Array.isArray(state)) bad("is not an object");
    const s = state as Record<string, unknown>;
    const bufferSize = s.buffer_size;
    const minCount = s.min_count;
    if (!Number.isInteger(bufferSize) || (bufferSize as number) < 1) bad(`has a bad buffer_size ${JSON.stringify(bufferSize)}`);
    if (!Number.isInteger(minCount) || (minCount as number) < 1) bad(`has a bad min_count ${JSON.stringify(minCount)}`);
    const buffers = s.buffers;
    if (buffers === null || typeof buffers !== "object" || Array.isArray(buffers)) bad("has no buffers object");
    const t = new PerPromptStatTracker(bufferSize as number, minCount as number);
    for (const [k, v] of Object.entries(buffers as Record<string, unknown>)) {
      if (!Array.isArray(v) || !v.every((x) => typeof x === "number" && Number.isFinite(x))) {
        bad(`has a bad buffer for key ${JSON.stringify(k)}`);
      }
      const values = v as number[];
      if (values.length === 0 || values.length > t.bufferSize) bad(`holds ${values.length} values for key ${JSON.stringify(k)} (buffer_size ${t.bufferSize})`);
      t.buffers.set(k, values.map((x) => x + 0));
    }
    return t;
  }
}
