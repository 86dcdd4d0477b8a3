// f16 activations through conv2d (needs shader-f16: lavapipe has it): an f16 input gives an f16
// output, read as f16, summed in f32, rounded once; weights and bias may be f32 or f16. Forward
// against the float64 reference on f16-rounded inputs on every kernel the op dispatches to (the
// register-blocked kernel with and without subgroup sharing, the workgroup-memory tiles, im2col +
// matmul), passes split over images and over reduction channels; backward against central finite
// differences with each gradient in its tensor's dtype (dx f16, dW and db f32 or f16), on the
// register and tiled input- and weight-gradient kernels; the tiles also with K split (split-K).
import { afterEach, describe, expect, test } from "bun:test";
import { gpu } from "../src/gpu/device.ts";
import { Tensor, backward, clearTape, noGrad } from "../src/tensor/index.ts";
import * as ops from "../src/tensor/ops/index.ts";
import { convGeometry, setBindingLimitForTests } from "../src/tensor/ops/conv_geometry.ts";
import { convForwardUsesIm2col, setConvIm2col } from "../src/tensor/ops/conv_gemm.ts";
import { type ConvTuning, setConvTuning } from "../src/tensor/ops/conv_tuning.ts";
import { lastSplit, setSplitK, splitLaunches } from "../src/tensor/ops/split_k.ts";
import { expectClose, gradCheck, prod, randn, roundF16, toGpu, useGpu } from "./helpers.ts";
import { type ConvRefGeometry, conv2dGradsRef, conv2dRef, convOutSize } from "./ref/conv.ts";

useGpu();
afterEach(() => {
  setConvTuning(null);
  setSplitK("auto");
  setConvIm2col(true);
  setBindingLimitForTests(null);
  clearTape();
});

// The reference sees the same f16-rounded inputs, so what differs is f32 accumulation (each of the
// `terms` adds rounds by at most 2^-24 of a partial sum of size ~1 here: 1e-6 per term is a wide
// bound, and covers cancellation near zero) and the one rounding of the result to f16: at most half
// an ulp, 2^-11 = 4.9e-4 relative. rtol 5e-4 admits that one rounding and little more: rounding an
// f16 partial sum or an intermediate of a split reduction a second time pushes elements past it.
const f16Tol = (terms: number) => ({ atol: 1e-6 * terms + 2e-5, rtol: 5e-4 });

const VARIANTS: Record<string, ConvTuning> = {
  "register, 8-lane subgroup sharing": {
    forward: { kind: "register", wg: 128, tm: 16, tn: 2, subgroup: 8 },
    weightGrad: { kind: "register", wg: 64, tm: 16, tn: 2, subgroup: 0 },
  },
  "register, no subgroups": {
    forward: { kind: "register", wg: 64, tm: 8, tn: 2, subgroup: 0 },
    weightGrad: { kind: "register", wg: 64, tm: 16, tn: 2, subgroup: 0 },
  },
  "workgroup-memory tiles": {
    forward: { kind: "shared", bm: 64, bn: 64, bk: 16, tm: 4, tn: 4 },
    weightGrad: { kind: "shared", bm: 64, bn: 64, bk: 16, tm: 4, tn: 4 },
  },
};

function geo(n: number, cin: number, h: number, w: number, cout: number, kh: number, kw: number, stride: [number, number], pad: [number, number, number, number]): ConvRefGeometry {
  return { n, cin, h, w, cout, kh, kw, stride, pad };
}

const opts = (g: ConvRefGeometry) => ({ stride: g.stride, padding: g.pad });
const xShape = (g: ConvRefGeometry) => [g.n, g.cin, g.h, g.w];
const wShape = (g: ConvRefGeometry) => [g.cout, g.cin, g.kh, g.kw];

type ParamDType = "f32" | "f16";

/** Inputs of a case: x rounded to f16; weight and bias rounded where they are f16. */
function data(g: ConvRefGeometry, seed: number, paramDtype: ParamDType) {
  const round = (v: Float64Array) => (paramDtype === "f16" ? roundF16(v) : v);
  return {
    x: roundF16(randn(prod(xShape(g)), seed)),
    w: round(randn(prod(wShape(g)), seed + 1, 0.5)),
    b: round(randn(g.cout, seed + 2)),
  };
}

