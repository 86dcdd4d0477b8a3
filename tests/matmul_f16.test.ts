// f16 activations through the matmul family (needs shader-f16: lavapipe has it): an f16 first operand
// and an f16 result, f32 accumulation, one rounding in the epilogue. Forward against the float64
// reference on f16-rounded inputs at f16 tolerances on every kernel (register with and without the
// vec4-along-k loads, the transposed narrow-output path, both tiled sizes), also with K split into
// chunks (split-K); backward of matmul, linear and loraLinear against central finite differences,
// gradients in each operand's dtype.
import { afterEach, describe, expect, test } from "bun:test";
import { gpu } from "../src/gpu/device.ts";
import { Tensor, noGrad, scope } from "../src/tensor/index.ts";
import * as ops from "../src/tensor/ops/index.ts";
import { setMatmulTuning, type MatmulTuning } from "../src/tensor/ops/matmul_tuning.ts";
import { gemm, setMatmulK4 } from "../src/tensor/ops/matmul_gemm.ts";
import { lastSplit, setSplitK, splitLaunches } from "../src/tensor/ops/split_k.ts";
import { expectClose, gradCheck, prod, randn, roundF16, toGpu, useGpu } from "./helpers.ts";
import { type RefActivation, refLinear, refLora, refMatmul } from "./ref/matmul.ts";

useGpu();
afterEach(() => {
  setMatmulTuning(null);
  setMatmulK4("auto");
  setSplitK("auto");
});

// f32 accumulation error (grows with K) plus the f16 rounding of the result: half an ulp, 2^-11
// relative; 1e-3 leaves room for both and fails on any f16 rounding of an operand the reference
// did not see (an error of ~1e-3 per product term summed over K).
const f16Tol = (k: number) => ({ atol: 1e-6 * k + 1e-4, rtol: 1e-3 });

const KERNELS: Record<string, { tuning: MatmulTuning; k4: "auto" | boolean }> = {
  "register, vec4 along k": { tuning: { kind: "register", rowGroups: 4, colGroups: 1 }, k4: true },
  "register, scalar k": { tuning: { kind: "register", rowGroups: 4, colGroups: 1 }, k4: false },
  "register, 64 columns": { tuning: { kind: "register", rowGroups: 2, colGroups: 2 }, k4: "auto" },
  "tiled 64x64": { tuning: { kind: "tiled", per: 4 }, k4: "auto" },
  "tiled 128x128": { tuning: { kind: "tiled", per: 8 }, k4: "auto" },
};

const stored = (logical: number[], trans: boolean) => (trans ? [...logical.slice(0, -2), logical.at(-1)!, logical.at(-2)!] : logical);

test("this adapter reads and writes f16 activations (the tests below run only where shader-f16 is)", () => {
  // lavapipe, the CI adapter, has shader-f16; a GPU without it would make every f16 test below vacuous.
  expect(gpu().hasF16).toBe(true);
});

