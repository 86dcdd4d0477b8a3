// conv2d throughput at the UNet's shapes (batch 1; 64x64 latents are 512 px images): GFLOP/s
// (2 * Cout * Cin * kh * kw * Ho * Wo per image) from the median of synchronised runs after a
// warm-up. The first call's extra time over the median (pipeline compilation, which lavapipe does
// at the first dispatch) is reported as compileMs.
import process from "node:process";
import { gpu } from "../gpu/device.ts";
import { Tensor, noGrad, scope } from "../tensor/index.ts";
import * as ops from "../tensor/ops/index.ts";
import { convTuning } from "../tensor/ops/conv_tuning.ts";
import { convForwardUsesIm2col, convGemm } from "../tensor/ops/conv_gemm.ts";
import { convGeometry } from "../tensor/ops/conv_geometry.ts";
import type { BenchRow } from "./types.ts";
import { pseudoRandom, timeCalls } from "./timing.ts";

interface ConvShape {
  name: string;
  cin: number;
  cout: number;
  hw: number;
  k: number;
  /** Time the input gradient (backprop through a frozen conv) instead of the forward. */
  inputGrad?: boolean;
}

export const CONV_SHAPES: ConvShape[] = [
  { name: "conv3x3", cin: 320, cout: 320, hw: 64, k: 3 },
  { name: "conv3x3", cin: 640, cout: 640, hw: 32, k: 3 },
  { name: "conv3x3", cin: 1280, cout: 1280, hw: 16, k: 3 },
  { name: "conv3x3", cin: 1280, cout: 1280, hw: 8, k: 3 },
  { name: "conv_in 3x3", cin: 4, cout: 320, hw: 64, k: 3 },
  { name: "conv_in 3x3 (IP2P)", cin: 8, cout: 320, hw: 64, k: 3 },
  { name: "conv1x1", cin: 320, cout: 640, hw: 32, k: 1 },
  { name: "conv3x3 input grad", cin: 320, cout: 320, hw: 64, k: 3, inputGrad: true },
];

export async function benchConv(reps = 5, shapes = CONV_SHAPES): Promise<BenchRow[]> {
  const g = gpu();
  const rows: BenchRow[] = [];
  const t = convTuning(g).forward;
  const variant = t.kind === "register" ? `register ${t.tm}x${t.tn}${t.subgroup ? ` subgroup ${t.subgroup}` : ""}` : `tiles ${t.bm}x${t.bn}`;
  for (const s of shapes) {
    const pad = (s.k - 1) / 2;
    const x = Tensor.from(pseudoRandom(s.cin * s.hw * s.hw, 1), [1, s.cin, s.hw, s.hw]);
    const w = Tensor.from(pseudoRandom(s.cout * s.cin * s.k * s.k, 2), [s.cout, s.cin, s.k, s.k]);
    const b = Tensor.from(pseudoRandom(s.cout, 3), [s.cout]);
    const dy = Tensor.from(pseudoRandom(s.cout * s.hw * s.hw, 4), [1, s.cout, s.hw, s.hw]);
    const geo = convGeometry(x.shape, w.shape, { padding: pad });
    const run = s.inputGrad
      ? () => scope(() => void convGemm("inputGrad", dy, w, null, geo))
      : () => scope(() => void noGrad(() => ops.conv2d(x, w, b, { padding: pad })));
    const r = await timeCalls(run, reps);
    const flops = 2 * s.cout * s.cin * s.k * s.k * s.hw * s.hw;
    rows.push({
      name: s.name,
      shape: `${s.cin}->${s.cout} ${s.hw}x${s.hw}`,
      ms: r.ms,
      gflops: flops / r.ms / 1e6,
      compileMs: Math.max(0, r.firstMs - r.ms),
      note: `${!s.inputGrad && convForwardUsesIm2col(geo) ? "im2col + matmul" : variant}; ${r.cores.toFixed(2)} cores busy`,
    });
    for (const tt of [x, w, b, dy]) tt.dispose();
  }
  // Nearest 2x upsampling (bandwidth: bytes read + written).
  for (const [c, hw] of [[1280, 16], [640, 32]]) {
    const x = Tensor.from(pseudoRandom(c * hw * hw, 5), [1, c, hw, hw]);
    const r = await timeCalls(() => scope(() => void noGrad(() => ops.upsampleNearest2x(x))), reps);
    rows.push({ name: "upsample nearest 2x", shape: `${c} ${hw}x${hw}`, ms: r.ms, gbps: (5 * 4 * c * hw * hw) / r.ms / 1e6, compileMs: Math.max(0, r.firstMs - r.ms) });
    x.dispose();
  }
  return rows;
}
