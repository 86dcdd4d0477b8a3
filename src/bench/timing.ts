// Timing helpers for benchmarks: warm-up, then the median of several synchronised runs.
import process from "node:process";
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

/** Deterministic values in [-0.5, 0.5) (an LCG): benchmark and self-test inputs. */
export function pseudoRandom(n: number, seed: number): Float32Array {
  const out = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = s / 4294967296 - 0.5;
  }
  return out;
}

/**
 * Wall time of `fn` (GPU work, synchronised): first call, then the median of `reps` after one warm-up.
 * `cores`: this process's CPU time over wall time during the timed runs (on lavapipe the kernels run
 * on our own threads, so less than the core count means other processes took the CPU).
 */
export async function timeCalls(fn: () => void, reps: number): Promise<{ firstMs: number; ms: number; cores: number }> {
  const g = gpu();
  await g.sync();
  let t0 = performance.now();
  fn();
  await g.sync();
  const firstMs = performance.now() - t0;
  fn();
  await g.sync();
  const times: number[] = [];
  const cpu0 = process.cpuUsage();
  for (let i = 0; i < reps; i++) {
    t0 = performance.now();
    fn();
    await g.sync();
    times.push(performance.now() - t0);
  }
  const cpu = process.cpuUsage(cpu0);
  const wall = times.reduce((x, y) => x + y, 0);
  times.sort((a, b) => a - b);
  return { firstMs, ms: times[Math.floor(times.length / 2)], cores: (cpu.user + cpu.system) / 1000 / wall };
}
