// Tile shapes of the conv2d kernels per adapter class. On CPU rasterisers (lavapipe) register
// blocking without workgroup memory wins; on real GPUs, workgroup-memory tiles.
import { type Gpu } from "../../gpu/device.ts";
import { adapterClass, recordTuning } from "../../gpu/tuning.ts";

/** Register-blocked implicit GEMM (conv2d.wgsl / conv2d_wgrad.wgsl). */
export interface RegisterTiles {
  kind: "register";
  /** Invocations per workgroup. */
  wg: number;
  /** GEMM rows per workgroup (rows are output channels): a multiple of 4 and of the subgroup size. */
  tm: number;
  /** Pixels (forward) or weight columns (weight gradient) per invocation. */
  tn: number;
  /** Share weight loads across a subgroup of this many lanes with shuffles (0: no subgroups). */
  subgroup: number;
}

/** Workgroup-memory tiled implicit GEMM (conv2d_tiled.wgsl). */
export interface SharedTiles {
  kind: "shared";
  /** Tile rows and columns per workgroup, reduction depth per stage. */
  bm: number;
  bn: number;
  bk: number;
  /** Accumulators per invocation: tm x tn. */
  tm: number;
  tn: number;
}

export type ConvTiles = RegisterTiles | SharedTiles;

export interface ConvTuning {
  forward: ConvTiles;
  weightGrad: ConvTiles;
}

const CPU_TUNING: ConvTuning = {
  forward: { kind: "register", wg: 128, tm: 16, tn: 2, subgroup: 8 },
  weightGrad: { kind: "register", wg: 64, tm: 16, tn: 2, subgroup: 0 },
};

/** What real GPUs get (exported for tests of per-adapter choices that build on it, e.g. split-K). */
export const GPU_TUNING: ConvTuning = {
  forward: { kind: "shared", bm: 64, bn: 64, bk: 16, tm: 4, tn: 4 },
  weightGrad: { kind: "shared", bm: 64, bn: 64, bk: 16, tm: 4, tn: 4 },
};

let override: ConvTuning | null = null;
const chosen = new WeakMap<Gpu, ConvTuning>();

function describe(t: ConvTiles): string {
  if (t.kind === "shared") return `shared ${t.bm}x${t.bn}x${t.bk} (${t.tm}x${t.tn})`;
  return `register ${t.tm}x${t.tn}/wg${t.wg}${t.subgroup ? ` subgroup ${t.subgroup}` : ""}`;
}

/** The tiles for this adapter (recorded once per device for `rl4pix doctor`). */
export function convTuning(g: Gpu): ConvTuning {
  if (override) return override;
  let t = chosen.get(g);
  if (!t) {
    t = adapterClass(g) === "cpu" ? withSubgroups(g, CPU_TUNING) : GPU_TUNING;
    chosen.set(g, t);
    recordTuning("conv2d", `forward ${describe(t.forward)}; weight grad ${describe(t.weightGrad)}`);
  }
  return t;
}

/** Keep subgroup sharing only where the adapter has subgroups of exactly that size. */
function withSubgroups(g: Gpu, t: ConvTuning): ConvTuning {
  const f = t.forward;
  if (f.kind !== "register" || !f.subgroup) return t;
  const info = g.adapter.info as unknown as { subgroupMinSize?: number; subgroupMaxSize?: number };
  const fixed = g.hasSubgroups && info.subgroupMinSize === f.subgroup && info.subgroupMaxSize === f.subgroup;
  // Without subgroups every lane loads all TM weight rows: fewer rows keep the kernel small.
  return fixed ? t : { ...t, forward: { ...f, tm: 8, subgroup: 0 } };
}

/** Force tile shapes (benchmarks and tests of both variants); `null` restores the per-adapter choice. */
export function setConvTuning(t: ConvTuning | null): void {
  override = t;
}
