import { afterEach, describe, expect, test } from "bun:test";
import { gpu } from "../src/gpu/device.ts";
import { benchMatmul } from "../src/bench/matmul.ts";
import { Tensor, backward, clearTape, noGrad, scope } from "../src/tensor/index.ts";
import * as ops from "../src/tensor/ops/index.ts";
import { f16BitsToF32, f32ToF16Bits } from "../src/tensor/f16.ts";
import { hasRegisterSubgroups, setMatmulTuning, tiledDepth, tiledPer, type MatmulTuning } from "../src/tensor/ops/matmul_tuning.ts";
import { setMatmulK4 } from "../src/tensor/ops/matmul_gemm.ts";
import { expectClose, gradCheck, prod, randn, toGpu, useGpu } from "./helpers.ts";
import { type RefActivation, refLinear, refLora, refMatmul } from "./ref/matmul.ts";

useGpu();
afterEach(() => setMatmulTuning(null));

// Tolerances. Forward: f32 accumulation in k order, so the error grows with K: atol 1e-6 * K + 1e-5,
// rtol 1e-5. Gradients: helpers' default (atol 1e-3, rtol 1e-3) against float64 central differences.
const fwdTol = (k: number) => ({ atol: 1e-6 * k + 1e-5, rtol: 1e-5 });

const KERNELS: Record<string, MatmulTuning> = {
  register: { kind: "register", rowGroups: 4, colGroups: 1 },
  "tiled 64x64": { kind: "tiled", per: 4 },
  "tiled 128x128": { kind: "tiled", per: 8 },
  "tiled 64x64, k step 32": { kind: "tiled", per: 4, depth: 32 },
};

/** Force `kernel`; false when this adapter cannot run it (then the per-adapter choice must avoid it). */
function useKernel(kernel: string): boolean {
  if (kernel === "register" && !hasRegisterSubgroups(gpu())) {
    expect(ops.matmulTuning(gpu()).kind).toBe("tiled");
    return false;
  }
  setMatmulTuning(KERNELS[kernel]);
  return true;
}

/** Stored shape of an operand whose logical (op) shape is [..., r, c]. */
const stored = (logical: number[], trans: boolean) => (trans ? [...logical.slice(0, -2), logical.at(-1)!, logical.at(-2)!] : logical);

const round16 = (v: Float64Array) => v.map((x) => f16BitsToF32(f32ToF16Bits(x)));

// [op(A) shape, op(B) shape]: odd sizes, size 1, one/two/four row groups, several column blocks, batches.
const FORWARD_CASES: [number[], number[]][] = [
  [[1, 1], [1, 1]],
  [[3, 5], [5, 7]],
  [[12, 7], [7, 40]],
  [[33, 65], [65, 17]],
  [[2, 3, 9, 4], [2, 3, 4, 6]],
  [[2, 3, 9, 4], [4, 6]],
  [[9, 4], [2, 3, 4, 6]],
  [[2, 1, 5, 4], [1, 3, 4, 6]],
  [[2, 40, 16], [2, 16, 33]],
  [[131, 21], [21, 133]],
];

