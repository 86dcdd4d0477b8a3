// Kernel self-test for `doctor` and the smoke test: a few ops on the GPU against plain CPU loops.
import { gpu } from "../gpu/device.ts";
import { Tensor, scopeAsync } from "../tensor/index.ts";
import * as ops from "../tensor/ops/index.ts";
import { pseudoRandom } from "../bench/timing.ts";

export interface SelfTestResult {
  name: string;
  ok: boolean;
  maxError: number;
  ms: number;
}

async function check(name: string, tol: number, run: () => Promise<[ArrayLike<number>, ArrayLike<number>]>): Promise<SelfTestResult> {
  const t0 = performance.now();
  const [got, want] = await scopeAsync(run);
  let maxError = got.length === want.length ? 0 : Infinity;
  for (let i = 0; i < Math.min(got.length, want.length); i++) maxError = Math.max(maxError, Math.abs(got[i] - want[i]));
  if (Number.isNaN(maxError)) maxError = Infinity;
  return { name, ok: maxError <= tol, maxError, ms: performance.now() - t0 };
}

export async function selfTest(): Promise<SelfTestResult[]> {
  const results: SelfTestResult[] = [];
  results.push(
    await check("elementwise silu(a) + b, 1000 values", 1e-5, async () => {
      const a = pseudoRandom(1000, 1);
      const b = pseudoRandom(1000, 2);
      const y = ops.add(ops.silu(Tensor.from(a, [1000])), Tensor.from(b, [1000]));
      const want = Array.from(a, (x, i) => x / (1 + Math.exp(-x)) + b[i]);
      return [await y.read(), want];
    }),
  );
  const o = ops as unknown as Record<string, unknown>;
  if (typeof o.matmul === "function") {
    const matmul = o.matmul as (a: Tensor, b: Tensor) => Tensor;
    results.push(
      await check("matmul 67x45 @ 45x33", 1e-4, async () => {
        const [M, K, N] = [67, 45, 33];
        const a = pseudoRandom(M * K, 3);
        const b = pseudoRandom(K * N, 4);
        const y = matmul(Tensor.from(a, [M, K]), Tensor.from(b, [K, N]));
        const want = new Float64Array(M * N);
        for (let i = 0; i < M; i++) for (let k = 0; k < K; k++) for (let j = 0; j < N; j++) want[i * N + j] += a[i * K + k] * b[k * N + j];
        return [await y.read(), want];
      }),
    );
  }
  if (typeof o.conv2d === "function") {
    const conv2d = o.conv2d as (x: Tensor, w: Tensor, b?: Tensor, opts?: { padding?: number }) => Tensor;
    results.push(
      await check("conv2d 3x3 pad 1, 5->7 channels at 9x11", 1e-4, async () => {
        const [C, O, H, W] = [5, 7, 9, 11];
        const x = pseudoRandom(C * H * W, 5);
        const w = pseudoRandom(O * C * 9, 6);
        const y = conv2d(Tensor.from(x, [1, C, H, W]), Tensor.from(w, [O, C, 3, 3]), undefined, { padding: 1 });
        const want = new Float64Array(O * H * W);
        for (let o2 = 0; o2 < O; o2++) for (let i = 0; i < H; i++) for (let j = 0; j < W; j++) {
          let s = 0;
          for (let c = 0; c < C; c++) for (let di = 0; di < 3; di++) for (let dj = 0; dj < 3; dj++) {
            const yi = i + di - 1, xj = j + dj - 1;
            if (yi >= 0 && yi < H && xj >= 0 && xj < W) s += x[(c * H + yi) * W + xj] * w[((o2 * C + c) * 3 + di) * 3 + dj];
          }
          want[(o2 * H + i) * W + j] = s;
        }
        return [await y.read(), want];
      }),
    );
  }
  await gpu().sync();
  return results;
}
