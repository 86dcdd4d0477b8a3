// conv2d (forward, input / weight / bias gradients) and nearest 2x upsampling against float64 CPU
// references, for every kernel family: the register-blocked kernel with and without subgroup
// sharing (CPU adapters) and the workgroup-memory tiles (real GPUs), which all run on lavapipe.
import { describe, expect, test } from "bun:test";
import { gpu } from "../src/gpu/device.ts";
import { Tensor, backward, clearTape, noGrad } from "../src/tensor/index.ts";
import * as ops from "../src/tensor/ops/index.ts";
import { setBindingLimitForTests } from "../src/tensor/ops/conv_geometry.ts";
import { type ConvTuning, setConvTuning } from "../src/tensor/ops/conv_tuning.ts";
import { f16BitsToF32, f32ToF16Bits } from "../src/tensor/f16.ts";
import { expectClose, gradCheck, prod, randn, toGpu, useGpu } from "./helpers.ts";
import { type ConvRefGeometry, conv2dGradsRef, conv2dRef, convOutSize, upsampleNearest2xRef, upsampleNearestRef } from "./ref/conv.ts";

useGpu();

// f32 sums of up to a few hundred products of N(0,1) values: errors stay near 1e-5.
const FWD_TOL = { atol: 2e-4, rtol: 1e-4 };
// Gradients: linear ops, so central differences of the float64 reference are exact up to rounding.
const BWD_TOL = { atol: 5e-4, rtol: 2e-4 };

const VARIANTS: Record<string, ConvTuning | null> = {
  "per-adapter default": null,
  "register, no subgroups": {
    forward: { kind: "register", wg: 64, tm: 8, tn: 2, subgroup: 0 },
    weightGrad: { kind: "register", wg: 64, tm: 16, tn: 2, subgroup: 0 },
  },
  "workgroup-memory tiles": {
    forward: { kind: "shared", bm: 64, bn: 64, bk: 16, tm: 4, tn: 4 },
    weightGrad: { kind: "shared", bm: 64, bn: 64, bk: 16, tm: 4, tn: 4 },
  },
};

interface Case {
  name: string;
  g: ConvRefGeometry;
  bias: boolean;
}

function geo(n: number, cin: number, h: number, w: number, cout: number, kh: number, kw: number, stride: [number, number], pad: [number, number, number, number]): ConvRefGeometry {
  return { n, cin, h, w, cout, kh, kw, stride, pad };
}

const FORWARD_CASES: Case[] = [
  { name: "3x3 pad 1, odd 7x9, batch 2", g: geo(2, 5, 7, 9, 6, 3, 3, [1, 1], [1, 1, 1, 1]), bias: true },
  { name: "3x3 stride 2, pad (0,1,0,1) (VAE downsampler)", g: geo(1, 9, 8, 8, 17, 3, 3, [2, 2], [0, 1, 0, 1]), bias: true },
  { name: "3x3 stride 2, pad (0,1,0,1), odd 7x7", g: geo(2, 3, 7, 7, 5, 3, 3, [2, 2], [0, 1, 0, 1]), bias: false },
  { name: "1x1", g: geo(1, 12, 5, 6, 20, 1, 1, [1, 1], [0, 0, 0, 0]), bias: true },
  { name: "5x3 kernel, stride (2,1), asymmetric pad", g: geo(1, 4, 9, 6, 7, 5, 3, [2, 1], [2, 1, 0, 3]), bias: true },
  { name: "Cin 13 / Cout 33 (off tile sizes), 19x21, several workgroups", g: geo(1, 13, 19, 21, 33, 3, 3, [1, 1], [1, 1, 1, 1]), bias: true },
  { name: "conv_in shape 4 -> 40, no padding", g: geo(1, 4, 6, 5, 40, 3, 3, [1, 1], [0, 0, 0, 0]), bias: true },
  { name: "size-1 spatial dims", g: geo(2, 3, 1, 1, 4, 1, 1, [1, 1], [0, 0, 0, 0]), bias: true },
  // Rows wider than one source-preparation workgroup (64 columns).
  { name: "a 3x70 plane", g: geo(1, 3, 3, 70, 5, 3, 3, [1, 1], [1, 1, 1, 1]), bias: true },
  { name: "a 4x67 plane, stride 2", g: geo(1, 2, 4, 67, 3, 3, 3, [2, 2], [1, 1, 1, 1]), bias: false },
];