for (const kernel of Object.keys(KERNELS)) {
  describe(`matmul forward, ${kernel} kernel`, () => {
    test("odd sizes, batches and broadcasting, every transpose", async () => {
      if (!useKernel(kernel)) return;
      let seed = 1;
      for (const [la, lb] of FORWARD_CASES) {
        for (const transA of [false, true]) {
          for (const transB of [false, true]) {
            const sa = stored(la, transA);
            const sb = stored(lb, transB);
            const a = randn(prod(sa), seed++);
            const b = randn(prod(sb), seed++);
            const ref = refMatmul(a, sa, b, sb, transA, transB);
            const y = scope(() => ops.matmul(toGpu(a, sa), toGpu(b, sb), { transA, transB }));
            expect([...y.shape]).toEqual(ref.shape);
            expectClose(await y.read(), ref.data, fwdTol(la.at(-1)!), `${kernel} ${JSON.stringify(sa)}${transA ? "ᵀ" : ""} x ${JSON.stringify(sb)}${transB ? "ᵀ" : ""}`);
            y.dispose();
          }
        }
      }
    });

    test("a medium shape (several row blocks, long K)", async () => {
      if (!useKernel(kernel)) return;
      const [m, k, n] = [130, 257, 96];
      const a = randn(m * k, 41);
      const b = randn(k * n, 42);
      const y = scope(() => ops.matmul(toGpu(a, [m, k]), toGpu(b, [k, n])));
      expectClose(await y.read(), refMatmul(a, [m, k], b, [k, n]).data, fwdTol(k), `${kernel} ${m}x${k}x${n}`);
      y.dispose();
    });

    test("linear epilogue: bias and each activation fused (no grad recorded)", async () => {
      if (!useKernel(kernel)) return;
      // [rows, in, out]; 40 rows x 9 outputs is computed transposed by the register kernel
      for (const [rows, inF, outF] of [[10, 37, 45], [40, 13, 9]]) {
        const xShape = [2, rows / 2, inF];
        const x = randn(prod(xShape), 7);
        const w = randn(outF * inF, 8, 0.3);
        const bias = randn(outF, 9);
        for (const act of ["none", "silu", "gelu"] as RefActivation[]) {
          for (const withBias of [true, false]) {
            const y = noGrad(() => scope(() => ops.linear(toGpu(x, xShape), toGpu(w, [outF, inF]), withBias ? toGpu(bias, [outF]) : null, { activation: act })));
            expect([...y.shape]).toEqual([2, rows / 2, outF]);
            expectClose(await y.read(), refLinear(x, inF, w, outF, withBias ? bias : null, act), fwdTol(inF), `${kernel} linear ${rows}x${inF}x${outF} ${act} bias=${withBias}`);
            y.dispose();
          }
        }
      }
    });

    test("f16 weights are read as f16 and accumulated in f32", async () => {
      if (!useKernel(kernel)) return;
      const [rows, inF, outF] = [11, 29, 21];
      const x = randn(rows * inF, 10);
      const w = randn(outF * inF, 11, 0.5);
      const bias = randn(outF, 12);
      const w16 = round16(w);
      const wT = Tensor.from(Float32Array.from(w), [outF, inF], "f16");
      const y = noGrad(() => scope(() => ops.linear(toGpu(x, [rows, inF]), wT, toGpu(bias, [outF]), { activation: "gelu" })));
      expectClose(await y.read(), refLinear(x, inF, w16, outF, bias, "gelu"), fwdTol(inF), `${kernel} f16 linear`);
      y.dispose();
      // f16 as the untransposed B of a batched matmul (odd K: the pairs of halves straddle rows)
      const b = randn(2 * inF * 7, 13);
      const bT = Tensor.from(Float32Array.from(b), [2, inF, 7], "f16");
      const z = scope(() => ops.matmul(toGpu(x, [rows, inF]), bT));
      expectClose(await z.read(), refMatmul(x, [rows, inF], round16(b), [2, inF, 7]).data, fwdTol(inF), `${kernel} f16 matmul`);
      z.dispose();
      wT.dispose();
      bT.dispose();
    });
  });
}

