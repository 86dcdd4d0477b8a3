// Which matmul kernel each adapter gets. CPU rasterisers (lavapipe) get the register-blocked kernel
// (wgsl/matmul.wgsl): no workgroup memory, A shared across a subgroup of 8 lanes by broadcasts.
// Real GPUs get workgroup-memory tiles (wgsl/matmul_tiled.wgsl).
import type { Gpu } from "../../gpu/device.ts";
import { adapterClass, recordTuning } from "../../gpu/tuning.ts";

/** Register blocking: a workgroup is one subgroup of 8 lanes owning 8 * rowGroups rows x 32 * colGroups columns. */
export interface RegisterMatmul {
  kind: "register";
  /** Row groups of 8 for large M (small M uses fewer, see `registerRowGroups`). */
  rowGroups: 1 | 2 | 3 | 4;
  /** Column groups of 32 (4 accumulator columns per lane each). */
  colGroups: 1 | 2;
}

/**
 * Workgroup-memory tiles: a workgroup of 256 owns 16 * per x 16 * per outputs (per 4: 64 x 64, K in
 * steps of 16; per 8: 128 x 128, K in steps of 8). `per: "auto"` takes 128 x 128 tiles when the output
 * has enough of them to fill a large GPU, else 64 x 64.
 */
export interface TiledMatmul {
  kind: "tiled";
  per: 4 | 8 | "auto";
  /** K step (default: 16 for 64 x 64 tiles, 8 for 128 x 128). */
  depth?: 8 | 16 | 32;
}

export type MatmulTuning = RegisterMatmul | TiledMatmul;

/** Lanes per subgroup the register kernel is written for. */
export const REGISTER_SUBGROUP = 8;

const CPU_TUNING: RegisterMatmul = { kind: "register", rowGroups: 4, colGroups: 1 };
/** What real GPUs get (exported for tests of per-adapter choices that build on it, e.g. split-K). */
export const GPU_TUNING: TiledMatmul = { kind: "tiled", per: "auto" };

let override: MatmulTuning | null = null;
const chosen = new WeakMap<Gpu, MatmulTuning>();

function describe(t: MatmulTuning): string {
  if (t.kind === "tiled") {
    if (t.per === "auto") return `workgroup-memory tiles, 128x128 (8x8 per invocation) when the output has >= ${BIG_TILE_MIN_GROUPS} of them, else 64x64 (4x4)`;
    return `workgroup-memory tiles ${16 * t.per}x${16 * t.per}, ${t.per}x${t.per} per invocation, k step ${tiledDepth(t, t.per)}`;
  }
  return `register blocking ${8 * t.rowGroups}x${32 * t.colGroups} per subgroup of 8 (A shared by broadcasts; k read 4 at a time for f16 weights or under 256 rows)`;
}

/** Whether this device runs the register kernel: subgroups of exactly 8 lanes. */
export function hasRegisterSubgroups(g: Gpu): boolean {
  const info = g.adapter.info as unknown as { subgroupMinSize?: number; subgroupMaxSize?: number };
  return g.hasSubgroups && info.subgroupMinSize === REGISTER_SUBGROUP && info.subgroupMaxSize === REGISTER_SUBGROUP;
}

/** The kernel for this adapter (recorded once per device for `rl4pix doctor`). */
export function matmulTuning(g: Gpu): MatmulTuning {
  if (override) return override;
  let t = chosen.get(g);
  if (!t) {
    t = adapterClass(g) === "cpu" && hasRegisterSubgroups(g) ? CPU_TUNING : GPU_TUNING;
    chosen.set(g, t);
    recordTuning("matmul", describe(t));
  }
  return t;
}

/** Force a kernel (tests of both variants, benchmarks); `null` restores the per-adapter choice. */
export function setMatmulTuning(t: MatmulTuning | null): void {
  override = t;
}

/** Output tiles of 128 x 128 needed before the big tiles are used (below, 64 x 64 keeps more workgroups busy). */
export const BIG_TILE_MIN_GROUPS = 120;

/** Accumulators per invocation side (4 or 8) for an m x n output (times `batch` matrices). */
export function tiledPer(t: TiledMatmul, m: number, n: number, batch: number): 4 | 8 {
  if (t.per !== "auto") return t.per;
  return Math.ceil(m / 128) * Math.ceil(n / 128) * batch >= BIG_TILE_MIN_GROUPS ? 8 : 4;
}

/** The K step of the tiled kernel for `per` (by default 1024 elements of each operand staged per step). */
export const tiledDepth = (t: TiledMatmul, per: 4 | 8): number => t.depth ?? (per === 8 ? 8 : 16);

/**
 * Row groups for an output of `m` rows: 1 or 2 for small M (less work on clamped rows), else the
 * tuned count (few variants: each is a pipeline to compile).
 */
export function registerRowGroups(t: RegisterMatmul, m: number): number {
  const need = Math.ceil(m / 8);
  if (need >= t.rowGroups) return t.rowGroups;
  return need <= 1 ? 1 : need <= 2 ? 2 : t.rowGroups;
}
