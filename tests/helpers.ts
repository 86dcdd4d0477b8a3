// Shared test machinery: GPU set-up per file, seeded random data, closeness checks, and gradient
// checks of GPU backward passes against central finite differences of float64 CPU references.
import { afterAll, beforeAll, expect, setDefaultTimeout } from "bun:test";
import { destroyGpu, gpu, initGpu } from "../src/gpu/device.ts";
import { Tensor, backward, clearTape, type DType } from "../src/tensor/index.ts";
import { f16BitsToF32, f32ToF16Bits } from "../src/tensor/f16.ts";

/** Acquire the GPU before the file's tests and destroy it afterwards. */
export function useGpu(): void {
  // lavapipe runs WebGPU on the CPU: some kernel tests take seconds on 2 cores.
  setDefaultTimeout(120_000);
  beforeAll(async () => {
    await initGpu();
  });
  afterAll(async () => {
    await gpu().sync();
    destroyGpu();
  });
}

/** Deterministic PRNG (mulberry32). */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Standard normal samples as float64 (values exactly representable in f32, so CPU and GPU see the same inputs). */
export function randn(n: number, seed: number, std = 1, mean = 0): Float64Array {
  const r = rng(seed);
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const u = Math.max(r(), 1e-12);
    const v = r();
    out[i] = Math.fround(mean + std * Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v));
  }
  return out;
}

export function uniform(n: number, seed: number, lo = 0, hi = 1): Float64Array {
  const r = rng(seed);
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) out[i] = Math.fround(lo + (hi - lo) * r());
  return out;
}

export function prod(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** Values rounded to the nearest f16 (ties to even), as float64. */
export function roundF16(v: Float64Array): Float64Array {
  return v.map((x) => f16BitsToF32(f32ToF16Bits(x)));
}

export function toGpu(data: Float64Array | number[], shape: readonly number[], dtype: DType = "f32"): Tensor {
  return Tensor.from(Float32Array.from(data), shape, dtype);
}

export interface Tol {
  atol?: number;
  rtol?: number;
}

/** Assert |a - e| <= atol + rtol*|e| elementwise; the failure message names the worst element. */
export function expectClose(actual: ArrayLike<number>, expected: ArrayLike<number>, tol: Tol, label = ""): void {
  const atol = tol.atol ?? 1e-5;
  const rtol = tol.rtol ?? 0;
  expect(actual.length).toBe(expected.length);
  let worst = -1;
  let worstExcess = 0;
  let maxErr = 0;
  for (let i = 0; i < actual.length; i++) {
    const err = Math.abs(actual[i] - expected[i]);
    if (!(err <= atol + rtol * Math.abs(expected[i]))) {
      const excess = Number.isNaN(err) ? Infinity : err - (atol + rtol * Math.abs(expected[i]));
      if (worst < 0 || excess > worstExcess) {
        worst = i;
        worstExcess = excess;
      }
    }
    if (err > maxErr) maxErr = err;
  }
  if (worst >= 0) {
    throw new Error(`${label}: element ${worst} is ${actual[worst]}, expected ${expected[worst]} (atol ${atol}, rtol ${rtol}; max abs error ${maxErr})`);
  }
}

/** Largest absolute difference. */
export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

export interface GradCase {
  /**
   * Input data (float64, f32-representable), shapes and dtypes (default f32; f16 inputs are rounded
   * to f16 first, for the GPU and the reference alike, and their gradient must come back in f16).
   */
  inputs: { data: Float64Array; shape: number[]; grad?: boolean; dtype?: DType }[];
  /** The op on the GPU. */
  gpuFn: (xs: Tensor[]) => Tensor;
  /** Float64 CPU reference of the same op. */
  refFn: (xs: Float64Array[]) => Float64Array;
  /** Finite-difference step. */
  h?: number;
  /** Tolerances for the forward output and the gradients. */
  fwd?: Tol;
  bwd?: Tol;
  seed?: number;
  label?: string;
}

/**
 * Check forward against the reference, then backward: with a random upstream gradient G, the GPU's
 * input gradients must match d/dx sum(ref(x) * G) by central differences in float64.
 */
export async function gradCheck(c0: GradCase): Promise<void> {
  const c = { ...c0, inputs: c0.inputs.map((i) => (i.dtype === "f16" ? { ...i, data: roundF16(i.data) } : i)) };
  const label = c.label ?? "op";
  const xs = c.inputs.map((inp) => toGpu(inp.data, inp.shape, inp.dtype ?? "f32").requireGrad(inp.grad !== false));
  const y = c.gpuFn(xs);
  const refY = c.refFn(c.inputs.map((i) => i.data));
  expectClose(await y.read(), refY, c.fwd ?? { atol: 1e-5, rtol: 1e-5 }, `${label} forward`);
  // An f16 output takes an f16 upstream gradient (the reference sees the same rounded values).
  const G = y.dtype === "f16" ? roundF16(randn(y.size, c.seed ?? 99)) : randn(y.size, c.seed ?? 99);
  const gT = toGpu(G, y.shape, y.dtype);
  backward(y, gT);
  const h = c.h ?? 1e-3;
  for (let k = 0; k < c.inputs.length; k++) {
    if (c.inputs[k].grad === false) continue;
    const base = c.inputs[k].data;
    const numeric = new Float64Array(base.length);
    for (let i = 0; i < base.length; i++) {
      const args = c.inputs.map((inp) => inp.data);
      const plus = Float64Array.from(base);
      plus[i] += h;
      const minus = Float64Array.from(base);
      minus[i] -= h;
      args[k] = plus;
      const yp = c.refFn(args);
      args[k] = minus;
      const ym = c.refFn(args);
      let s = 0;
      for (let j = 0; j < G.length; j++) s += (yp[j] - ym[j]) * G[j];
      numeric[i] = s / (2 * h);
    }
    const grad = xs[k].grad;
    if (!grad) throw new Error(`${label}: input ${k} got no gradient`);
    if (grad.dtype !== xs[k].dtype) throw new Error(`${label}: input ${k} is ${xs[k].dtype} but its gradient is ${grad.dtype}`);
    expectClose(await grad.read(), numeric, c.bwd ?? { atol: 1e-3, rtol: 1e-3 }, `${label} grad of input ${k}`);
  }
  for (const x of xs) x.dispose();
  y.dispose();
  gT.dispose();
  clearTape();
}
