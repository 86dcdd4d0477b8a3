// Group norm (with and without fused SiLU), layer norm and softmax: forward against float64 CPU
// references, backward against central finite differences of those references.
import { describe, expect, test } from "bun:test";
import * as ops from "../src/tensor/ops/index.ts";
import { Tensor } from "../src/tensor/index.ts";
import { expectClose, gradCheck, prod, randn, toGpu, uniform, useGpu } from "./helpers.ts";
import { groupNormRef, layerNormRef, softmaxRef } from "./ref/norm.ts";

useGpu();

// Tolerances. Forward: f32 two-pass statistics over at most a few thousand values stay within a few
// ulps of the normalised value (|xhat| <~ 4), so 2e-5 absolute. Backward: central differences with
// h = 1e-3 on the float64 reference have O(h^2) truncation (~1e-6 here) and the GPU gradient has f32
// rounding (~1e-5 relative), so 1e-3 absolute + relative leaves a wide margin while still catching
// any missing term (those are O(0.1)).
const FWD = { atol: 2e-5, rtol: 2e-5 };
const BWD = { atol: 1e-3, rtol: 1e-3 };

describe("groupNorm", () => {
  const cases: { shape: number[]; groups: number; silu: boolean }[] = [
    { shape: [2, 6, 3, 3], groups: 3, silu: false }, // groups of 2 channels, S = 9 (scalar path)
    { shape: [2, 6, 3, 3], groups: 3, silu: true },
    { shape: [2, 5, 4], groups: 5, silu: false }, // groups of size 1, S = 4 (vec4 path)
    { shape: [1, 5, 2, 2], groups: 5, silu: true },
    { shape: [3, 7, 1], groups: 1, silu: false }, // odd channels, spatial size 1, one group
    { shape: [2, 9], groups: 3, silu: true }, // no spatial dims at all
  ];
  for (const { shape, groups, silu } of cases) {
    test(`${JSON.stringify(shape)} groups ${groups}${silu ? " + silu" : ""}: forward and backward`, async () => {
      const [N, C] = shape;
      const S = prod(shape.slice(2));
      const eps = 1e-5;
      await gradCheck({
        label: `groupNorm ${JSON.stringify(shape)}`,
        inputs: [
          { data: randn(prod(shape), 11, 1.3, 0.4), shape },
          { data: randn(C, 12, 0.5, 1), shape: [C] },
          { data: randn(C, 13, 0.5), shape: [C] },
        ],
        gpuFn: ([x, w, b]) => ops.groupNorm(x, groups, w, b, eps, { silu }),
        refFn: ([x, w, b]) => groupNormRef(x, N, C, S, groups, w, b, eps, silu),
        fwd: FWD,
        bwd: BWD,
      });
    });
  }

  test("backward with frozen affine parameters computes only dx", async () => {
    const shape = [2, 4, 4];
    await gradCheck({
      label: "groupNorm frozen",
      inputs: [
        { data: randn(32, 21), shape },
        { data: randn(4, 22, 0.5, 1), shape: [4], grad: false },
        { data: randn(4, 23), shape: [4], grad: false },
      ],
      gpuFn: ([x, w, b]) => ops.groupNorm(x, 2, w, b, 1e-6, { silu: true }),
      refFn: ([x, w, b]) => groupNormRef(x, 2, 4, 4, 2, w, b, 1e-6, true),
      fwd: FWD,
      bwd: BWD,
    });
  });

  test("UNet-sized forward: 32 groups on [2, 64, 32, 32], eps 1e-6", async () => {
    const shape = [2, 64, 32, 32];
    const x = randn(prod(shape), 31, 2, -0.5);
    const w = randn(64, 32, 0.3, 1);
    const b = randn(64, 33, 0.3);
    const y = ops.groupNorm(toGpu(x, shape), 32, toGpu(w, [64]), toGpu(b, [64]), 1e-6, { silu: true });
    expectClose(await y.read(), groupNormRef(x, 2, 64, 1024, 32, w, b, 1e-6, true), { atol: 5e-5, rtol: 5e-5 }, "groupNorm 2x64x32x32");
  });

  test("statistics are numerically careful: mean 1e4, std 1", async () => {
    // E[x^2] - E[x]^2 in f32 would lose every digit of the variance here (1e8 +- 1e1).
    const shape = [1, 4, 16, 16];
    const x = randn(prod(shape), 41, 1, 1e4);
    const w = new Float64Array(4).fill(1);
    const b = new Float64Array(4);
    const y = ops.groupNorm(toGpu(x, shape), 2, toGpu(w, [4]), toGpu(b, [4]), 1e-5);
    // the mean itself carries f32 rounding of ~1e4 * 6e-8 per add; outputs are O(1)
    expectClose(await y.read(), groupNormRef(x, 1, 4, 256, 2, w, b, 1e-5), { atol: 5e-3 }, "groupNorm offset");
  });

  test("inputs larger than one storage binding run in per-sample windows", async () => {
    // 3 samples of 12 x 2^20 f32 = 48 MiB each: 144 MiB in all, over lavapipe's 128 MiB binding limit.
    const N = 3, C = 12, S = 1 << 20, G = 4;
    const data = new Float32Array(N * C * S);
    for (let i = 0; i < data.length; i++) data[i] = Math.sin(i * 0.37) * (1 + (i % 7)) + (i % 13) * 0.1;
    const w = randn(C, 51, 0.5, 1);
    const b = randn(C, 52, 0.5);
    const x = Tensor.from(data, [N, C, S]);
    const y = ops.groupNorm(x, G, toGpu(w, [C]), toGpu(b, [C]), 1e-5);
    const got = await y.read();
    x.dispose();
    y.dispose();
    // check the first group of sample 0 and the last group of sample 2 (different windows)
    const groupLen = (C / G) * S;
    for (const [n, g] of [[0, 0], [2, G - 1]]) {
      const start = (n * C + g * (C / G)) * S;
      const xs = Float64Array.from(data.subarray(start, start + groupLen));
      const ref = groupNormRef(xs, 1, C / G, S, 1, w.subarray(g * (C / G)), b.subarray(g * (C / G)), 1e-5);
      expectClose(got.subarray(start, start + groupLen), ref, { atol: 2e-4 }, `window sample ${n} group ${g}`);
    }
  }, 60_000);

  test("rejects channel counts that do not split into groups", () => {
    const x = toGpu(randn(10, 1), [1, 5, 2]);
    const w = toGpu(randn(5, 2), [5]);
    expect(() => ops.groupNorm(x, 2, w, w)).toThrow(/groupNorm/);
  });
});