/** Forward of one case on the current kernels: an f16 result matching the float64 reference. */
async function forwardCase(label: string, g: ConvRefGeometry, seed: number, paramDtype: ParamDType, bias = true): Promise<void> {
  const d = data(g, seed, paramDtype);
  const x = toGpu(d.x, xShape(g), "f16");
  const w = toGpu(d.w, wShape(g), paramDtype);
  const b = bias ? toGpu(d.b, [g.cout], paramDtype) : null;
  const y = noGrad(() => ops.conv2d(x, w, b, opts(g)));
  expect(y.dtype).toBe("f16");
  expect([...y.shape]).toEqual([g.n, g.cout, ...convOutSize(g)]);
  expectClose(await y.read(), conv2dRef(d.x, d.w, bias ? d.b : null, g), f16Tol(g.cin * g.kh * g.kw), `${label} forward`);
  for (const t of [x, w, b, y]) t?.dispose();
}

/** gradCheck of conv2d on an f16 x with weight and bias of `paramDtype`, all requiring grad. */
async function gradCase(label: string, g: ConvRefGeometry, seed: number, paramDtype: ParamDType): Promise<void> {
  const [ho, wo] = convOutSize(g);
  // dx sums cout * taps products, dW n * ho * wo, db n * ho * wo.
  const terms = Math.max(g.cout * g.kh * g.kw, g.n * ho * wo, g.cin * g.kh * g.kw);
  await gradCheck({
    label,
    inputs: [
      { data: randn(prod(xShape(g)), seed), shape: xShape(g), dtype: "f16" },
      { data: randn(prod(wShape(g)), seed + 1, 0.5), shape: wShape(g), dtype: paramDtype },
      { data: randn(g.cout, seed + 2), shape: [g.cout], dtype: paramDtype },
    ],
    gpuFn: ([x, w, b]) => {
      const y = ops.conv2d(x, w, b, opts(g));
      expect(y.dtype).toBe("f16");
      return y;
    },
    refFn: ([x, w, b]) => conv2dRef(x, w, b, g),
    fwd: f16Tol(g.cin * g.kh * g.kw),
    bwd: f16Tol(terms),
    seed: seed + 7,
  });
}

const FORWARD_CASES: [string, ConvRefGeometry, boolean][] = [
  ["3x3 pad 1, odd 7x9, batch 2", geo(2, 5, 7, 9, 6, 3, 3, [1, 1], [1, 1, 1, 1]), true],
  ["3x3 stride 2, pad (0,1,0,1) (VAE downsampler)", geo(1, 9, 8, 8, 17, 3, 3, [2, 2], [0, 1, 0, 1]), true],
  ["3x3 stride 2, odd 7x7, no bias", geo(2, 3, 7, 7, 5, 3, 3, [2, 2], [0, 1, 0, 1]), false],
  ["1x1", geo(1, 12, 5, 6, 20, 1, 1, [1, 1], [0, 0, 0, 0]), true],
  ["5x3 kernel, stride (2,1), asymmetric pad", geo(1, 4, 9, 6, 7, 5, 3, [2, 1], [2, 1, 0, 3]), true],
  ["Cin 13 / Cout 33, 19x21, several workgroups", geo(1, 13, 19, 21, 33, 3, 3, [1, 1], [1, 1, 1, 1]), true],
  ["a 3x70 plane (rows wider than one preparation workgroup)", geo(1, 3, 3, 70, 5, 3, 3, [1, 1], [1, 1, 1, 1]), true],
  ["an odd number of output halves: 1x1 conv on 3x3, 1 channel out", geo(1, 3, 3, 3, 1, 1, 1, [1, 1], [0, 0, 0, 0]), true],
];

