// f16 activations through group norm (plain and fused with SiLU) and layer norm (needs shader-f16:
// lavapipe has it): x, the output and the input gradient stored as f16, statistics and arithmetic in
// f32, one rounding on store; the affine parameters and their gradients stay f32. Forward against
// the float64 references on f16-rounded inputs, backward against central finite differences, on
// both reduction kernels (one 8-lane subgroup per group, shared-memory trees), the vec4 and scalar
// loads and per-sample windows.
import { afterEach, describe, expect, test } from "bun:test";
import { gpu } from "../src/gpu/device.ts";
import { Tensor, backward, clearTape, noGrad } from "../src/tensor/index.ts";
import * as ops from "../src/tensor/ops/index.ts";
import { setNormReduction } from "../src/tensor/ops/norm.ts";
import { setBindingLimitForTests } from "../src/tensor/ops/conv_geometry.ts";
import { expectClose, gradCheck, prod, randn, roundF16, toGpu, useGpu } from "./helpers.ts";
import { groupNormRef, layerNormRef } from "./ref/norm.ts";

useGpu();
afterEach(() => {
  setNormReduction(null);
  setBindingLimitForTests(null);
});

// Forward: the reference sees the same f16-rounded inputs, so the only differences are f32
// arithmetic (two-pass statistics: a few f32 ulps of |xhat| <~ 4, ~1e-6) and the one rounding of the
// result to f16, at most half an ulp: 2^-11 = 4.9e-4 relative. rtol 5e-4 admits that one rounding and
// nothing more: an f16 intermediate (xhat, the affine output before SiLU, a statistic) rounds a
// second time and pushes some elements past it. atol 1e-5 covers the f32 error near zero.
const FWD = { atol: 1e-5, rtol: 5e-4 };
// Backward: dx is rounded to f16 once (4.9e-4 relative) after an f32 sum with cancellation
// (absolute error ~1e-5 * rstd); dweight/dbias are f32 sums of f16 gradients the reference also sees.
// Central differences (h = 1e-3) of the float64 reference add O(h^2) ~1e-6. A missing term is O(0.1).
const BWD = { atol: 1e-4, rtol: 1e-3 };

const REDUCTIONS = ["subgroup", "shared"] as const;

test("this adapter reads and writes f16 activations (every test below needs shader-f16)", () => {
  expect(gpu().hasF16).toBe(true);
});

for (const reduction of REDUCTIONS) {
  describe(`groupNorm on f16 activations, ${reduction} reductions`, () => {
    const cases: { shape: number[]; groups: number; silu: boolean }[] = [
      { shape: [2, 6, 3, 3], groups: 3, silu: false }, // groups of 2 channels, S = 9 (scalar loads)
      { shape: [2, 6, 3, 3], groups: 3, silu: true },
      { shape: [2, 5, 4], groups: 5, silu: false }, // groups of size 1, S = 4 (vec4 loads)
      { shape: [1, 8, 2, 2], groups: 2, silu: true }, // vec4 loads, 4 channels per group
      { shape: [3, 7, 1], groups: 1, silu: false }, // odd channels, spatial size 1, one group
      { shape: [2, 9], groups: 3, silu: true }, // no spatial dims
    ];
    for (const { shape, groups, silu } of cases) {
      test(`${JSON.stringify(shape)} groups ${groups}${silu ? " + silu" : ""}: f16 y and dx, f32 dweight and dbias`, async () => {
        setNormReduction(reduction);
        const [N, C] = shape;
        const S = prod(shape.slice(2));
        const eps = 1e-5;
        await gradCheck({
          label: `groupNorm f16 ${JSON.stringify(shape)}`,
          inputs: [
            { data: randn(prod(shape), 11, 1.3, 0.4), shape, dtype: "f16" },
            { data: randn(C, 12, 0.5, 1), shape: [C] },
            { data: randn(C, 13, 0.5), shape: [C] },
          ],
          gpuFn: ([x, w, b]) => {
            const y = ops.groupNorm(x, groups, w, b, eps, { silu });
            expect(y.dtype).toBe("f16");
            return y;
          },
          refFn: ([x, w, b]) => groupNormRef(x, N, C, S, groups, w, b, eps, silu),
          fwd: FWD,
          bwd: BWD,
        });
      });
    }

    test("UNet-sized forward: 32 groups on [2, 64, 32, 32] + silu, eps 1e-6", async () => {
      setNormReduction(reduction);
      const shape = [2, 64, 32, 32];
      const x = roundF16(randn(prod(shape), 31, 2, -0.5));
      const w = randn(64, 32, 0.3, 1);
      const b = randn(64, 33, 0.3);
      const y = noGrad(() => ops.groupNorm(toGpu(x, shape, "f16"), 32, toGpu(w, [64]), toGpu(b, [64]), 1e-6, { silu: true }));
      expect(y.dtype).toBe("f16");
      expectClose(await y.read(), groupNormRef(x, 2, 64, 1024, 32, w, b, 1e-6, true), FWD, `groupNorm f16 2x64x32x32 ${reduction}`);
      y.dispose();
    });
  });
}

