// Split-K on vs off, in the same run, at the SD-1.5 UNet's wide-channel, small-image shapes at 512 px
// (64x64 latents: the 1280-channel levels are 16x16 and 8x8), where the output tile grid has only
// tens of workgroups: the 3x3 convs (forward and input gradient), the 8x8 attention projections and
// feed-forward output, and a LoRA weight gradient (rank 4, summed over 3 x 4096 rows).
// "on" is the adapter's own split where its policy splits the shape; elsewhere (always on a CPU
// adapter) a forced split of FORCED_SPLIT, so the row still says what a split costs there.
import { gpu } from "../gpu/device.ts";
import { adapterClass } from "../gpu/tuning.ts";
import { Tensor, noGrad, scope } from "../tensor/index.ts";
import * as ops from "../tensor/ops/index.ts";
import { convForwardUsesIm2col, convGemm } from "../tensor/ops/conv_gemm.ts";
import { convGeometry } from "../tensor/ops/conv_geometry.ts";
import { lastSplit, setSplitK } from "../tensor/ops/split_k.ts";
import type { BenchRow } from "./types.ts";
import { pseudoRandom, timeCalls } from "./timing.ts";

/** The split timed where the adapter's policy does not split a shape. */
export const FORCED_SPLIT = 8;

export interface SplitConvShape {
  /** Batch (3: one guided denoising step of InstructPix2Pix). */
  n: number;
  channels: number;
  hw: number;
  inputGrad?: boolean;
}

export const SPLIT_CONV_SHAPES: SplitConvShape[] = [
  { n: 1, channels: 1280, hw: 16 },
  { n: 1, channels: 1280, hw: 8 },
  { n: 3, channels: 1280, hw: 8 },
  { n: 1, channels: 1280, hw: 8, inputGrad: true },
];

/** [M, K, N] with what the product is in the UNet. */
export const SPLIT_MATMUL_SHAPES: [number, number, number, string][] = [
  [64, 1280, 1280, "attention projection at 8x8, batch 1"],
  [192, 1280, 1280, "attention projection at 8x8, batch 3"],
  [64, 5120, 1280, "feed-forward output at 8x8"],
  [320, 12288, 4, "LoRA up-weight gradient, 64x64, batch 3"],
];

type Family = "matmul" | "conv";

/**
 * Time `run` with split-K off and on (two interleaved rounds on a GPU, the faster of each kept; one
 * on a CPU adapter, where a call takes long), and report both rows, the "on" row with the ratio;
 * only the "off" row where no kernel of the path splits.
 */
async function onOff(name: string, shape: string, flops: number, family: () => Family, run: () => void, reps: number): Promise<BenchRow[]> {
  const rounds = adapterClass(gpu()) === "gpu" ? 2 : 1;
  setSplitK("auto");
  run();
  await gpu().sync();
  const autoSplit = lastSplit(family()) ?? 1;
  const onMode = autoSplit > 1 ? "auto" : FORCED_SPLIT;
  setSplitK(onMode);
  run();
  await gpu().sync();
  if ((lastSplit(family()) ?? 1) === 1) {
    // No kernel on this path splits K (the register conv kernels): "on" would time the same work.
    setSplitK("auto");
    const off = await timeCalls(run, reps);
    return [{ name: `${name} split-K off`, shape, ms: off.ms, gflops: flops / off.ms / 1e6, compileMs: Math.max(0, off.firstMs - off.ms), note: "no split-K kernel on this path: nothing to compare" }];
  }
  const best = { off: Infinity, on: Infinity, offCompile: 0, onCompile: 0, split: 1 };
  try {
    for (let r = 0; r < rounds; r++) {
      setSplitK(1);
      const off = await timeCalls(run, reps);
      setSplitK(onMode);
      const on = await timeCalls(run, reps);
      best.split = lastSplit(family()) ?? 1;
      if (off.ms < best.off) [best.off, best.offCompile] = [off.ms, Math.max(0, off.firstMs - off.ms)];
      if (on.ms < best.on) [best.on, best.onCompile] = [on.ms, Math.max(0, on.firstMs - on.ms)];
    }
  } finally {
    setSplitK("auto");
  }
  const how = `split ${best.split} (${onMode === "auto" ? "the adapter's choice" : "forced"})`;
  return [
    { name: `${name} split-K off`, shape, ms: best.off, gflops: flops / best.off / 1e6, compileMs: best.offCompile },
    {
      name: `${name} split-K on`, shape, ms: best.on, gflops: flops / best.on / 1e6, compileMs: best.onCompile,
      note: `${how}; ${(best.off / best.on).toFixed(2)}x the speed of off (${best.off.toFixed(3)} -> ${best.on.toFixed(3)} ms)`,
    },
  ];
}

export async function benchConvSplitK(reps = 5, shapes = SPLIT_CONV_SHAPES): Promise<BenchRow[]> {
  const rows: BenchRow[] = [];
  for (const s of shapes) {
    const c = s.channels;
    const x = Tensor.from(pseudoRandom(s.n * c * s.hw * s.hw, 1), [s.n, c, s.hw, s.hw]); // [N, C, H, W]
    const w = Tensor.from(pseudoRandom(c * c * 9, 2).map((v) => v / 30), [c, c, 3, 3]);
    const b = Tensor.from(pseudoRandom(c, 3), [c]);
    const geo = convGeometry(x.shape, w.shape, { padding: 1 });
    // The forward's product runs as a matmul where the adapter takes im2col (CPU adapters).
    const family = (): Family => (!s.inputGrad && convForwardUsesIm2col(geo) ? "matmul" : "conv");
    const run = s.inputGrad
      ? () => scope(() => void convGemm("inputGrad", x, w, null, geo)) // x stands for dy: same shape
      : () => scope(() => void noGrad(() => ops.conv2d(x, w, b, { padding: 1 })));
    const name = s.inputGrad ? "conv3x3 input grad" : "conv3x3";
    rows.push(...(await onOff(name, `${c}->${c} ${s.hw}x${s.hw} b${s.n}`, 2 * c * c * 9 * s.hw * s.hw * s.n, family, run, reps)));
    for (const t of [x, w, b]) t.dispose();
  }
  return rows;
}

export async function benchMatmulSplitK(reps = 5, shapes = SPLIT_MATMUL_SHAPES): Promise<BenchRow[]> {
  const rows: BenchRow[] = [];
  for (const [m, k, n, what] of shapes) {
    const a = Tensor.from(pseudoRandom(m * k, 1), [m, k]); // [M, K]
    const b = Tensor.from(pseudoRandom(k * n, 2), [k, n]); // [K, N]
    const run = () => noGrad(() => scope(() => void ops.matmul(a, b)));
    const r = await onOff("matmul", `${m}x${k}x${n}`, 2 * m * k * n, () => "matmul", run, reps);
    r[1].note = `${what}; ${r[1].note}`;
    rows.push(...r);
    a.dispose();
    b.dispose();
  }
  return rows;
}