function opts(g: ConvRefGeometry) {
  return { stride: g.stride, padding: g.pad };
}

function data(g: ConvRefGeometry, seed: number) {
  return {
    x: randn(g.n * g.cin * g.h * g.w, seed),
    w: randn(g.cout * g.cin * g.kh * g.kw, seed + 1, 0.5),
    b: randn(g.cout, seed + 2),
  };
}

async function forwardCase(c: Case, seed: number): Promise<void> {
  const { g } = c;
  const d = data(g, seed);
  const x = toGpu(d.x, [g.n, g.cin, g.h, g.w]);
  const w = toGpu(d.w, [g.cout, g.cin, g.kh, g.kw]);
  const b = c.bias ? toGpu(d.b, [g.cout]) : null;
  const y = ops.conv2d(x, w, b, opts(g));
  const [ho, wo] = convOutSize(g);
  expect(y.shape).toEqual([g.n, g.cout, ho, wo]);
  expectClose(await y.read(), conv2dRef(d.x, d.w, c.bias ? d.b : null, g), FWD_TOL, `${c.name} forward`);
  for (const t of [x, w, b, y]) t?.dispose();
}

/** gradCheck of conv2d with every input's gradient (x, weight, bias). */
async function gradCase(label: string, g: ConvRefGeometry, seed: number): Promise<void> {
  const d = data(g, seed);
  await gradCheck({
    label,
    inputs: [
      { data: d.x, shape: [g.n, g.cin, g.h, g.w] },
      { data: d.w, shape: [g.cout, g.cin, g.kh, g.kw] },
      { data: d.b, shape: [g.cout] },
    ],
    gpuFn: ([x, w, b]) => ops.conv2d(x, w, b, opts(g)),
    refFn: ([x, w, b]) => conv2dRef(x, w, b, g),
    fwd: FWD_TOL,
    bwd: BWD_TOL,
    seed: seed + 7,
  });
}

// Tiny shapes keep the finite differences fast.
const GRAD_CASES: [string, ConvRefGeometry][] = [
  ["3x3 pad 1, batch 2", geo(2, 3, 5, 4, 4, 3, 3, [1, 1], [1, 1, 1, 1])],
  ["3x3 stride 2, pad (0,1,0,1)", geo(1, 2, 6, 5, 3, 3, 3, [2, 2], [0, 1, 0, 1])],
  ["1x1", geo(2, 5, 3, 2, 3, 1, 1, [1, 1], [0, 0, 0, 0])],
  ["2x3 kernel, stride (1,2), pad (1,0,2,1)", geo(1, 3, 4, 5, 2, 2, 3, [1, 2], [1, 0, 2, 1])],
  // The input gradient's dilated, padded rows are 69 wide: more than one preparation workgroup.
  ["3x3 stride 2 on a 3x67 plane", geo(1, 1, 3, 67, 2, 3, 3, [2, 2], [1, 1, 1, 1])],
];

for (const [variant, tuning] of Object.entries(VARIANTS)) {
  describe(`conv2d, ${variant}`, () => {
    test("forward vs CPU reference", async () => {
      setConvTuning(tuning);
      try {
        let seed = 10;
        for (const c of FORWARD_CASES) await forwardCase(c, (seed += 10));
      } finally {
        setConvTuning(null);
      }
    });
    test("input, weight and bias gradients vs finite differences", async () => {
      setConvTuning(tuning);
      try {
        // Every case on the default kernels; one each on the others (same code paths, other tiles).
        const cases = tuning === null ? GRAD_CASES : GRAD_CASES.slice(0, 2);
        let seed = 500;
        for (const [name, g] of cases) await gradCase(name, g, (seed += 10));
      } finally {
        setConvTuning(null);
      }
    });
  });
}