for (const [kernel, { tuning, k4 }] of Object.entries(KERNELS)) {
  describe(`f16 activations, ${kernel}`, () => {
    test("matmul: f16 A with f16 or f32 B gives f16 C; odd sizes, batches, transposes", async () => {
      setMatmulTuning(tuning);
      setMatmulK4(k4);
      const cases: [number[], number[]][] = [[[3, 5], [5, 7]], [[33, 68], [68, 17]], [[2, 3, 9, 8], [8, 6]], [[2, 40, 16], [2, 16, 36]], [[70, 12], [12, 40]]];
      let seed = 500;
      for (const [la, lb] of cases) {
        for (const transA of [false, true]) {
          for (const transB of [false, true]) {
            for (const bDtype of ["f16", "f32"] as const) {
              const sa = stored(la, transA);
              const sb = stored(lb, transB);
              const a = roundF16(randn(prod(sa), seed++));
              const b0 = randn(prod(sb), seed++);
              const b = bDtype === "f16" ? roundF16(b0) : b0;
              const y = scope(() => ops.matmul(toGpu(a, sa, "f16"), toGpu(b, sb, bDtype), { transA, transB }));
              const ref = refMatmul(a, sa, b, sb, transA, transB);
              expect(y.dtype).toBe("f16");
              expect([...y.shape]).toEqual(ref.shape);
              expectClose(await y.read(), roundF16(ref.data), f16Tol(la.at(-1)!), `${kernel} ${JSON.stringify(sa)}${transA ? "ᵀ" : ""} x ${bDtype} ${JSON.stringify(sb)}${transB ? "ᵀ" : ""}`);
              y.dispose();
            }
          }
        }
      }
    });

    test("linear: f16 x and weight, f32 bias, fused activation; narrow outputs (computed transposed on the register kernel)", async () => {
      setMatmulTuning(tuning);
      setMatmulK4(k4);
      for (const [rows, inF, outF] of [[10, 36, 45], [40, 13, 9], [64, 20, 4]]) {
        const x = roundF16(randn(rows * inF, rows));
        const w = roundF16(randn(outF * inF, inF, 0.3));
        const bias = randn(outF, outF);
        for (const act of ["none", "gelu"] as RefActivation[]) {
          const y = noGrad(() => scope(() => ops.linear(toGpu(x, [rows, inF], "f16"), toGpu(w, [outF, inF], "f16"), toGpu(bias, [outF]), { activation: act })));
          expect(y.dtype).toBe("f16");
          expectClose(await y.read(), refLinear(x, inF, w, outF, bias, act), f16Tol(inF), `${kernel} linear ${rows}x${inF}x${outF} ${act}`);
          y.dispose();
        }
      }
    });

    test("epilogue: an f16 addend is added in f32 before the one rounding", async () => {
      setMatmulTuning(tuning);
      setMatmulK4(k4);
      const [m, k, n] = [37, 24, 41];
      const a = roundF16(randn(m * k, 71));
      const b = randn(n * k, 72, 0.4);
      const add = roundF16(randn(m * n, 73, 100)); // large: an f32 result rounded twice would show
      const y = noGrad(() => scope(() => gemm(toGpu(a, [m, k], "f16"), toGpu(b, [n, k]), { transB: true, addend: toGpu(add, [m, n], "f16"), alpha: 0.5 })));
      const prodRef = refMatmul(a, [m, k], b, [n, k], false, true).data;
      expectClose(await y.read(), roundF16(prodRef.map((v, i) => 0.5 * v + add[i])), { atol: 1e-3, rtol: 1e-3 }, `${kernel} addend`);
      y.dispose();
    });
  });
}

describe("f16 activations: outputs chosen apart from the inputs", () => {
  test("f32 A with an f16 result, f16 A with an f32 result", async () => {
    const [m, k, n] = [20, 12, 33];
    const a = roundF16(randn(m * k, 81));
    const b = randn(k * n, 82);
    const ref = refMatmul(a, [m, k], b, [k, n]).data;
    const y16 = noGrad(() => scope(() => gemm(toGpu(a, [m, k]), toGpu(b, [k, n]), { out: "f16" })));
    expect(y16.dtype).toBe("f16");
    expectClose(await y16.read(), roundF16(ref), f16Tol(k), "f32 -> f16");
    const y32 = noGrad(() => scope(() => gemm(toGpu(a, [m, k], "f16"), toGpu(b, [k, n]), { out: "f32" })));
    expect(y32.dtype).toBe("f32");
    expectClose(await y32.read(), ref, { atol: 1e-5 * k, rtol: 1e-5 }, "f16 -> f32 (no rounding of the result)");
    y16.dispose();
    y32.dispose();
  });

  test("an addend whose dtype differs from the output is refused, naming both", () => {
    const a = Tensor.from(new Float32Array(6), [2, 3], "f16");
    const b = Tensor.from(new Float32Array(6), [3, 2]);
    const add = Tensor.from(new Float32Array(4), [2, 2]);
    expect(() => gemm(a, b, { addend: add, op: "test" })).toThrow("test: addend [2,2] f32 does not match the f16 output [2,2]");
    for (const t of [a, b, add]) t.dispose();
  });
});

