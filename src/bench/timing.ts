// Timing helpers for benchmarks: warm-up, then the median of several synchronised runs.
import { gpu } from "../gpu/device.ts";

export interface Timed {
  ms: number;
  compileMs: number;
}

/**
 * Time `fn` (which records GPU work): the first call pays pipeline compilation (reported apart),
 * then `warmup` untimed calls, then the median of `reps` timed calls, each ended by a GPU sync.
 */
export async function timeGpu(fn: () => void, reps = 5, warmup = 1): Promise<Timed> {
  const g = gpu();
  const compileBefore = g.kernels.compileMs;
  fn();
  await g.sync();
  const compileMs = g.kernels.compileMs - compileBefore;
  for (let i = 0; i < warmup; i++) {
    fn();
    await g.sync();
  }
  const times: number[] = [];
  for (let i = 0; i < reps; i++) {
    const t0 = performance.now();
    fn();
    await g.sync();
    times.push(performance.now() - t0);
  }
  times.sort((a, b) => a - b);
  return { ms: times[Math.floor(times.length / 2)], compileMs };
}