describe("conv2d, more", () => {
  test("a frozen weight and bias get no gradient while the input does", async () => {
    const g = geo(1, 3, 5, 5, 4, 3, 3, [1, 1], [1, 1, 1, 1]);
    const d = data(g, 900);
    const x = toGpu(d.x, [1, 3, 5, 5]).requireGrad();
    const w = toGpu(d.w, [4, 3, 3, 3]); // requiresGrad false: frozen
    const b = toGpu(d.b, [4]);
    const y = ops.conv2d(x, w, b, { padding: 1 });
    const G = randn(y.size, 901);
    const gT = toGpu(G, y.shape);
    backward(y, gT);
    expect(w.grad).toBeNull();
    expect(b.grad).toBeNull();
    expect(x.grad).not.toBeNull();
    // dx = sum over outputs of G * dy/dx: the reference conv is linear in x, so probe each x with a unit input.
    const want = new Float64Array(d.x.length);
    for (let i = 0; i < d.x.length; i++) {
      const e = new Float64Array(d.x.length);
      e[i] = 1;
      const yi = conv2dRef(e, d.w, null, g);
      let s = 0;
      for (let j = 0; j < yi.length; j++) s += yi[j] * G[j];
      want[i] = s;
    }
    expectClose(await x.grad!.read(), want, BWD_TOL, "frozen-weight input gradient");
    for (const t of [x, w, b, y, gT]) t.dispose();
    clearTape();
  });

  test("f16 weights and bias match the reference on f16-rounded values (forward and input gradient)", async () => {
    if (!gpu().hasF16) {
      // Without shader-f16 the op must refuse f16 weights with a clear error instead.
      const x = toGpu(randn(8, 1), [1, 2, 2, 2]);
      const w = Tensor.from(new Uint16Array(8), [1, 2, 2, 2], "f16");
      expect(() => ops.conv2d(x, w)).toThrow(/shader-f16/);
      return;
    }
    const g = geo(2, 6, 6, 7, 10, 3, 3, [1, 1], [1, 1, 1, 1]);
    const d = data(g, 950);
    const round = (a: Float64Array) => a.map((v) => f16BitsToF32(f32ToF16Bits(v)));
    const w16 = round(d.w);
    const b16 = round(d.b);
    await gradCheck({
      label: "f16 weights",
      inputs: [
        { data: d.x, shape: [g.n, g.cin, g.h, g.w] },
        { data: w16, shape: [g.cout, g.cin, 3, 3], grad: false },
        { data: b16, shape: [g.cout], grad: false },
      ],
      gpuFn: ([x, w, b]) => {
        const wh = Tensor.from(f32ArrayOf(w16), w.shape, "f16");
        const bh = Tensor.from(f32ArrayOf(b16), b.shape, "f16");
        expect(wh.dtype).toBe("f16");
        return ops.conv2d(x, wh, bh, { padding: 1 });
      },
      refFn: ([x, w, b]) => conv2dRef(x, w, b, g),
      fwd: FWD_TOL,
      bwd: BWD_TOL,
    });
  });

  test("the analytic reference gradients agree with finite differences", () => {
    const g = geo(2, 2, 4, 5, 3, 3, 2, [2, 1], [1, 0, 0, 1]);
    const d = data(g, 600);
    const G = randn(prod([g.n, g.cout, ...convOutSize(g)]), 601);
    const grads = conv2dGradsRef(d.x, d.w, G, g);
    const h = 1e-3;
    const fd = (which: "x" | "w" | "b", i: number) => {
      const probe = (delta: number) => {
        const x = Float64Array.from(d.x), w = Float64Array.from(d.w), b = Float64Array.from(d.b);
        ({ x, w, b })[which][i] += delta;
        const y = conv2dRef(x, w, b, g);
        let s = 0;
        for (let j = 0; j < y.length; j++) s += y[j] * G[j];
        return s;
      };
      return (probe(h) - probe(-h)) / (2 * h);
    };
    expectClose(grads.dx, Array.from(d.x, (_, i) => fd("x", i)), { atol: 1e-8 }, "reference dx");
    expectClose(grads.dw, Array.from(d.w, (_, i) => fd("w", i)), { atol: 1e-8 }, "reference dw");
    expectClose(grads.db, Array.from(d.b, (_, i) => fd("b", i)), { atol: 1e-8 }, "reference db");
  });

  test("tensors over the binding limit run in windows (images, row and channel chunks)", async () => {
    // A 7 KiB pretend limit splits these convs into row and channel chunks; 20 KiB into images.
    const cases = [geo(3, 20, 9, 8, 37, 3, 3, [1, 1], [1, 1, 1, 1]), geo(2, 17, 10, 9, 11, 3, 3, [2, 2], [0, 1, 0, 1])];
    for (const limit of [7 * 1024, 20 * 1024]) {
      for (const [variant, tuning] of [["default", null], ["tiles", VARIANTS["workgroup-memory tiles"]]] as const) {
        for (const g of cases) {
          const label = `${variant}, limit ${limit}, ${JSON.stringify(g)}`;
          const d = data(g, 700);
          const x = toGpu(d.x, [g.n, g.cin, g.h, g.w]).requireGrad();
          const w = toGpu(d.w, [g.cout, g.cin, g.kh, g.kw]).requireGrad();
          const b = toGpu(d.b, [g.cout]).requireGrad();
          setBindingLimitForTests(limit);
          setConvTuning(tuning);
          try {
            const y = ops.conv2d(x, w, b, opts(g));
            const G = randn(y.size, 701);
            const gT = toGpu(G, y.shape);
            backward(y, gT);
            const want = conv2dGradsRef(d.x, d.w, G, g);
            expectClose(await y.read(), conv2dRef(d.x, d.w, d.b, g), FWD_TOL, `${label} forward`);
            expectClose(await x.grad!.read(), want.dx, BWD_TOL, `${label} dx`);
            expectClose(await w.grad!.read(), want.dw, BWD_TOL, `${label} dw`);
            expectClose(await b.grad!.read(), want.db, BWD_TOL, `${label} db`);
            for (const t of [x, w, b, y, gT]) t.dispose();
          } finally {
            setConvTuning(null);
            setBindingLimitForTests(null);
            clearTape();
          }
        }
      }
    }
  });

  test("the im2col + matmul forward (CPU adapters, Cout >= 256, Cin*kh*kw % 4 == 0): strides, padding, f16 weights, image and row chunks", async () => {
    const cases: [ConvRefGeometry, number | null][] = [
      [geo(2, 4, 5, 6, 256, 3, 3, [1, 1], [1, 1, 1, 1]), null],
      [geo(1, 8, 7, 6, 260, 3, 3, [2, 2], [0, 1, 0, 1]), null],
      [geo(2, 12, 4, 5, 300, 1, 1, [1, 1], [0, 0, 0, 0]), null],
      [geo(3, 4, 5, 6, 256, 3, 3, [1, 1], [1, 1, 1, 1]), 40 * 1024], // an image per chunk
      [geo(1, 64, 4, 4, 256, 3, 3, [1, 1], [1, 1, 1, 1]), 32 * 1024], // chunks of output rows
      [geo(1, 4, 17, 16, 256, 3, 3, [1, 1], [1, 1, 1, 1]), null], // 272 pixels: f32 weights take the one-k-at-a-time kernel
    ];
    let seed = 1200;
    for (const [g, limit] of cases) {
      for (const f16 of gpu().hasF16 ? [false, true] : [false]) {
        const d = data(g, (seed += 10));
        const wv = f16 ? d.w.map((v) => f16BitsToF32(f32ToF16Bits(v))) : d.w;
        const x = toGpu(d.x, [g.n, g.cin, g.h, g.w]);
        const w = f16 ? Tensor.from(f32ArrayOf(wv), [g.cout, g.cin, g.kh, g.kw], "f16") : toGpu(d.w, [g.cout, g.cin, g.kh, g.kw]);
        const b = toGpu(d.b, [g.cout]);
        if (limit) setBindingLimitForTests(limit);
        try {
          const y = noGrad(() => ops.conv2d(x, w, b, opts(g)));
          expectClose(await y.read(), conv2dRef(d.x, wv, d.b, g), FWD_TOL, `${JSON.stringify(g)} f16=${f16} limit=${limit}`);
          y.dispose();
        } finally {
          setBindingLimitForTests(null);
        }
        for (const t of [x, w, b]) t.dispose();
      }
    }
  });

  test("shape errors name the op and both shapes", () => {
    const x = toGpu(randn(2 * 3 * 4 * 4, 1), [2, 3, 4, 4]);
    const w = toGpu(randn(5 * 2 * 9, 2), [5, 2, 3, 3]);
    expect(() => ops.conv2d(x, w)).toThrow(/conv2d.*\[2,3,4,4\].*\[5,2,3,3\]/);
    x.dispose();
    w.dispose();
  });
});