// Backward: f16 tensors give f16 gradients (a second rounding of each gradient), so 2e-3 relative.
const f16Bwd = { atol: 2e-3, rtol: 2e-3 };

describe("f16 activations, backward against finite differences", () => {
  for (const [transA, transB] of [[false, false], [true, false], [false, true], [true, true]]) {
    test(`matmul, f16 a and f32 b${transA ? ", a transposed" : ""}${transB ? ", b transposed" : ""}`, async () => {
      const la = [2, 5, 6];
      const lb = [6, 7];
      const sa = stored(la, transA);
      const sb = stored(lb, transB);
      await gradCheck({
        label: "matmul f16",
        inputs: [{ data: randn(prod(sa), 91), shape: sa, dtype: "f16" }, { data: randn(prod(sb), 92), shape: sb }],
        gpuFn: ([a, b]) => ops.matmul(a, b, { transA, transB }),
        refFn: ([a, b]) => refMatmul(a, sa, b, sb, transA, transB).data,
        fwd: f16Tol(6),
        bwd: f16Bwd,
      });
    });
  }

  test("matmul with a broadcast f16 b (its gradient is summed over the batch in f32, then rounded)", async () => {
    await gradCheck({
      label: "matmul f16 broadcast",
      inputs: [{ data: randn(2 * 3 * 4 * 5, 93), shape: [2, 3, 4, 5], dtype: "f16" }, { data: randn(3 * 5 * 6, 94), shape: [3, 5, 6], dtype: "f16" }],
      gpuFn: ([a, b]) => ops.matmul(a, b),
      refFn: ([a, b]) => refMatmul(a, [2, 3, 4, 5], b, [3, 5, 6]).data,
      fwd: f16Tol(5),
      bwd: f16Bwd,
    });
  });

  for (const act of ["none", "gelu"] as RefActivation[]) {
    test(`linear: f16 x, f32 weight and bias (the master weights of mixed precision), activation ${act}`, async () => {
      const [inF, outF] = [8, 5];
      const xShape = [2, 3, inF];
      await gradCheck({
        label: `linear f16 ${act}`,
        inputs: [
          { data: randn(prod(xShape), 95), shape: xShape, dtype: "f16" },
          { data: randn(outF * inF, 96, 0.5), shape: [outF, inF] },
          { data: randn(outF, 97), shape: [outF] },
        ],
        gpuFn: ([x, w, b]) => ops.linear(x, w, b, { activation: act }),
        refFn: ([x, w, b]) => refLinear(x, inF, w, outF, b, act),
        fwd: f16Tol(inF),
        bwd: f16Bwd,
      });
    });
  }

  test("loraLinear: f16 x and frozen f16 weight, f32 LoRA factors", async () => {
    const [inF, outF, r] = [6, 5, 2];
    const xShape = [2, 17, inF];
    const scale = 0.7;
    await gradCheck({
      label: "loraLinear f16",
      inputs: [
        { data: randn(prod(xShape), 101), shape: xShape, dtype: "f16" },
        { data: randn(outF * inF, 102), shape: [outF, inF], grad: false, dtype: "f16" },
        { data: randn(outF, 103), shape: [outF], grad: false },
        { data: randn(r * inF, 104, 0.5), shape: [r, inF] },
        { data: randn(outF * r, 105), shape: [outF, r] },
      ],
      gpuFn: ([x, w, b, down, up]) => ops.loraLinear(x, w, b, down, up, scale),
      // x·downᵀ and the base product are f16 intermediates on the GPU, rounded where the float64
      // reference is not: hence the wider forward tolerance.
      refFn: ([x, w, b, down, up]) => refLora(x, inF, w, outF, b, down, up, r, scale),
      fwd: { atol: 5e-3, rtol: 3e-3 },
      bwd: f16Bwd,
    });
  });
});