const GRAD_CASES: [string, ConvRefGeometry][] = [
  ["3x3 pad 1, batch 2", geo(2, 3, 5, 4, 4, 3, 3, [1, 1], [1, 1, 1, 1])],
  ["3x3 stride 2, pad (0,1,0,1)", geo(1, 2, 6, 5, 3, 3, 3, [2, 2], [0, 1, 0, 1])],
  ["2x3 kernel, stride (1,2), pad (1,0,2,1)", geo(1, 3, 4, 5, 2, 2, 3, [1, 2], [1, 0, 2, 1])],
];

test("this adapter reads and writes f16 activations (every test below needs shader-f16)", () => {
  expect(gpu().hasF16).toBe(true);
});

for (const [variant, tuning] of Object.entries(VARIANTS)) {
  describe(`conv2d on f16 activations, ${variant}`, () => {
    test("forward vs the float64 reference, f32 weight and bias", async () => {
      setConvTuning(tuning);
      let seed = 10;
      for (const [name, g, bias] of FORWARD_CASES) await forwardCase(`${variant} ${name}`, g, (seed += 10), "f32", bias);
    });

    test("forward vs the float64 reference, f16 weight and bias", async () => {
      setConvTuning(tuning);
      let seed = 200;
      for (const [name, g, bias] of FORWARD_CASES.slice(0, 3)) await forwardCase(`${variant} ${name} f16 params`, g, (seed += 10), "f16", bias);
    });

    test("backward: f16 dx, f32 dW and db for f32 parameters", async () => {
      setConvTuning(tuning);
      let seed = 500;
      for (const [name, g] of GRAD_CASES) await gradCase(`${variant} ${name}`, g, (seed += 10), "f32");
    });

    test("backward: f16 dx, dW and db for f16 parameters (summed in f32, rounded once)", async () => {
      setConvTuning(tuning);
      await gradCase(`${variant} f16 params`, GRAD_CASES[0][1], 600, "f16");
    });
  });
}

describe("conv2d on f16 activations, im2col + matmul (CPU adapters, Cout >= 256, Cin*kh*kw % 4 == 0)", () => {
  const cases: [string, ConvRefGeometry, number | null][] = [
    ["3x3 pad 1, batch 2", geo(2, 4, 5, 6, 256, 3, 3, [1, 1], [1, 1, 1, 1]), null],
    ["3x3 stride 2, pad (0,1,0,1)", geo(1, 8, 7, 6, 260, 3, 3, [2, 2], [0, 1, 0, 1]), null],
    ["1x1", geo(2, 12, 4, 5, 300, 1, 1, [1, 1], [0, 0, 0, 0]), null],
    ["an image per chunk", geo(3, 4, 5, 6, 256, 3, 3, [1, 1], [1, 1, 1, 1]), 40 * 1024],
    ["chunks of output rows", geo(1, 64, 4, 4, 256, 3, 3, [1, 1], [1, 1, 1, 1]), 32 * 1024],
    ["272 pixels (f32 weights: the one-k-at-a-time matmul kernel)", geo(1, 4, 17, 16, 256, 3, 3, [1, 1], [1, 1, 1, 1]), null],
  ];
  for (const paramDtype of ["f32", "f16"] as const) {
    test(`forward vs the float64 reference, ${paramDtype} weight, f32 bias`, async () => {
      let seed = 1200;
      for (const [name, g, limit] of cases) {
        if (limit) setBindingLimitForTests(limit);
        expect(convForwardUsesIm2col(convGeometry(xShape(g), wShape(g), opts(g)))).toBe(true);
        const d = data(g, (seed += 10), paramDtype);
        const x = toGpu(d.x, xShape(g), "f16");
        const w = toGpu(d.w, wShape(g), paramDtype);
        const b = toGpu(d.b, [g.cout]);
        const y = noGrad(() => ops.conv2d(x, w, b, opts(g)));
        expect(y.dtype).toBe("f16");
        expectClose(await y.read(), conv2dRef(d.x, d.w, d.b, g), f16Tol(g.cin * 9), `im2col ${name} ${paramDtype} weight`);
        for (const t of [x, w, b, y]) t.dispose();
        setBindingLimitForTests(null);
      }
    });
  }

  test("the same convs with im2col turned off give the same values (register kernel)", async () => {
    // Both are one rounding of an f32 sum of the same products: they may differ by an ulp where the
    // f32 sums (in other orders) straddle a rounding boundary, never more.
    const g = geo(2, 4, 5, 6, 256, 3, 3, [1, 1], [1, 1, 1, 1]);
    const d = data(g, 1300, "f32");
    const run = async () => {
      const x = toGpu(d.x, xShape(g), "f16");
      const w = toGpu(d.w, wShape(g));
      const y = noGrad(() => ops.conv2d(x, w, null, opts(g)));
      const v = await y.read();
      for (const t of [x, w, y]) t.dispose();
      return v;
    };
    const viaIm2col = await run();
    setConvIm2col(false);
    const viaRegister = await run();
    expectClose(viaIm2col, viaRegister, { atol: 1e-6, rtol: 1e-3 }, "im2col vs register");
  });
});