function f32ArrayOf(a: Float64Array): Float32Array {
  return Float32Array.from(a);
}

describe("upsampleNearest2x", () => {
  for (const shape of [[2, 3, 5, 7], [1, 1, 1, 1], [1, 4, 6, 2]]) {
    test(`forward and backward ${JSON.stringify(shape)}`, async () => {
      await gradCheck({
        label: "upsampleNearest2x",
        inputs: [{ data: randn(prod(shape), 31), shape }],
        gpuFn: ([x]) => ops.upsampleNearest2x(x),
        refFn: ([x]) => upsampleNearest2xRef(x, shape),
        fwd: { atol: 0 },
        bwd: { atol: 1e-5, rtol: 1e-6 },
      });
    });
  }
  test("runs in windows of whole planes past the binding limit", async () => {
    setBindingLimitForTests(4096); // two 18x22 planes per window
    try {
      const shape = [2, 5, 9, 11];
      await gradCheck({
        label: "upsampleNearest2x windows",
        inputs: [{ data: randn(prod(shape), 32), shape }],
        gpuFn: ([x]) => ops.upsampleNearest2x(x),
        refFn: ([x]) => upsampleNearest2xRef(x, shape),
        fwd: { atol: 0 },
        bwd: { atol: 1e-5, rtol: 1e-6 },
      });
    } finally {
      setBindingLimitForTests(null);
    }
  });
});