describe("matmul backward", () => {
  const cases: [number[], number[], boolean, boolean][] = [
    [[3, 5], [5, 4], false, false],
    [[3, 5], [5, 4], true, false],
    [[3, 5], [5, 4], false, true],
    [[3, 5], [5, 4], true, true],
    [[2, 3, 4, 5], [5, 3], false, false], // one B for the whole batch
    [[2, 3, 4, 5], [5, 3], false, true],
    [[2, 1, 3, 4], [1, 2, 4, 5], true, false], // both operands broadcast
    [[3, 4], [2, 4, 5], false, true], // A broadcast over B's batch
  ];
  for (const [la, lb, transA, transB] of cases) {
    test(`${JSON.stringify(la)}${transA ? "ᵀ" : ""} x ${JSON.stringify(lb)}${transB ? "ᵀ" : ""}`, async () => {
      const sa = stored(la, transA);
      const sb = stored(lb, transB);
      await gradCheck({
        label: "matmul",
        inputs: [{ data: randn(prod(sa), 21), shape: sa }, { data: randn(prod(sb), 22), shape: sb }],
        gpuFn: ([a, b]) => ops.matmul(a, b, { transA, transB }),
        refFn: ([a, b]) => refMatmul(a, sa, b, sb, transA, transB).data,
        fwd: fwdTol(la.at(-1)!),
      });
    });
  }

  test("only the operand that requires grad gets one", async () => {
    const a = toGpu(randn(12, 1), [3, 4]).requireGrad();
    const b = toGpu(randn(20, 2), [4, 5]);
    const y = ops.matmul(a, b);
    backward(y, ops.onesLike(y));
    expect(a.grad).not.toBeNull();
    expect(b.grad).toBeNull();
    for (const t of [a, b, y]) t.dispose();
  });

  test("no leak: forward and backward inside a scope release everything", async () => {
    const before = gpu().pool.snapshot().liveBytes;
    scope(() => {
      const a = toGpu(randn(2 * 6 * 5, 3), [2, 6, 5]).requireGrad();
      const w = toGpu(randn(4 * 5, 4), [4, 5]).requireGrad();
      const y = ops.linear(a, w, null, { activation: "silu" });
      backward(ops.sum(y));
      a.dispose();
      w.dispose();
    });
    clearTape();
    await gpu().sync();
    expect(gpu().pool.snapshot().liveBytes).toBe(before);
  });

  test("K = 0: the empty sum gives the bias", async () => {
    const x = Tensor.from(new Float32Array(0), [3, 0]);
    const w = Tensor.from(new Float32Array(0), [4, 0]);
    const bias = toGpu([0.5, -1, 2, 3.25], [4]);
    const y = ops.linear(x, w, bias);
    expectClose(await y.read(), [0.5, -1, 2, 3.25, 0.5, -1, 2, 3.25, 0.5, -1, 2, 3.25], { atol: 0 }, "K=0");
    for (const t of [x, w, bias, y]) t.dispose();
  });

  test("the benchmark reports a row per shape", async () => {
    const rows = await benchMatmul({ shapes: [[40, 24, 72]], reps: 1, f16: true });
    expect(rows.map((r) => `${r.name} ${r.shape}`)).toEqual(["matmul 40x24x72", "linear f16 weight 40x24x72"]);
    for (const r of rows) expect(r.gflops!).toBeGreaterThan(0);
  });

  test("shape errors name the op and both shapes", () => {
    const a = ops.zeros([3, 4]);
    const b = ops.zeros([5, 6]);
    expect(() => ops.matmul(a, b)).toThrow(/matmul: inner sizes differ \(4 vs 5\) for \[3,4\] and \[5,6\]/);
    expect(() => ops.linear(a, b)).toThrow(/linear: input \[3,4\] does not end in 6 features of weight \[5,6\]/);
    a.dispose();
    b.dispose();
  });
});