describe("conv2d on f16 activations: passes over the binding limit", () => {
  test("images, row chunks and split reduction channels (summed in f32, rounded once): forward and all gradients", async () => {
    // A 7 KiB pretend limit splits these convs into row and channel chunks; 20 KiB into images.
    const cases = [geo(3, 20, 9, 8, 37, 3, 3, [1, 1], [1, 1, 1, 1]), geo(2, 17, 10, 9, 11, 3, 3, [2, 2], [0, 1, 0, 1])];
    for (const limit of [7 * 1024, 20 * 1024]) {
      for (const variant of ["register, 8-lane subgroup sharing", "workgroup-memory tiles"]) {
        for (const g of cases) {
          const label = `${variant}, limit ${limit}, ${JSON.stringify(g)}`;
          const d = data(g, 700, "f32");
          const x = toGpu(d.x, xShape(g), "f16").requireGrad();
          const w = toGpu(d.w, wShape(g)).requireGrad();
          const b = toGpu(d.b, [g.cout]).requireGrad();
          setBindingLimitForTests(limit);
          setConvTuning(VARIANTS[variant]);
          const y = ops.conv2d(x, w, b, opts(g));
          expect(y.dtype).toBe("f16");
          const G = roundF16(randn(y.size, 701));
          const gT = toGpu(G, y.shape, "f16");
          backward(y, gT);
          const want = conv2dGradsRef(d.x, d.w, G, g);
          const [ho, wo] = convOutSize(g);
          expectClose(await y.read(), conv2dRef(d.x, d.w, d.b, g), f16Tol(g.cin * 9), `${label} forward`);
          expect(x.grad!.dtype).toBe("f16");
          expect(w.grad!.dtype).toBe("f32");
          expectClose(await x.grad!.read(), want.dx, f16Tol(g.cout * 9), `${label} dx`);
          expectClose(await w.grad!.read(), want.dw, f16Tol(g.n * ho * wo), `${label} dw`);
          expectClose(await b.grad!.read(), want.db, f16Tol(g.n * ho * wo), `${label} db`);
          for (const t of [x, w, b, y, gT]) t.dispose();
          setConvTuning(null);
          setBindingLimitForTests(null);
          clearTape();
        }
      }
    }
  });
});

