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

/** Workgroup-memory tiles: 64 x 64 outputs per workgroup of 256, K in steps of 16. */
export interface TiledMatmul {
  kind: "tiled";
}

export type MatmulTuning = RegisterMatmul | TiledMatmul;

/** Lanes per subgroup the register kernel is written for. */
export const REGISTER_SUBGROUP = 8;

const CPU_TUNING: RegisterMatmul = { kind: "register", rowGroups: 4, colGroups: 1 };
const GPU_TUNING: TiledMatmul = { kind: "tiled" };

let override: MatmulTuning | null = null;
const chosen = new WeakMap<Gpu, MatmulTuning>();

function describe(t: MatmulTuning): string {
  if (t.kind === "tiled") return "workgroup-memory tiles 64x64, k step 16, 4x4 per invocation";
  return `register blocking ${8 * t.rowGroups}x${32 * t.colGroups} per subgroup of 8 (A shared by broadcasts)`;
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

/**
 * Row groups for an output of `m` rows: 1 or 2 for small M (less work on clamped rows), else the
 * tuned count (few variants: each is a pipeline to compile).
 */
export function registerRowGroups(t: RegisterMatmul, m: number): number {
  const need = Math.ceil(m / 8);
  if (need >= t.rowGroups) return t.rowGroups;
  return need <= 1 ? 1 : need <= 2 ? 2 : t.rowGroups;
}