// Split-K with f16 activations: each chunk sums f16 inputs in f32 into f32 partials; the reduction
// adds them in f32 and rounds once, so the same one-rounding tolerance holds as unsplit.
describe("f16 activations, split-K", () => {
  for (const [kernel, { tuning, k4 }] of Object.entries(KERNELS)) {
    test(`${kernel}: f16 A and output, f16 or f32 B, bias + GELU and an f16 addend; K 257 (no chunk divides it) and more splits than K steps`, async () => {
      setMatmulTuning(tuning);
      setMatmulK4(k4);
      let seed = 900;
      for (const s of [3, 1000]) {
        setSplitK(s);
        for (const [m, k, n] of [[33, 257, 40], [64, 68, 8], [9, 40, 36]]) {
          for (const bDtype of ["f16", "f32"] as const) {
            const x = roundF16(randn(m * k, seed++));
            const w0 = randn(n * k, seed++, 0.3);
            const w = bDtype === "f16" ? roundF16(w0) : w0;
            const bias = randn(n, seed++);
            const label = `${kernel} split ${s} ${m}x${k}x${n} ${bDtype} weight`;
            const y = noGrad(() => scope(() => ops.linear(toGpu(x, [m, k], "f16"), toGpu(w, [n, k], bDtype), toGpu(bias, [n]), { activation: "gelu" })));
            expect(lastSplit("matmul")).toBeGreaterThan(1);
            expect(y.dtype).toBe("f16");
            expectClose(await y.read(), roundF16(refLinear(x, k, w, n, bias, "gelu")), f16Tol(k), label);
            y.dispose();
            const add = roundF16(randn(m * n, seed++, 100)); // large: a result rounded twice would show
            const c = noGrad(() => scope(() => gemm(toGpu(x, [m, k], "f16"), toGpu(w, [n, k], bDtype), { transB: true, addend: toGpu(add, [m, n], "f16"), alpha: 0.5 })));
            const prodRef = refMatmul(x, [m, k], w, [n, k], false, true).data;
            expectClose(await c.read(), roundF16(prodRef.map((v, i) => 0.5 * v + add[i])), { atol: 1e-6 * k + 1e-3, rtol: 1e-3 }, `${label} addend`);
            c.dispose();
          }
        }
      }
    });
  }

  test("backward on the tiled kernel: f16 gradients of matmul and linear with every product split", async () => {
    setMatmulTuning({ kind: "tiled", per: 4 });
    setSplitK(3);
    const la = [2, 17, 37];
    const lb = [37, 20];
    const before = splitLaunches("matmul");
    await gradCheck({
      label: "matmul f16 split-K",
      inputs: [{ data: randn(prod(la), 950), shape: la, dtype: "f16" }, { data: randn(prod(lb), 951), shape: lb, dtype: "f16" }],
      gpuFn: ([a, b]) => ops.matmul(a, b),
      refFn: ([a, b]) => refMatmul(a, la, b, lb).data,
      fwd: f16Tol(37),
      bwd: f16Bwd,
    });
    // The forward (K 37), dA (K 20) and dB (K 2 x 17 rows) all split.
    expect(splitLaunches("matmul") - before).toBe(3);
    const [rows, inF, outF] = [34, 20, 18];
    await gradCheck({
      label: "linear f16 split-K",
      inputs: [
        { data: randn(rows * inF, 952), shape: [rows, inF], dtype: "f16" },
        { data: randn(outF * inF, 953, 0.5), shape: [outF, inF] },
        { data: randn(outF, 954), shape: [outF] },
      ],
      gpuFn: ([x, w, b]) => ops.linear(x, w, b),
      refFn: ([x, w, b]) => refLinear(x, inF, w, outF, b),
      fwd: f16Tol(inF),
      bwd: f16Bwd,
    });
  });
});
