// Timing helpers for benchmarks: warm-up, then the median of several synchronised runs.
import process from "node:process";
import { gpu } from "../gpu/device.ts";

export interface Timed {
  ms: number;
  compileMs: number;
}

/**
 * Time `fn` (which records GPU work): the first call pays pipeline compilation (reported apart),
 * then one untimed call, then the median of `reps` timed reps, each ended by a GPU sync (on a fast
 * GPU a rep is several calls back to back: see timeCalls).
 */
export async function timeGpu(fn: () => void, reps = 5): Promise<Timed> {
  const compileBefore = gpu().kernels.compileMs;
  const t = await timeCalls(fn, reps);
  return { ms: t.ms, compileMs: gpu().kernels.compileMs - compileBefore };
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

/** A timed rep lasts at least this long: on a fast GPU one call is shorter than a host round trip. */
const MIN_REP_MS = 25;

/**
 * Wall time of `fn` (GPU work, synchronised): first call, then the median of `reps` after one warm-up.
 * When one call takes under MIN_REP_MS (a real GPU), each rep records enough calls back to back to
 * last that long and reports the time per call, so host round trips do not dominate.
 * `cores`: this process's CPU time over wall time during the timed runs (on lavapipe the kernels run
 * on our own threads, so less than the core count means other processes took the CPU).
 */
export async function timeCalls(fn: () => void, reps: number): Promise<{ firstMs: number; ms: number; cores: number; callsPerRep: number }> {
  const g = gpu();
  await g.sync();
  let t0 = performance.now();
  fn();
  await g.sync();
  const firstMs = performance.now() - t0;
  t0 = performance.now();
  fn();
  await g.sync();
  const warmMs = performance.now() - t0;
  const calls = warmMs >= MIN_REP_MS ? 1 : Math.min(1000, Math.ceil(MIN_REP_MS / Math.max(warmMs, 0.01)));
  const times: number[] = [];
  const cpu0 = process.cpuUsage();
  for (let i = 0; i < reps; i++) {
    t0 = performance.now();
    for (let c = 0; c < calls; c++) fn();
    await g.sync();
    times.push((performance.now() - t0) / calls);
  }
  const cpu = process.cpuUsage(cpu0);
  const wall = times.reduce((x, y) => x + y, 0) * calls;
  times.sort((a, b) => a - b);
  return { firstMs, ms: times[Math.floor(times.length / 2)], cores: (cpu.user + cpu.system) / 1000 / wall, callsPerRep: calls };
}

/**
 * Keep a real GPU busy for `ms` before the first timed kernel: its clocks ramp up from idle, which
 * made the first rows of a run up to 1.5x slower than the same kernel timed later.
 */
export async function warmUpGpu(fn: () => void, ms = 500): Promise<void> {
  const g = gpu();
  const t0 = performance.now();
  while (performance.now() - t0 < ms) {
    for (let i = 0; i < 8; i++) fn();
    await g.sync();
  }
}