describe("upsampleNearest to a size (odd latent sizes)", () => {
  // [in shape, out h, out w]: odd targets as the UNet's up path needs, non-integer ratios, one axis doubled.
  const cases: [number[], number, number][] = [[[1, 2, 3, 5], 7, 9], [[2, 3, 4, 4], 9, 8], [[1, 1, 5, 3], 11, 3], [[1, 2, 7, 6], 5, 13]];
  for (const [shape, oh, ow] of cases) {
    test(`${JSON.stringify(shape)} -> ${oh}x${ow}`, async () => {
      await gradCheck({
        label: "upsampleNearest",
        inputs: [{ data: randn(prod(shape), 33), shape }],
        gpuFn: ([x]) => ops.upsampleNearest(x, oh, ow),
        refFn: ([x]) => upsampleNearestRef(x, shape, oh, ow),
        fwd: { atol: 0 },
        bwd: { atol: 1e-5, rtol: 1e-6 },
      });
    });
  }
  test("the reference follows torch's index rule floor(dst * f32(in / out))", () => {
    // 3 -> 5: torch reads rows 0,0,1,1,2 (floor(d * 0.6f)); checked against torch 1.13 for all sizes to 39 -> 79.
    expect(Array.from(upsampleNearestRef(Float64Array.from([10, 11, 12]), [1, 1, 1, 3], 1, 5))).toEqual([10, 10, 11, 11, 12]);
  });
});

describe("conv2d weights trained in place", () => {
  test("the input gradient uses the weight's current values after an in-place update (no stale cached panels)", async () => {
    // Two backward passes with the weight updated in place between them (as AdamW does): the second
    // input gradient must be the reference one for the *updated* weight. A cache of the flipped
    // weight panels kept on the saved handle's storage once made the second pass reuse the first
    // weight.
    const g: ConvRefGeometry = { n: 1, cin: 4, h: 6, w: 6, cout: 8, kh: 3, kw: 3, stride: [1, 1], pad: [1, 1, 1, 1] };
    const xs = randn(g.n * g.cin * g.h * g.w, 41);
    const w1 = randn(g.cout * g.cin * 9, 42, 0.3);
    const w2 = randn(g.cout * g.cin * 9, 43, 0.3);
    const [ho, wo] = convOutSize(g);
    const G = new Float64Array(g.n * g.cout * ho * wo).fill(1);
    const weight = toGpu(w1, [g.cout, g.cin, 3, 3]).keep().requireGrad();
    const inputGrad = async () => {
      const x = toGpu(xs, [g.n, g.cin, g.h, g.w]).requireGrad();
      backward(ops.sum(ops.conv2d(x, weight, null, { padding: 1 })));
      const dx = await x.grad!.readF32();
      clearTape();
      weight.grad?.dispose();
      weight.grad = null;
      return dx;
    };
    expectClose(await inputGrad(), conv2dGradsRef(xs, w1, G, g).dx, BWD_TOL);
    gpu().write(weight.buffer, 0, Float32Array.from(w2)); // the in-place update
    expectClose(await inputGrad(), conv2dGradsRef(xs, w2, G, g).dx, BWD_TOL);
    weight.dispose();
  });
});
