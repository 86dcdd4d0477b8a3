// f16 activations through the elementwise ops a UNet's linear layers use (needs shader-f16: lavapipe
// has it): stored as f16, computed in f32, rounded once. Forward against float64 references on
// f16-rounded inputs, backward against central finite differences (gradients in f16), on vec4 and
// scalar sizes, same-shape and broadcast; mixed f16/f32 inputs are refused.
import { describe, expect, test } from "bun:test";
import { gpu } from "../src/gpu/device.ts";
import { Tensor } from "../src/tensor/index.ts";
import * as ops from "../src/tensor/ops/index.ts";
import { expectClose, gradCheck, prod, randn, roundF16, toGpu, useGpu } from "./helpers.ts";
import { UNARY_REF, broadcast2, erf } from "./ref/elementwise.ts";

useGpu();

// One rounding of the result (half an ulp: 2^-11 relative) on f32 arithmetic.
const fwd = { atol: 1e-4, rtol: 1e-3 };
// The gradient is rounded to f16 too, and finite differences of the float64 reference see none.
const bwd = { atol: 2e-3, rtol: 2e-3 };

test("this adapter has shader-f16 (else every test below would check nothing)", () => {
  expect(gpu().hasF16).toBe(true);
});

describe("unary maps in f16", () => {
  // 12 elements (vec4 kernel) and 7 (scalar kernel)
  for (const shape of [[3, 4], [7]]) {
    for (const name of ["silu", "gelu", "sigmoid", "tanh", "neg", "square"] as const) {
      test(`${name} on ${JSON.stringify(shape)}`, async () => {
        await gradCheck({
          label: `${name} f16`,
          inputs: [{ data: randn(prod(shape), 7, 1.5), shape, dtype: "f16" }],
          gpuFn: ([x]) => {
            const y = ops[name](x);
            expect(y.dtype).toBe("f16");
            return y;
          },
          refFn: ([x]) => x.map(UNARY_REF[name]),
          fwd,
          bwd,
        });
      });
    }
  }
  test("affine uses its uniforms in f32 before the rounding", async () => {
    const x = roundF16(randn(9, 3));
    const y = ops.affine(toGpu(x, [9], "f16"), 0.1, 1000);
    expectClose(await y.read(), roundF16(x.map((v) => v * Math.fround(0.1) + 1000)), { atol: 0, rtol: 0 }, "affine f16");
    y.dispose();
  });
});

describe("binary maps in f16", () => {
  const cases: [number[], number[]][] = [[[2, 6], [2, 6]], [[3, 5], [3, 5]], [[2, 3, 8], [8]], [[4, 1, 3], [2, 1]]];
  for (const [name, f] of [["add", (a: number, b: number) => a + b], ["mul", (a: number, b: number) => a * b], ["sub", (a: number, b: number) => a - b]] as const) {
    for (const [sa, sb] of cases) {
      test(`${name} ${JSON.stringify(sa)} with ${JSON.stringify(sb)} (gradients summed over broadcast dims in f32)`, async () => {
        await gradCheck({
          label: `${name} f16`,
          inputs: [{ data: randn(prod(sa), 11), shape: sa, dtype: "f16" }, { data: randn(prod(sb), 12), shape: sb, dtype: "f16" }],
          gpuFn: ([a, b]) => ops[name](a, b),
          refFn: ([a, b]) => broadcast2(a, sa, b, sb, f).data,
          fwd,
          bwd,
        });
      });
    }
  }

  test("mixed f16 and f32 inputs are refused, naming both dtypes", () => {
    const a = Tensor.from(new Float32Array(4), [4], "f16");
    const b = Tensor.from(new Float32Array(4), [4]);
    expect(() => ops.add(a, b)).toThrow("add: inputs mix f16 and f32");
    a.dispose();
    b.dispose();
  });
});

describe("geglu in f16", () => {
  test("forward and backward", async () => {
    const shape = [2, 3, 10];
    const half = 5;
    const gelu = (x: number) => 0.5 * x * (1 + erf(x / Math.SQRT2));
    await gradCheck({
      label: "geglu f16",
      inputs: [{ data: randn(prod(shape), 21), shape, dtype: "f16" }],
      gpuFn: ([x]) => ops.geglu(x),
      refFn: ([x]) => {
        const rows = x.length / (2 * half);
        const out = new Float64Array(rows * half);
        for (let r = 0; r < rows; r++) for (let i = 0; i < half; i++) out[r * half + i] = x[r * 2 * half + i] * gelu(x[r * 2 * half + half + i]);
        return out;
      },
      fwd,
      bwd,
    });
  });
});
