// Group norm bandwidth at UNet shapes (32 groups on 320x64x64, the 512 px resnet input). GB/s
// counts the bytes a fused kernel must move: x read once, out written once.
import { Tensor, scope } from "../tensor/index.ts";
import * as ops from "../tensor/ops/index.ts";
import type { BenchRow } from "./types.ts";
import { timeGpu } from "./timing.ts";

export async function benchGroupNorm(): Promise<BenchRow[]> {
  const rows: BenchRow[] = [];
  const C = 320, H = 64, W = 64;
  const weight = ops.full([C], 1.1).keep();
  const bias = ops.full([C], 0.1).keep();
  for (const N of [1, 3]) {
    const n = N * C * H * W;
    const data = new Float32Array(n);
    for (let i = 0; i < n; i++) data[i] = Math.sin(i * 0.001) + (i % 17) * 0.05;
    const x = Tensor.from(data, [N, C, H, W]).keep();
    for (const silu of [false, true]) {
      const t = await timeGpu(() => scope(() => void ops.groupNorm(x, 32, weight, bias, 1e-5, { silu })), 5);
      rows.push({
        name: silu ? "groupNorm+silu" : "groupNorm",
        shape: `${N}x${C}x${H}x${W} g32`,
        ms: t.ms,
        gbps: (2 * 4 * n) / t.ms / 1e6,
        compileMs: t.compileMs,
      });
    }
    x.dispose();
  }
  weight.dispose();
  bias.dispose();
  return rows;
}
