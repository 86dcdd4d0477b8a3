// Optimiser steps on the GPU: AdamW exactly as torch.optim.AdamW (decoupled weight decay, bias-corrected
// moments, no amsgrad) and global gradient-norm clipping as torch.nn.utils.clip_grad_norm_. Both
// update tensors in place and read nothing back. The AdamW state round-trips through host arrays
// for checkpoints.
import src from "../../../wgsl/optim.wgsl" with { type: "text" };
import { gpu, type GpuBinding, type Uniforms } from "../../gpu/device.ts";
import { keep } from "../scope.ts";
import { Tensor, shapeStr } from "../tensor.ts";
import { zeros } from "./elementwise.ts";
import { elementWindows, windowBinding } from "./window.ts";

const WG = 256;
/** Elements each thread of the norm's first stage sums (before its workgroup's tree reduction). */
const SUMSQ_PER_THREAD = 8;
const SUMSQ_MAX_GROUPS = 256;

interface OptimUniforms {
  n: number;
  base?: number;
  groups?: number;
  maxNorm?: number;
  decay?: number;
  beta1?: number;
  beta2?: number;
  stepSize?: number;
  bc2Sqrt?: number;
  eps?: number;
}

function optimUniforms(u: OptimUniforms): Uniforms {
  const b1 = u.beta1 ?? 0;
  const b2 = u.beta2 ?? 0;
  return ["uuufffffffff", u.n, u.base ?? 0, u.groups ?? 0, u.maxNorm ?? 0, u.decay ?? 1, b1, b2, 1 - b1, 1 - b2, u.stepSize ?? 0, u.bc2Sqrt ?? 1, u.eps ?? 0];
}

// ---------------------------------------------------------------------------------------- AdamW

export interface AdamWOptions {
  lr: number;
  beta1?: number;
  beta2?: number;
  eps?: number;
  /** Decoupled weight decay (torch's default 0.01). */
  weightDecay?: number;
  /** The 1-based step number for bias correction; default: the state's step + 1. */
  step?: number;
}

/** Moments per parameter (by position in the parameter list), created on a parameter's first step. */
export interface AdamWState {
  step: number;
  m: (Tensor | null)[];
  v: (Tensor | null)[];
}

export function createAdamWState(): AdamWState {
  return { step: 0, m: [], v: [] };
}

/**
 * One AdamW step over `params` (in place). Parameters without a `.grad` are skipped, as in torch.
 * Sets `state.step` to the step used.
 */
export function adamW(params: readonly Tensor[], state: AdamWState, opts: AdamWOptions): void {
  const beta1 = opts.beta1 ?? 0.9;
  const beta2 = opts.beta2 ?? 0.999;
  const eps = opts.eps ?? 1e-8;
  const wd = opts.weightDecay ?? 0.01;
  const step = opts.step ?? state.step + 1;
  if (!(step >= 1)) throw new Error(`adamW: step ${step} must be >= 1`);
  const g = gpu();
  const k = g.kernel("adamw", src, { ADAMW: true });
  const uniform = {
    decay: 1 - opts.lr * wd,
    beta1,
    beta2,
    stepSize: opts.lr / (1 - beta1 ** step),
    bc2Sqrt: Math.sqrt(1 - beta2 ** step),
    eps,
  };
  params.forEach((p, i) => {
    const grad = p.grad;
    if (!grad) return;
    if (p.dtype !== "f32" || grad.dtype !== "f32" || grad.size !== p.size) {
      throw new Error(`adamW: parameter ${i} (${p.label}) ${shapeStr(p.shape)} ${p.dtype} has gradient ${shapeStr(grad.shape)} ${grad.dtype}; both must be f32 of one shape`);
    }
    const m = (state.m[i] ??= keep(zeros(p.shape, "adamw_m")));
    const v = (state.v[i] ??= keep(zeros(p.shape, "adamw_v")));
    for (const w of elementWindows(p.size, 4)) {
      const bind = (t: Tensor) => windowBinding(t, w.start, w.count);
      g.dispatch(k, [bind(p), bind(grad), bind(m), bind(v)], optimUniforms({ n: w.count, ...uniform }), g.grid(Math.ceil(w.count / WG)));
    }
  });
  state.step = step;
}

