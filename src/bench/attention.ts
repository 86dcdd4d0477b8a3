// Attention throughput at the UNet's shapes (512 px): cross-attention 4096 queries x 77 keys, flash
// self-attention 4096 x 4096 (64x64 latents), and 1024 x 1024 with 80-wide heads (32x32 latents).
// GFLOP/s counts the two products (4 * Lq * Lk * d per head); the backward recomputes the scores and
// does four products (counted as 2.5x the forward's flops, as flash-attention papers do).
import { gpu } from "../gpu/device.ts";
import { adapterClass } from "../gpu/tuning.ts";
import { backward, scope } from "../tensor/index.ts";
import * as ops from "../tensor/ops/index.ts";
import type { BenchRow } from "./types.ts";
import { timeGpu } from "./timing.ts";

interface Case {
  name: string;
  B: number;
  H: number;
  Lq: number;
  Lk: number;
  d: number;
  withBackward: boolean;
}

const CASES: Case[] = [
  { name: "attention cross (flash kernel)", B: 1, H: 8, Lq: 4096, Lk: 77, d: 40, withBackward: true },
  { name: "attention self 64x64 (flash kernel)", B: 1, H: 8, Lq: 4096, Lk: 4096, d: 40, withBackward: false },
  { name: "attention self 32x32", B: 1, H: 8, Lq: 1024, Lk: 1024, d: 80, withBackward: true },
];

export async function benchAttention(): Promise<BenchRow[]> {
  const rows: BenchRow[] = [];
  const slow = adapterClass(gpu()) === "cpu";
  for (const c of CASES) {
    const fill = (L: number, v: number) => ops.affine(ops.full([c.B, L, c.H * c.d], 1), 0, v);
    const q = fill(c.Lq, 0.01).keep();
    const k = fill(c.Lk, 0.02).keep();
    const v = fill(c.Lk, 0.03).keep();
    const flops = 4 * c.B * c.H * c.Lq * c.Lk * c.d;
    const shape = `B${c.B} H${c.H} ${c.Lq}x${c.Lk} d${c.d}`;
    const big = c.Lq * c.Lk > 4e6;
    const reps = slow && big ? 1 : 3;
    const f = await timeGpu(() => scope(() => void ops.attentionMergedHeads(q, k, v, c.H)), reps);
    rows.push({ name: `${c.name} forward`, shape, ms: f.ms, gflops: flops / f.ms / 1e6, compileMs: f.compileMs });
    if (c.withBackward) {
      for (const t of [q, k, v]) t.requireGrad();
      const step = () =>
        scope(() => {
          const o = ops.attentionMergedHeads(q, k, v, c.H);
          backward(o, ops.onesLike(o));
          for (const t of [q, k, v]) {
            t.grad?.dispose();
            t.grad = null;
          }
        });
      const fb = await timeGpu(step, reps);
      const bwdMs = Math.max(fb.ms - f.ms, 1e-3);
      rows.push({ name: `${c.name} backward`, shape, ms: bwdMs, gflops: (2.5 * flops) / bwdMs / 1e6, compileMs: fb.compileMs, note: "forward+backward time minus forward time" });
      for (const t of [q, k, v]) t.requireGrad(false);
    }
    for (const t of [q, k, v]) t.dispose();
  }
  return rows;
}
