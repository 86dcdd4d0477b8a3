// Bandwidth of elementwise kernels (GB/s counts bytes read + written).
import { Tensor, scope } from "../tensor/index.ts";
import * as ops from "../tensor/ops/index.ts";
import type { BenchRow } from "./types.ts";
import { timeGpu } from "./timing.ts";

export async function benchElementwise(): Promise<BenchRow[]> {
  const rows: BenchRow[] = [];
  const n = 3 * 320 * 64 * 64; // a UNet activation at 512 px, batch 3
  const a = ops.full([n], 1.25).keep();
  const b = ops.full([n], -0.5).keep();
  const add = await timeGpu(() => scope(() => void ops.add(a, b)), 7);
  rows.push({ name: "elementwise add", shape: `${n}`, ms: add.ms, gbps: (3 * 4 * n) / add.ms / 1e6, compileMs: add.compileMs });
  const silu = await timeGpu(() => scope(() => void ops.silu(a)), 7);
  rows.push({ name: "elementwise silu", shape: `${n}`, ms: silu.ms, gbps: (2 * 4 * n) / silu.ms / 1e6, compileMs: silu.compileMs });
  const bias = Tensor.from(new Float32Array(320).fill(0.1), [1, 320, 1, 1]).keep();
  const a4 = ops.reshape(a, [3, 320, 64, 64]).keep();
  const bc = await timeGpu(() => scope(() => void ops.add(a4, bias)), 7);
  rows.push({ name: "broadcast add [3,320,64,64]+[1,320,1,1]", shape: `${n}`, ms: bc.ms, gbps: (2 * 4 * n) / bc.ms / 1e6, compileMs: bc.compileMs });
  for (const t of [a, b, bias, a4]) t.dispose();
  return rows;
}