describe("linear backward", () => {
  const [inF, outF] = [6, 5];
  const xShape = [2, 3, inF];
  for (const act of ["none", "silu", "gelu"] as RefActivation[]) {
    test(`with bias, activation ${act}`, async () => {
      await gradCheck({
        label: `linear ${act}`,
        inputs: [
          { data: randn(prod(xShape), 31), shape: xShape },
          { data: randn(outF * inF, 32, 0.5), shape: [outF, inF] },
          { data: randn(outF, 33), shape: [outF] },
        ],
        gpuFn: ([x, w, b]) => ops.linear(x, w, b, { activation: act }),
        refFn: ([x, w, b]) => refLinear(x, inF, w, outF, b, act),
        fwd: fwdTol(inF),
      });
    });
  }
  test("without bias", async () => {
    await gradCheck({
      label: "linear no bias",
      inputs: [{ data: randn(prod(xShape), 34), shape: xShape }, { data: randn(outF * inF, 35), shape: [outF, inF] }],
      gpuFn: ([x, w]) => ops.linear(x, w),
      refFn: ([x, w]) => refLinear(x, inF, w, outF, null),
      fwd: fwdTol(inF),
    });
  });
  test("through f16 weights: dx = dy W with W read as f16", async () => {
    const [rows, i, o] = [4, 7, 9];
    const x = toGpu(randn(rows * i, 36), [rows, i]).requireGrad();
    const w = randn(o * i, 37);
    const wT = Tensor.from(Float32Array.from(w), [o, i], "f16");
    const y = ops.linear(x, wT);
    const G = randn(rows * o, 38);
    backward(y, toGpu(G, [rows, o]));
    // dx[r, t] = sum_o G[r, o] W16[o, t]
    const dx = refMatmul(G, [rows, o], round16(w), [o, i]).data;
    expectClose(await x.grad!.read(), dx, fwdTol(o), "f16 dx");
    for (const t of [x, wT, y]) t.dispose();
  });
});

describe("loraLinear", () => {
  const [inF, outF, r] = [6, 5, 2];
  const xShape = [2, 17, inF]; // 34 rows: the rank-r products run transposed on the register kernel
  const scale = 0.7;
  test("forward and gradients for x, down and up (W, b frozen)", async () => {
    await gradCheck({
      label: "loraLinear",
      inputs: [
        { data: randn(prod(xShape), 51), shape: xShape },
        { data: randn(outF * inF, 52), shape: [outF, inF], grad: false },
        { data: randn(outF, 53), shape: [outF], grad: false },
        { data: randn(r * inF, 54, 0.5), shape: [r, inF] },
        { data: randn(outF * r, 55), shape: [outF, r] },
      ],
      gpuFn: ([x, w, b, down, up]) => ops.loraLinear(x, w, b, down, up, scale),
      refFn: ([x, w, b, down, up]) => refLora(x, inF, w, outF, b, down, up, r, scale),
      fwd: fwdTol(inF),
    });
  });
  test("W and b never get a gradient, even when marked trainable", async () => {
    const x = toGpu(randn(prod(xShape), 61), xShape).requireGrad();
    const w = toGpu(randn(outF * inF, 62), [outF, inF]).requireGrad();
    const b = toGpu(randn(outF, 63), [outF]).requireGrad();
    const down = toGpu(randn(r * inF, 64), [r, inF]).requireGrad();
    const up = toGpu(randn(outF * r, 65), [outF, r]).requireGrad();
    const y = ops.loraLinear(x, w, b, down, up, scale);
    backward(ops.sum(y));
    expect(w.grad).toBeNull();
    expect(b.grad).toBeNull();
    expect(x.grad).not.toBeNull();
    expect(down.grad).not.toBeNull();
    expect(up.grad).not.toBeNull();
    for (const t of [x, w, b, down, up, y]) t.dispose();
    clearTape();
  });
});

