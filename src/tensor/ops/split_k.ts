// Split-K: where an output's tile grid is too small to occupy a large GPU and K is long (the SD UNet's
// 1280-channel convs at 16x16 and 8x8, its 8x8 attention projections, LoRA weight gradients summed
// over thousands of rows), the reduction is cut into S chunks. Each workgroup sums its tile over
// one chunk into an f32 scratch buffer [S, ...output]; a second kernel sums the S partials in f32
// and applies the epilogue (bias, addend, activation, accumulation, the f16 rounding) once.
// This file decides S, per adapter like the tile shapes: matmul_gemm.ts and conv_gemm.ts ask it.
import type { AdapterDescription, Gpu } from "../../gpu/device.ts";
import { adapterClassOf, recordTuning } from "../../gpu/tuning.ts";

export interface SplitKPolicy {
  /** Workgroups that keep the GPU busy: a grid under half of this is split toward it. */
  targetGroups: number;
  /** Fewest K elements per chunk: below, the partial stores and the sum cost more than the idle SMs. */
  minChunk: number;
  maxSplits: number;
}

/**
 * Real GPUs: WebGPU does not report the number of SMs, so the target is sized for the largest GPU
 * we have been lent (H100 / H200: 132 SMs), two of our 256-invocation tile workgroups per SM. On a
 * smaller GPU a split is then a little larger than needed, which costs only partial traffic.
 */
const GPU_POLICY: SplitKPolicy = { targetGroups: 264, minChunk: 256, maxSplits: 16 };

/**
 * The split policy for an adapter; null where splitting never pays by default: on CPU rasterisers
 * (lavapipe) every workgroup runs on the same few CPU threads, so a small grid idles nothing and a
 * split only adds the partial stores (each a per-lane loop there).
 */
export function splitKPolicy(info: AdapterDescription): SplitKPolicy | null {
  return adapterClassOf(info) === "cpu" ? null : GPU_POLICY;
}

/** One launch's reduction as the split sees it. */
export interface SplitProblem {
  /** Workgroups of the unsplit dispatch (output tiles times batch). */
  groups: number;
  /** Length of the reduction. */
  k: number;
  /** The kernel's K step: every chunk but the last is a multiple of it. */
  step: number;
  /** Bytes of one chunk's f32 partials (the whole output in f32). */
  partialBytes: number;
  /** Most chunks the launch can dispatch (e.g. images x chunks along one grid dimension). */
  cap?: number;
}

/** `splits` chunks of `chunk` K elements each (the last one shorter); splits 1: no split. */
export interface SplitPlan {
  splits: number;
  chunk: number;
}

/** The split the policy asks for (1: none), before the forced modes and the memory cap. */
export function autoSplits(policy: SplitKPolicy | null, p: SplitProblem): number {
  if (!policy || p.groups <= 0 || 2 * p.groups >= policy.targetGroups) return 1;
  const byK = Math.floor(p.k / Math.max(policy.minChunk, p.step));
  return Math.max(1, Math.min(Math.floor(policy.targetGroups / p.groups), byK, policy.maxSplits));
}

/**
 * Chunks for `splits` over k: each a multiple of `step`, the count recomputed so none is empty
 * (a split wider than the K steps gives one step per chunk).
 */
export function planSplit(splits: number, k: number, step: number): SplitPlan {
  const steps = Math.ceil(k / step);
  const s = Math.max(1, Math.min(Math.floor(splits), steps));
  if (s <= 1) return { splits: 1, chunk: k };
  const chunk = Math.ceil(steps / s) * step;
  return { splits: Math.ceil(k / chunk), chunk };
}

/** undefined: not read yet; null: the adapter's policy; a number: forced (1 turns splitting off). */
let forced: number | null | undefined;

/** RL4PIX_SPLIT_K: unset or "auto" (the policy), "off" (= 1), or a split factor N >= 1 forced everywhere a kernel can split. */
export function parseSplitEnv(v: string | undefined): number | null {
  if (v === undefined || v === "" || v === "auto") return null;
  if (v === "off") return 1;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new Error(`RL4PIX_SPLIT_K must be auto, off or a whole number >= 1, got '${v}'`);
  return n;
}

function forcedSplit(): number | null {
  if (forced === undefined) {
    const env = (globalThis as { process?: { env?: Record<string, string | undefined> } }).process?.env;
    forced = parseSplitEnv(env?.RL4PIX_SPLIT_K);
  }
  return forced;
}

/**
 * Force a split factor for every launch whose kernel can split (tests, `rl4pix bench`): 1 turns
 * splitting off, "auto" restores the adapter's policy (ignoring RL4PIX_SPLIT_K).
 */
export function setSplitK(mode: number | "auto"): void {
  if (mode !== "auto" && (!Number.isInteger(mode) || mode < 1)) throw new Error(`setSplitK: a whole number >= 1 or "auto", got ${mode}`);
  forced = mode === "auto" ? null : mode;
}

const described = new WeakSet<Gpu>();

/**
 * The split for one launch: `forced` (a number) or the policy's choice, cut to `cap` and until the
 * partials fit one storage binding of `maxBinding` bytes, then planned so no chunk is empty.
 */
export function decideSplit(policy: SplitKPolicy | null, forced: number | null, p: SplitProblem, maxBinding: number): SplitPlan {
  let s = forced ?? autoSplits(policy, p);
  if (p.k <= 0) s = 1;
  if (p.cap !== undefined) s = Math.min(s, Math.max(1, p.cap));
  while (s > 1 && s * p.partialBytes > maxBinding) s--;
  return planSplit(s, p.k, p.step);
}

/** The split for one launch on `g`: forced (setSplitK, RL4PIX_SPLIT_K) or the adapter's policy (see decideSplit). */
export function chooseSplit(g: Gpu, p: SplitProblem): SplitPlan {
  const policy = splitKPolicy(g.info);
  if (!described.has(g)) {
    described.add(g);
    recordTuning("split-K", policy
      ? `when a grid has under ${policy.targetGroups / 2} workgroups: up to ${policy.maxSplits} chunks of >= ${policy.minChunk} K toward ${policy.targetGroups} workgroups`
      : "off (CPU adapter)");
  }
  return decideSplit(policy, forcedSplit(), p, g.maxBinding);
}

type Family = "matmul" | "conv" | "conv weight gradient";

/** Per family: the split factor of the most recent launch, and how many launches split (tests check that a forced split really ran). */
const lastSplits: Partial<Record<Family, number>> = {};
const splitCounts: Partial<Record<Family, number>> = {};

export function recordSplit(family: Family, splits: number): void {
  lastSplits[family] = splits;
  if (splits > 1) splitCounts[family] = (splitCounts[family] ?? 0) + 1;
}

export function lastSplit(family: Family): number | undefined {
  return lastSplits[family];
}

/** Launches of `family` that split K so far in this process. */
export function splitLaunches(family: Family): number {
  return splitCounts[family] ?? 0;
}