/** Host copy of an AdamW state (checkpoints). Entries stay null for parameters never stepped. */
export interface AdamWStateData {
  step: number;
  m: (Float32Array | null)[];
  v: (Float32Array | null)[];
}

export async function exportAdamWState(state: AdamWState): Promise<AdamWStateData> {
  const read = async (t: Tensor | null) => (t ? ((await t.read()) as Float32Array) : null);
  const n = Math.max(state.m.length, state.v.length);
  const m: (Float32Array | null)[] = [];
  const v: (Float32Array | null)[] = [];
  for (let i = 0; i < n; i++) {
    m.push(await read(state.m[i] ?? null));
    v.push(await read(state.v[i] ?? null));
  }
  return { step: state.step, m, v };
}

/** Rebuild a state for `params` (the same list, in the same order, as when it was exported). */
export function importAdamWState(data: AdamWStateData, params: readonly Tensor[]): AdamWState {
  const upload = (arr: Float32Array | null | undefined, i: number, what: string) => {
    if (!arr) return null;
    const p = params[i];
    if (!p || arr.length !== p.size) {
      throw new Error(`importAdamWState: ${what}[${i}] has ${arr.length} values, parameter is ${p ? shapeStr(p.shape) : "missing"}`);
    }
    return keep(Tensor.from(arr, p.shape, "f32", `adamw_${what}`));
  };
  return { step: data.step, m: data.m.map((a, i) => upload(a, i, "m")), v: data.v.map((a, i) => upload(a, i, "v")) };
}

export function disposeAdamWState(state: AdamWState): void {
  for (const t of [...state.m, ...state.v]) t?.dispose();
  state.m = [];
  state.v = [];
}

// ---------------------------------------------------------------------------------------- norms

/** The global L2 norm of every `.grad` of `params` as a [1] tensor (two-stage reduction, no readback). */
export function gradNorm(params: readonly Tensor[]): Tensor {
  const g = gpu();
  // Stage 1 plan: one dispatch per window of each gradient, each writing `groups` partial sums.
  const plan: { bind: GpuBinding; n: number; base: number; groups: number }[] = [];
  let total = 0;
  for (const p of params) {
    const grad = p.grad;
    if (!grad) continue;
    if (grad.dtype !== "f32") throw new Error(`gradNorm: gradient of ${p.label || "a parameter"} ${shapeStr(grad.shape)} is ${grad.dtype}, not f32`);
    for (const w of elementWindows(grad.size, 4)) {
      const groups = Math.min(SUMSQ_MAX_GROUPS, Math.ceil(w.count / (WG * SUMSQ_PER_THREAD)));
      plan.push({ bind: windowBinding(grad, w.start, w.count), n: w.count, base: total, groups });
      total += groups;
    }
  }
  const norm = zeros([1], "grad_norm");
  if (total === 0) return norm;
  const partials = Tensor.empty([total], "f32", "grad_norm_partials");
  const kSum = g.kernel("grad_sumsq", src, { SUMSQ: true, REDUCE: true });
  for (const s of plan) g.dispatch(kSum, [s.bind, partials.binding()], optimUniforms({ n: s.n, base: s.base, groups: s.groups }), [s.groups]);
  const kNorm = g.kernel("grad_norm", src, { NORM: true, REDUCE: true });
  g.dispatch(kNorm, [partials.binding(), norm.binding()], optimUniforms({ n: total }), [1]);
  partials.dispose();
  return norm;
}

/**
 * torch.nn.utils.clip_grad_norm_: scale every `.grad` by min(maxNorm / (norm + 1e-6), 1) in place,
 * where norm is the global L2 norm over all of them. Returns that norm (before clipping) as a [1]
 * tensor; `await t.item()` for a number.
 */
export function clipGradNorm(params: readonly Tensor[], maxNorm: number): Tensor {
  const norm = gradNorm(params);
  const g = gpu();
  const k = g.kernel("grad_clip", src, { SCALE: true });
  for (const p of params) {
    const grad = p.grad;
    if (!grad) continue;
    for (const w of elementWindows(grad.size, 4)) {
      g.dispatch(k, [windowBinding(grad, w.start, w.count), norm.binding()], optimUniforms({ n: w.count, maxNorm }), g.grid(Math.ceil(w.count / WG)));
    }
  }
  return norm;
}