describe("matmul, vec4-along-k register kernel (both operands contiguous along k, k % 4 == 0)", () => {
  test("matches the reference and the scalar kernel: narrow and wide outputs, bias + activation, f16 weights, batches", async () => {
    if (!hasRegisterSubgroups(gpu())) return;
    let seed = 300;
    const cases: [number, number, number][] = [[1, 4, 3], [9, 12, 31], [40, 68, 33], [17, 8, 70], [64, 36, 4], [33, 16, 130], [300, 20, 40]];
    for (const [rows, inF, outF] of cases) {
      for (const f16 of [false, true]) {
        const x = randn(rows * inF, (seed += 3));
        const w = randn(outF * inF, seed + 1, 0.5);
        const bias = randn(outF, seed + 2);
        const wRef = f16 ? round16(w) : w;
        const wT = f16 ? Tensor.from(Float32Array.from(w), [outF, inF], "f16") : toGpu(w, [outF, inF]);
        const label = `${rows}x${inF}x${outF}${f16 ? " f16" : ""}`;
        for (const k4 of [true, false]) {
          setMatmulK4(k4);
          try {
            const y = noGrad(() => scope(() => ops.linear(toGpu(x, [rows, inF]), wT, toGpu(bias, [outF]), { activation: "silu" })));
            expectClose(await y.read(), refLinear(x, inF, wRef, outF, bias, "silu"), fwdTol(inF), `${label} k4=${k4}`);
            y.dispose();
          } finally {
            setMatmulK4("auto");
          }
        }
        wT.dispose();
      }
    }
    // A batched product with both operands transposed into k-contiguous layouts and a broadcast batch.
    const [M, K, N] = [10, 20, 9];
    const a = randn(3 * M * K, 401);
    const b = randn(N * K, 402);
    const z = scope(() => ops.matmul(toGpu(a, [3, M, K]), toGpu(b, [1, N, K]), { transB: true }));
    const bT = new Float64Array(K * N);
    for (let n = 0; n < N; n++) for (let k = 0; k < K; k++) bT[k * N + n] = b[n * K + k];
    expectClose(await z.read(), refMatmul(a, [3, M, K], bT, [1, K, N]).data, fwdTol(K), "batched, B broadcast");
    z.dispose();
  });

  test("an untransposed B (not contiguous along k: the scalar kernel) next to k4 products: f32 and f16, batched, narrow and wide", async () => {
    if (!hasRegisterSubgroups(gpu())) return;
    let seed = 500;
    const cases: [number[], number[]][] = [[[33, 16], [16, 36]], [[3, 10, 20], [20, 12]], [[9, 8], [8, 4]], [[40, 12], [12, 100]], [[2, 17, 8], [2, 8, 68]]];
    for (const [la, lb] of cases) {
      for (const f16 of [false, true]) {
        const a = randn(prod(la), (seed += 3));
        const b = randn(prod(lb), seed + 1);
        const bRef = f16 ? round16(b) : b;
        const bT = f16 ? Tensor.from(Float32Array.from(b), lb, "f16") : toGpu(b, lb);
        const want = refMatmul(a, la, bRef, lb).data;
        for (const k4 of [true, false]) {
          setMatmulK4(k4);
          try {
            const z = scope(() => ops.matmul(toGpu(a, la), bT));
            expectClose(await z.read(), want, fwdTol(la.at(-1)!), `${JSON.stringify(la)} x ${JSON.stringify(lb)} f16=${f16} k4=${k4}`);
            z.dispose();
          } finally {
            setMatmulK4("auto");
          }
        }
        bT.dispose();
      }
    }
  });
});

describe("tiled matmul tile size", () => {
  test("auto takes 128x128 tiles only when the output has enough of them to fill a large GPU", () => {
    const auto = { kind: "tiled", per: "auto" } as const;
    expect(tiledPer(auto, 4096, 1280, 1)).toBe(8); // 32 x 10 tiles of 128
    expect(tiledPer(auto, 4096, 320, 1)).toBe(4); // 32 x 3: too few
    expect(tiledPer(auto, 64, 64, 1)).toBe(4);
    expect(tiledPer(auto, 1024, 1024, 1)).toBe(4); // 64 tiles: 64x64 gives 256 workgroups
    expect(tiledPer(auto, 2048, 2048, 1)).toBe(8);
    expect(tiledPer(auto, 128, 128, 200)).toBe(8); // batches count
    expect(tiledPer({ kind: "tiled", per: 4 }, 8192, 8192, 1)).toBe(4);
    expect(tiledDepth(auto, 8) * 128).toBe(1024);
    expect(tiledDepth(auto, 4) * 64).toBe(1024);
    expect(tiledDepth({ kind: "tiled", per: 4, depth: 32 }, 4)).toBe(32);
  });
});