describe("layerNorm", () => {
  for (const [rows, D] of [[3, 1], [4, 7], [5, 33], [2, 64], [3, 3, 8]].map((s) => [prod(s.slice(0, -1)), s[s.length - 1]])) {
    test(`rows ${rows} width ${D}: forward and backward`, async () => {
      const eps = 1e-5;
      await gradCheck({
        label: `layerNorm ${rows}x${D}`,
        inputs: [
          { data: randn(rows * D, 61, 1.5, 0.3), shape: [rows, D] },
          { data: randn(D, 62, 0.5, 1), shape: [D] },
          { data: randn(D, 63, 0.5), shape: [D] },
        ],
        gpuFn: ([x, w, b]) => ops.layerNorm(x, w, b, eps),
        refFn: ([x, w, b]) => layerNormRef(x, D, w, b, eps),
        fwd: FWD,
        bwd: BWD,
      });
    });
  }

  test("CLIP-sized forward [2, 77, 768] and parameter gradients over 154 rows", async () => {
    const R = 2 * 77, D = 768;
    const x = randn(R * D, 71);
    const w = randn(D, 72, 0.2, 1);
    const b = randn(D, 73, 0.2);
    const G = randn(R * D, 74);
    const xt = toGpu(x, [2, 77, D]);
    const wt = toGpu(w, [D]).requireGrad();
    const bt = toGpu(b, [D]).requireGrad();
    const y = ops.layerNorm(xt, wt, bt, 1e-5);
    expectClose(await y.read(), layerNormRef(x, D, w, b, 1e-5), FWD, "layerNorm 2x77x768");
    const { backward } = await import("../src/tensor/index.ts");
    backward(y, toGpu(G, [2, 77, D]));
    // dL/dw[c] = sum_r G[r,c] xhat[r,c], dL/db[c] = sum_r G[r,c] (float64 on the CPU)
    const xhat = layerNormRef(x, D, new Float64Array(D).fill(1), new Float64Array(D), 1e-5);
    const dw = new Float64Array(D), db = new Float64Array(D);
    for (let r = 0; r < R; r++) for (let c = 0; c < D; c++) {
      dw[c] += G[r * D + c] * xhat[r * D + c];
      db[c] += G[r * D + c];
    }
    expectClose(await wt.grad!.read(), dw, { atol: 1e-4, rtol: 1e-4 }, "layerNorm dweight");
    expectClose(await bt.grad!.read(), db, { atol: 1e-4, rtol: 1e-4 }, "layerNorm dbias");
  });
});

describe("softmax", () => {
  for (const [rows, L] of [[4, 1], [3, 77], [2, 300], [1, 5]]) {
    test(`rows ${rows} length ${L}: forward and backward`, async () => {
      await gradCheck({
        label: `softmax ${rows}x${L}`,
        inputs: [{ data: randn(rows * L, 81 + L, 2), shape: [rows, L] }],
        gpuFn: ([x]) => ops.softmax(x),
        refFn: ([x]) => softmaxRef(x, L),
        fwd: { atol: 1e-6, rtol: 1e-5 },
        bwd: { atol: 1e-4, rtol: 1e-3 },
      });
    });
  }

  test("large logits do not overflow (max is subtracted)", async () => {
    const x = uniform(3 * 50, 91, 80, 120);
    const y = ops.softmax(toGpu(x, [3, 50]));
    expectClose(await y.read(), softmaxRef(x, 50), { atol: 1e-6, rtol: 1e-4 }, "softmax large");
  });
});