describe("groupNorm on f16 activations: statistics in f32", () => {
  test("a group of 65536 values of mean 3: its sum (~2e5) is past f16's range, the output is not", async () => {
    // Summing in f16 would overflow to inf (f16 max 65504) and give NaN outputs; f32 sums are exact enough.
    const shape = [1, 4, 128, 128];
    const x = roundF16(randn(prod(shape), 41, 1, 3));
    const w = new Float64Array(4).fill(1);
    const b = new Float64Array(4);
    for (const reduction of REDUCTIONS) {
      setNormReduction(reduction);
      const y = noGrad(() => ops.groupNorm(toGpu(x, shape, "f16"), 1, toGpu(w, [4]), toGpu(b, [4]), 1e-5));
      // 65536-term f32 sums carry ~1e-5 relative error in the mean and variance: a looser atol.
      expectClose(await y.read(), groupNormRef(x, 1, 4, 128 * 128, 1, w, b, 1e-5), { atol: 1e-4, rtol: 5e-4 }, `groupNorm f16 large group ${reduction}`);
      y.dispose();
    }
  });

  test("inputs over one storage binding run in per-sample windows (forward and both backward kernels)", async () => {
    // A pretend limit of 1 KiB holds one sample of 8 x 64 halves: three windows for three samples.
    setBindingLimitForTests(1024);
    const shape = [3, 8, 8, 8];
    await gradCheck({
      label: "groupNorm f16 windows",
      inputs: [
        { data: randn(prod(shape), 51, 1, 0.2), shape, dtype: "f16" },
        { data: randn(8, 52, 0.5, 1), shape: [8] },
        { data: randn(8, 53, 0.5), shape: [8] },
      ],
      gpuFn: ([x, w, b]) => ops.groupNorm(x, 4, w, b, 1e-5, { silu: true }),
      refFn: ([x, w, b]) => groupNormRef(x, 3, 8, 64, 4, w, b, 1e-5, true),
      fwd: FWD,
      bwd: BWD,
    });
  });

  test("frozen affine parameters: only dx, in f16", async () => {
    await gradCheck({
      label: "groupNorm f16 frozen",
      inputs: [
        { data: randn(32, 21), shape: [2, 4, 4], dtype: "f16" },
        { data: randn(4, 22, 0.5, 1), shape: [4], grad: false },
        { data: randn(4, 23), shape: [4], grad: false },
      ],
      gpuFn: ([x, w, b]) => ops.groupNorm(x, 2, w, b, 1e-6, { silu: true }),
      refFn: ([x, w, b]) => groupNormRef(x, 2, 4, 4, 2, w, b, 1e-6, true),
      fwd: FWD,
      bwd: BWD,
    });
  });

  test("f16 affine parameters are refused (they stay f32), naming the op and the shapes", () => {
    const x = Tensor.from(new Float32Array(16), [1, 4, 4], "f16");
    const w16 = Tensor.from(new Float32Array(4), [4], "f16");
    const b = Tensor.from(new Float32Array(4), [4]);
    expect(() => ops.groupNorm(x, 2, w16, b)).toThrow("groupNorm: weight must be f32, got f16 [4]");
    expect(() => ops.layerNorm(x, w16, b)).toThrow("layerNorm: weight must be f32, got f16 [4]");
    for (const t of [x, w16, b]) t.dispose();
  });

  test("an f32 upstream gradient for an f16 output is refused in the backward", () => {
    const x = Tensor.from(new Float32Array(16).map((_, i) => i), [1, 4, 4], "f16").requireGrad();
    const w = Tensor.from(new Float32Array(4).fill(1), [4]);
    const b = Tensor.from(new Float32Array(4), [4]);
    const y = ops.groupNorm(x, 2, w, b);
    const g32 = Tensor.from(new Float32Array(16), [1, 4, 4]);
    try {
      expect(() => backward(y, g32)).toThrow("groupNorm backward: an f32 gradient [1,4,4] for an f16 output [1,4,4]");
    } finally {
      clearTape();
      for (const t of [x, w, b, y, g32]) t.dispose();
    }
  });
});

for (const reduction of REDUCTIONS) {
  describe(`layerNorm on f16 activations, ${reduction} reductions`, () => {
    // [rows, D]: D = 1, 7, 33 take scalar loads; 64 and 8 vec4 loads.
    for (const [rows, D] of [[3, 1], [4, 7], [5, 33], [2, 64], [9, 8]]) {
      test(`rows ${rows} width ${D}: f16 y and dx, f32 dweight and dbias`, async () => {
        setNormReduction(reduction);
        const eps = 1e-5;
        await gradCheck({
          label: `layerNorm f16 ${rows}x${D}`,
          inputs: [
            { data: randn(rows * D, 61, 1.5, 0.3), shape: [rows, D], dtype: "f16" },
            { data: randn(D, 62, 0.5, 1), shape: [D] },
            { data: randn(D, 63, 0.5), shape: [D] },
          ],
          gpuFn: ([x, w, b]) => {
            const y = ops.layerNorm(x, w, b, eps);
            expect(y.dtype).toBe("f16");
            return y;
          },
          refFn: ([x, w, b]) => layerNormRef(x, D, w, b, eps),
          fwd: FWD,
          bwd: BWD,
        });
      });
    }
  });
}