// Split-K on the tiles (what a GPU with shader-f16 runs for small images and many channels): each
// K chunk sums f16 inputs in f32 into f32 partials, the reduction adds them and the bias in f32 and
// rounds once, so the one-rounding tolerance above still holds.
describe("conv2d on f16 activations, split-K", () => {
  test("forward vs the float64 reference, f32 and f16 parameters, 3 splits and more than the K steps", async () => {
    setConvTuning(VARIANTS["workgroup-memory tiles"]);
    let seed = 2000;
    for (const s of [3, 1000]) {
      setSplitK(s);
      for (const paramDtype of ["f32", "f16"] as const) {
        for (const [label, g, bias] of FORWARD_CASES) {
          await forwardCase(`split ${s}, ${paramDtype} parameters: ${label}`, g, (seed += 10), paramDtype, bias);
          // K = Cin * taps in steps of 16: a split wherever there are two steps or more.
          expect(lastSplit("conv")! > 1).toBe(g.cin * g.kh * g.kw > 16);
        }
      }
    }
  });

  test("backward: f16 dx, dW and db in the parameters' dtype, every product split", async () => {
    setConvTuning(VARIANTS["workgroup-memory tiles"]);
    setSplitK(3);
    // 3x3 pad 1, batch 2, Cin 3, Cout 4 at 5x4: forward K 27, dx K 36, dW K 2 x 20 pixels = 40.
    const [label, g] = GRAD_CASES[0];
    for (const paramDtype of ["f32", "f16"] as const) {
      const before = { conv: splitLaunches("conv"), wgrad: splitLaunches("conv weight gradient") };
      await gradCase(`split-K ${label}, ${paramDtype} parameters`, g, 2100, paramDtype);
      expect(splitLaunches("conv") - before.conv).toBe(2);
      expect(splitLaunches("conv weight gradient") - before.wgrad).toBe(1);
    }
  });

  test("the im2col forward (CPU adapters, Cout >= 256) splits as a matmul into the f16 NCHW output", async () => {
    setSplitK(3);
    const g = geo(2, 4, 5, 6, 256, 3, 3, [1, 1], [1, 1, 1, 1]);
    for (const paramDtype of ["f32", "f16"] as const) {
      const usesIm2col = convForwardUsesIm2col(convGeometry(xShape(g), wShape(g), opts(g)));
      await forwardCase(`im2col split-K, ${paramDtype} parameters`, g, 2300, paramDtype);
      expect(usesIm2col ? lastSplit("matmul") : lastSplit("conv")).toBeGreaterThan(1);
    }
  });

  test("passes over the binding limit that split the reduction channels: f32 partials, one rounding at the end", async () => {
    setConvTuning(VARIANTS["workgroup-memory tiles"]);
    setSplitK(3);
    const g = geo(3, 20, 9, 8, 37, 3, 3, [1, 1], [1, 1, 1, 1]);
    const d = data(g, 2200, "f32");
    const x = toGpu(d.x, xShape(g), "f16");
    const w = toGpu(d.w, wShape(g));
    const b = toGpu(d.b, [g.cout]);
    setBindingLimitForTests(7 * 1024);
    const y = noGrad(() => ops.conv2d(x, w, b, opts(g)));
    expect(lastSplit("conv")).toBeGreaterThan(1);
    expect(y.dtype).toBe("f16");
    expectClose(await y.read(), conv2dRef(d.x, d.w, d.b, g), f16Tol(g.cin * 9), "split passes");
    for (const t of [x, w, b, y]) t.dispose();
  });
});

describe("conv2d on f16 activations: dtype checks", () => {
  test("an f32 upstream gradient for an f16 output is refused in the backward", () => {
    const x = Tensor.from(new Float32Array(2 * 2 * 3 * 3).map((_, i) => i / 10), [2, 2, 3, 3], "f16").requireGrad();
    const w = Tensor.from(new Float32Array(4 * 2 * 9).fill(0.1), [4, 2, 3, 3]);
    const y = ops.conv2d(x, w, null, { padding: 1 });
    const g32 = Tensor.from(new Float32Array(y.size), y.shape);
    try {
      expect(() => backward(y, g32)).toThrow("conv2d backward: an f32 gradient [2,4,3,3] for an f16 output");
    } finally {
      clearTape();
      for (const t of [x, w, y, g32]) t.dispose();
    }
  });

  test("an i32 input is refused, naming both shapes", () => {
    const x = Tensor.from(new Int32Array(8), [1, 2, 2, 2], "i32");
    const w = Tensor.from(new Float32Array(8), [1, 2, 2, 2]);
    expect(() => ops.conv2d(x, w)).toThrow("conv2d: input must be f32 or f16 (input [1,2,2,2] i32, weight [1,2,2,2] f32)");
    x.dispose();
    w.dispose();
  });
});
