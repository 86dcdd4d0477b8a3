// f16 activations through nearest upsampling (the UNet's Upsample2D): f16 in, f16 out, f16
// gradients; the copies are exact and the backward's sums over the output pixels each input pixel
// was copied to run in f32 and are rounded once. Forward against the float64 references on
// f16-rounded inputs, backward against central finite differences, both kernels (2x, to a size) and
// plane windows.
import { expect, test, describe } from "bun:test";
import * as ops from "../src/tensor/ops/index.ts";
import { Tensor, backward, clearTape } from "../src/tensor/index.ts";
import { gpu } from "../src/gpu/device.ts";
import { setBindingLimitForTests } from "../src/tensor/ops/conv_geometry.ts";
import { gradCheck, prod, randn, useGpu } from "./helpers.ts";
import { upsampleNearest2xRef, upsampleNearestRef } from "./ref/conv.ts";

useGpu();

// Forward: a copy of f16 values, exact (atol 0). Backward: each input gradient is a sum of 4 (2x)
// or a few (sized) f16 upstream values, summed in f32 (exact here: f16 values of similar exponent)
// and rounded once to f16: 2^-11 relative; the float64 central differences add ~1e-13.
const EXACT = { atol: 0 };
const GRAD = { atol: 1e-9, rtol: 2 ** -11 };

test("this adapter reads and writes f16 activations (every test below needs shader-f16)", () => {
  expect(gpu().hasF16).toBe(true);
});

describe("upsampleNearest2x on f16 activations", () => {
  for (const shape of [[2, 3, 5, 7], [1, 1, 1, 1], [1, 4, 6, 2]]) {
    test(`forward and backward ${JSON.stringify(shape)}`, async () => {
      await gradCheck({
        label: "upsampleNearest2x f16",
        inputs: [{ data: randn(prod(shape), 31), shape, dtype: "f16" }],
        gpuFn: ([x]) => {
          const y = ops.upsampleNearest2x(x);
          expect(y.dtype).toBe("f16");
          return y;
        },
        refFn: ([x]) => upsampleNearest2xRef(x, shape),
        fwd: EXACT,
        bwd: GRAD,
      });
    });
  }
  test("runs in windows of whole planes past the binding limit", async () => {
    setBindingLimitForTests(2048); // a few 18x22 f16 planes per window
    try {
      const shape = [2, 5, 9, 11];
      await gradCheck({
        label: "upsampleNearest2x f16 windows",
        inputs: [{ data: randn(prod(shape), 32), shape, dtype: "f16" }],
        gpuFn: ([x]) => ops.upsampleNearest2x(x),
        refFn: ([x]) => upsampleNearest2xRef(x, shape),
        fwd: EXACT,
        bwd: GRAD,
      });
    } finally {
      setBindingLimitForTests(null);
    }
  });
});

describe("upsampleNearest to a size on f16 activations (odd latent sizes)", () => {
  const cases: [number[], number, number][] = [[[1, 2, 3, 5], 7, 9], [[2, 3, 4, 4], 9, 8], [[1, 2, 7, 6], 5, 13]];
  for (const [shape, oh, ow] of cases) {
    test(`${JSON.stringify(shape)} -> ${oh}x${ow}`, async () => {
      await gradCheck({
        label: "upsampleNearest f16",
        inputs: [{ data: randn(prod(shape), 33), shape, dtype: "f16" }],
        gpuFn: ([x]) => ops.upsampleNearest(x, oh, ow),
        refFn: ([x]) => upsampleNearestRef(x, shape, oh, ow),
        fwd: EXACT,
        bwd: GRAD,
      });
    });
  }
  test("windows of whole planes", async () => {
    setBindingLimitForTests(1024);
    try {
      const shape = [2, 3, 5, 6];
      await gradCheck({
        label: "upsampleNearest f16 windows",
        inputs: [{ data: randn(prod(shape), 34), shape, dtype: "f16" }],
        gpuFn: ([x]) => ops.upsampleNearest(x, 11, 13),
        refFn: ([x]) => upsampleNearestRef(x, shape, 11, 13),
        fwd: EXACT,
        bwd: GRAD,
      });
    } finally {
      setBindingLimitForTests(null);
    }
  });
  test("an f32 upstream gradient for an f16 output is refused", () => {
    const x = Tensor.from(new Float32Array(4), [1, 1, 2, 2], "f16").requireGrad();
    const y = ops.upsampleNearest2x(x);
    const g32 = Tensor.from(new Float32Array(16), [1, 1, 4, 4]);
    try {
      expect(() => backward(y, g32)).toThrow("upsampleNearest2x backward: an f32 gradient [1,1,4,4] for an f16 output");
    } finally {
      clearTape();
      for (const t of [x, y, g32]) t.dispose();
    }
  });
});
