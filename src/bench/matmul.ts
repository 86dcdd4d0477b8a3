// Matmul throughput at the shapes the UNet and CLIP run (M x K x N): GFLOP/s from the median of
// several synchronised runs after a warm-up; the first call's extra time (pipeline compilation,
// which lavapipe does lazily at the first dispatch) is reported apart.
import process from "node:process";
import { gpu } from "../gpu/device.ts";
import { Tensor, noGrad, scope } from "../tensor/index.ts";
import * as ops from "../tensor/ops/index.ts";
import { matmulTuning, setMatmulTuning, tiledDepth, tiledPer, type MatmulTuning } from "../tensor/ops/matmul_tuning.ts";
import { adapterClass } from "../gpu/tuning.ts";
import type { BenchRow } from "./types.ts";
import { pseudoRandom, timeCalls, warmUpGpu } from "./timing.ts";
import { type TorchResult, absentRow, matmulArgs, matmulScript, matmulTorchRows, runTorch } from "./torch_cuda.ts";

export interface MatmulBenchOptions {
  /** [M, K, N] triples; defaults to DEFAULT_MATMUL_SHAPES. */
  shapes?: [number, number, number][];
  /** Timed runs per shape (median reported). */
  reps?: number;
  /** Force a kernel instead of the adapter's choice. */
  tuning?: MatmulTuning;
  /** Also time linear with an f16 weight (B read as f16). */
  f16?: boolean;
}

export const DEFAULT_MATMUL_SHAPES: [number, number, number][] = [
  [1024, 1024, 1024],
  [4096, 320, 320],
  [4096, 320, 1280],
  [4096, 1280, 320],
  [77, 768, 768],
];

/**
 * PyTorch's rows for the same products on the same GPU (fp32 with TF32 off, fp16), each with the
 * ratio of our time (`ours`: rows named "matmul") to torch's; one "absent" row when no python3 with
 * torch sees a CUDA device. `run` is replaceable for tests.
 */
export function torchMatmulRows(
  shapes: readonly [number, number, number][],
  ours: readonly BenchRow[],
  run: (script: string, arg: Record<string, unknown>) => TorchResult = runTorch,
): BenchRow[] {
  const r = run(matmulScript(), matmulArgs(shapes));
  if (!r.ok) return [absentRow("matmul", r.absent)];
  const mine = new Map(ours.filter((o) => o.name === "matmul").map((o) => [o.shape, o.ms]));
  return matmulTorchRows(r.out, mine);
}

/**
 * The adapter's own choice, and on real GPUs also each forced tile size (so `bench` shows whether the
 * automatic choice picks the faster one); then PyTorch's rows on the same GPU unless `torch` is false.
 */
export async function benchMatmulVariants(torch = true): Promise<BenchRow[]> {
  const onGpu = adapterClass(gpu()) === "gpu";
  if (onGpu) {
    const a = Tensor.from(pseudoRandom(1024 * 1024, 1), [1024, 1024], "f32", "warm_a");
    await warmUpGpu(() => noGrad(() => scope(() => void ops.matmul(a, a))));
    a.dispose();
  }
  const rows = await benchMatmul();
  const own = [...rows];
  if (onGpu) {
    for (const [per, depth] of [[4, 16], [4, 32], [8, 8], [8, 16]] as const) {
      rows.push(...(await benchMatmul({ tuning: { kind: "tiled", per, depth } })));
    }
  }
  if (torch) rows.push(...torchMatmulRows(DEFAULT_MATMUL_SHAPES, own));
  return rows;
}

function describeVariant(t: MatmulTuning, m: number, n: number): string {
  if (t.kind === "register") return `register ${8 * t.rowGroups}x${32 * t.colGroups}`;
  const per = tiledPer(t, m, n, 1);
  return `tiled ${16 * per}x${16 * per} k${tiledDepth(t, per)}${t.per === "auto" ? " (auto)" : " (forced)"}`;
}

export async function benchMatmul(opts: MatmulBenchOptions = {}): Promise<BenchRow[]> {
  const shapes = opts.shapes ?? DEFAULT_MATMUL_SHAPES;
  const reps = opts.reps ?? 5;
  if (opts.tuning) setMatmulTuning(opts.tuning);
  const rows: BenchRow[] = [];
  try {
    const t = matmulTuning(gpu());
    for (const [m, k, n] of shapes) {
      const variant = describeVariant(t, m, n);
      const a = Tensor.from(pseudoRandom(m * k, 1), [m, k], "f32", "bench_a").keep();
      const b = Tensor.from(pseudoRandom(k * n, 2), [k, n], "f32", "bench_b").keep();
      const run = (f: () => Tensor) => () => noGrad(() => scope(() => void f()));
      const timed = async (name: string, f: () => Tensor) => {
        const r = await timeCalls(run(f), reps);
        rows.push({
          name,
          shape: `${m}x${k}x${n}`,
          ms: r.ms,
          gflops: (2 * m * n * k) / r.ms / 1e6,
          compileMs: Math.max(0, r.firstMs - r.ms),
          note: `${variant}; ${r.cores.toFixed(1)} cores busy`,
        });
      };
      await timed("matmul", () => ops.matmul(a, b));
      if (opts.f16) {
        const w = Tensor.from(pseudoRandom(n * k, 3), [n, k], "f16", "bench_w16").keep();
        await timed("linear f16 weight", () => ops.linear(a, w));
        w.dispose();
      }
      a.dispose();
      b.dispose();
    }
  } finally {
    if (opts.tuning) setMatmulTuning(null);
  }
  return rows;
}
