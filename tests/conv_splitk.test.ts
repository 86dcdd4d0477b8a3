// Split-K in conv2d: the tiled implicit GEMM (the kernel real GPUs run, forced here on lavapipe)
// with K = Cin * kh * kw (forward), Cout * kh * kw (input gradient) or images * output pixels
// (weight gradient) cut into chunks of f32 partials and summed by conv2d_splitk.wgsl with the bias,
// the accumulation of multi-pass convs and the dtype's rounding. Forward against the float64
// reference for several shapes and split factors (K not a multiple of the chunk, more splits than
// K steps), backward against finite differences, windows over the binding limit, the im2col
// forward of CPU adapters splitting as a matmul, and the per-adapter choice.
import { afterEach, describe, expect, test } from "bun:test";
import { gpu, type AdapterDescription } from "../src/gpu/device.ts";
import { adapterClass } from "../src/gpu/tuning.ts";
import { backward, clearTape, noGrad } from "../src/tensor/index.ts";
import * as ops from "../src/tensor/ops/index.ts";
import { convForwardUsesIm2col, tiledSplitProblem } from "../src/tensor/ops/conv_gemm.ts";
import { type ConvPass, convGeometry, setBindingLimitForTests } from "../src/tensor/ops/conv_geometry.ts";
import { type ConvTuning, GPU_TUNING, convTuning, setConvTuning } from "../src/tensor/ops/conv_tuning.ts";
import { decideSplit, lastSplit, setSplitK, splitKPolicy, splitLaunches } from "../src/tensor/ops/split_k.ts";
import { FORCED_SPLIT, benchConvSplitK } from "../src/bench/split_k.ts";
import { expectClose, gradCheck, randn, toGpu, useGpu } from "./helpers.ts";
import { type ConvRefGeometry, conv2dGradsRef, conv2dRef, convOutSize } from "./ref/conv.ts";

useGpu();
afterEach(() => {
  setConvTuning(null);
  setSplitK("auto");
  setBindingLimitForTests(null);
  clearTape();
});

// As tests/conv.test.ts: f32 sums of a few hundred products of N(0,1) values.
const FWD_TOL = { atol: 2e-4, rtol: 1e-4 };
const BWD_TOL = { atol: 5e-4, rtol: 2e-4 };

/** The tiles real GPUs get, with K staged 16 (or 8) at a time. */
const TILES: Record<string, ConvTuning> = {
  "64x64 tiles, k step 16": GPU_TUNING,
  "32x32 tiles, k step 8": {
    forward: { kind: "shared", bm: 32, bn: 32, bk: 8, tm: 2, tn: 4 },
    weightGrad: { kind: "shared", bm: 32, bn: 32, bk: 8, tm: 2, tn: 4 },
  },
};

function geo(n: number, cin: number, h: number, w: number, cout: number, kh: number, kw: number, stride: [number, number], pad: [number, number, number, number]): ConvRefGeometry {
  return { n, cin, h, w, cout, kh, kw, stride, pad };
}

function data(g: ConvRefGeometry, seed: number) {
  return { x: randn(g.n * g.cin * g.h * g.w, seed), w: randn(g.cout * g.cin * g.kh * g.kw, seed + 1, 0.5), b: randn(g.cout, seed + 2) };
}

const opts = (g: ConvRefGeometry) => ({ stride: g.stride, padding: g.pad });

// K = Cin * taps: 117 (prime factors 3, 3, 13: no chunk divides it), 72, 12 (one K step of 16).
const FORWARD_CASES: [string, ConvRefGeometry][] = [
  ["3x3 pad 1, Cin 13, odd 7x9, batch 2", geo(2, 13, 7, 9, 10, 3, 3, [1, 1], [1, 1, 1, 1])],
  ["3x3 stride 2, pad (0,1,0,1), Cout 70 (two row tiles)", geo(1, 8, 8, 8, 70, 3, 3, [2, 2], [0, 1, 0, 1])],
  ["1x1, Cin 12", geo(2, 12, 5, 6, 20, 1, 1, [1, 1], [0, 0, 0, 0])],
];

for (const [name, tuning] of Object.entries(TILES)) {
  describe(`split-K conv2d forward, ${name}`, () => {
    test("vs the float64 reference for split factors 2, 3, 7 and more than the K steps; bias added once", async () => {
      setConvTuning(tuning);
      const step = tuning.forward.kind === "shared" ? tuning.forward.bk : 1;
      let seed = 10;
      for (const s of [2, 3, 7, 1000]) {
        setSplitK(s);
        for (const [label, g] of FORWARD_CASES) {
          const d = data(g, (seed += 10));
          const x = toGpu(d.x, [g.n, g.cin, g.h, g.w]);
          const w = toGpu(d.w, [g.cout, g.cin, g.kh, g.kw]);
          const b = toGpu(d.b, [g.cout]);
          const y = noGrad(() => ops.conv2d(x, w, b, opts(g)));
          const k = g.cin * g.kh * g.kw;
          const steps = Math.ceil(k / step);
          // Split wherever K has more than one step, never into more chunks than asked or than steps.
          if (steps > 1) {
            expect(lastSplit("conv")).toBeGreaterThan(1);
            expect(lastSplit("conv")).toBeLessThanOrEqual(Math.min(s, steps));
          } else {
            expect(lastSplit("conv")).toBe(1);
          }
          if (s === 1000) expect(lastSplit("conv")).toBe(steps);
          const [ho, wo] = convOutSize(g);
          expect(y.shape).toEqual([g.n, g.cout, ho, wo]);
          expectClose(await y.read(), conv2dRef(d.x, d.w, d.b, g), FWD_TOL, `${name} split ${s}: ${label}`);
          for (const t of [x, w, b, y]) t.dispose();
        }
      }
    });
  });
}

describe("split-K conv2d backward (64x64 tiles)", () => {
  // K per product: forward Cin*9 = 36, input gradient Cout*9 = 45, weight gradient 2 images x 36
  // pixels = 72: every product spans more than one K step of 16 and splits.
  for (const s of [3, 1000]) {
    test(`input, weight and bias gradients vs finite differences, split ${s}`, async () => {
      setConvTuning(GPU_TUNING);
      setSplitK(s);
      const g = geo(2, 4, 6, 6, 5, 3, 3, [1, 1], [1, 1, 1, 1]);
      const d = data(g, 500 + s);
      const before = { conv: splitLaunches("conv"), wgrad: splitLaunches("conv weight gradient") };
      await gradCheck({
        label: `conv2d split ${s}`,
        inputs: [
          { data: d.x, shape: [g.n, g.cin, g.h, g.w] },
          { data: d.w, shape: [g.cout, g.cin, g.kh, g.kw] },
          { data: d.b, shape: [g.cout] },
        ],
        gpuFn: ([x, w, b]) => ops.conv2d(x, w, b, opts(g)),
        refFn: ([x, w, b]) => conv2dRef(x, w, b, g),
        fwd: FWD_TOL,
        bwd: BWD_TOL,
        seed: 77,
      });
      expect(splitLaunches("conv") - before.conv).toBe(2); // the forward and the input gradient
      expect(splitLaunches("conv weight gradient") - before.wgrad).toBe(1);
    });
  }

  test("a strided conv: the input gradient's dilated index map under a split", async () => {
    setConvTuning(GPU_TUNING);
    setSplitK(2);
    const g = geo(1, 3, 7, 6, 6, 3, 3, [2, 2], [0, 1, 0, 1]);
    const d = data(g, 600);
    await gradCheck({
      label: "conv2d stride 2 split",
      inputs: [
        { data: d.x, shape: [g.n, g.cin, g.h, g.w] },
        { data: d.w, shape: [g.cout, g.cin, g.kh, g.kw] },
        { data: d.b, shape: [g.cout] },
      ],
      gpuFn: ([x, w, b]) => ops.conv2d(x, w, b, opts(g)),
      refFn: ([x, w, b]) => conv2dRef(x, w, b, g),
      fwd: FWD_TOL,
      bwd: BWD_TOL,
      seed: 78,
    });
  });

  test("over the binding limit: passes over channel and row chunks and images each split, later passes add into the result", async () => {
    setConvTuning(GPU_TUNING);
    setSplitK(3);
    // 7 KiB windows split these convs into row and channel chunks; 20 KiB into images.
    for (const limit of [7 * 1024, 20 * 1024]) {
      const g = geo(3, 20, 9, 8, 37, 3, 3, [1, 1], [1, 1, 1, 1]);
      const d = data(g, 700);
      const x = toGpu(d.x, [g.n, g.cin, g.h, g.w]).requireGrad();
      const w = toGpu(d.w, [g.cout, g.cin, g.kh, g.kw]).requireGrad();
      const b = toGpu(d.b, [g.cout]).requireGrad();
      setBindingLimitForTests(limit);
      const y = ops.conv2d(x, w, b, opts(g));
      const G = randn(y.size, 701);
      const gT = toGpu(G, y.shape);
      backward(y, gT);
      const want = conv2dGradsRef(d.x, d.w, G, g);
      expect(lastSplit("conv")).toBeGreaterThan(1);
      expect(lastSplit("conv weight gradient")).toBeGreaterThan(1);
      expectClose(await y.read(), conv2dRef(d.x, d.w, d.b, g), FWD_TOL, `limit ${limit} forward`);
      expectClose(await x.grad!.read(), want.dx, BWD_TOL, `limit ${limit} dx`);
      expectClose(await w.grad!.read(), want.dw, BWD_TOL, `limit ${limit} dw`);
      expectClose(await b.grad!.read(), want.db, BWD_TOL, `limit ${limit} db`);
      for (const t of [x, w, b, y, gT]) t.dispose();
      setBindingLimitForTests(null);
      clearTape();
    }
  });
});

describe("split-K on the CPU adapter's kernels", () => {
  test("the im2col forward (Cout >= 256) splits as a matmul, writing the NCHW output with the bias", async () => {
    setSplitK(3);
    const g = geo(2, 4, 5, 6, 256, 3, 3, [1, 1], [1, 1, 1, 1]);
    const d = data(g, 1300);
    const x = toGpu(d.x, [g.n, g.cin, g.h, g.w]);
    const w = toGpu(d.w, [g.cout, g.cin, g.kh, g.kw]);
    const b = toGpu(d.b, [g.cout]);
    const usesIm2col = convForwardUsesIm2col(convGeometry(x.shape, w.shape, opts(g)));
    const y = noGrad(() => ops.conv2d(x, w, b, opts(g)));
    // Only where this adapter takes the im2col path (lavapipe does); elsewhere the tiled kernel splits.
    expect(usesIm2col ? lastSplit("matmul") : lastSplit("conv")).toBeGreaterThan(1);
    expectClose(await y.read(), conv2dRef(d.x, d.w, d.b, g), FWD_TOL, "im2col split");
    for (const t of [x, w, b, y]) t.dispose();
  });
});

// Adapter descriptions as Dawn reports them.
const H200: AdapterDescription = { vendor: "nvidia", architecture: "hopper", device: "0x2335", description: "NVIDIA H200", isFallbackAdapter: false };
const LAVAPIPE: AdapterDescription = { vendor: "mesa", architecture: "", device: "", description: "llvmpipe (LLVM 15.0.6, 256 bits)", isFallbackAdapter: false };

/** The split the adapter's policy picks for a one-pass conv (batch n) on the GPU tiles. */
function choice(info: AdapterDescription, mode: "forward" | "inputGrad" | "weightGrad", n: number, cin: number, cout: number, hw: number, k = 3): number {
  const geom = convGeometry([n, cin, hw, hw], [cout, cin, k, k], { padding: (k - 1) / 2 });
  const rows = mode === "inputGrad" ? cin : cout;
  const chans = mode === "inputGrad" ? cout : cin;
  const pass: ConvPass = { n0: 0, nc: n, m0: 0, mc: rows, c0: 0, cc: chans };
  const tiles = mode === "weightGrad" ? GPU_TUNING.weightGrad : GPU_TUNING.forward;
  if (tiles.kind !== "shared") throw new Error("GPU conv tiles are workgroup-memory tiles");
  return decideSplit(splitKPolicy(info), null, tiledSplitProblem(mode, geom, pass, tiles, 65535), 2 ** 31).splits;
}

describe("split-K choice per adapter (SD-1.5 UNet at 512 px)", () => {
  test("an H200-like adapter splits the 1280-channel 3x3 convs at 8x8 and 16x16 (20-80 output tiles, K 11520)", () => {
    expect(choice(H200, "forward", 1, 1280, 1280, 8)).toBeGreaterThan(1);
    expect(choice(H200, "forward", 3, 1280, 1280, 8)).toBeGreaterThan(1);
    expect(choice(H200, "forward", 1, 1280, 1280, 16)).toBeGreaterThan(1);
    expect(choice(H200, "inputGrad", 1, 1280, 1280, 8)).toBeGreaterThan(1);
  });

  test("it leaves the grids that already fill the GPU alone", () => {
    // 320 channels at 64x64: 64 x 5 tiles. 1280 at 16x16 in batch 3: 240 tiles.
    expect(choice(H200, "forward", 1, 320, 320, 64)).toBe(1);
    expect(choice(H200, "forward", 3, 1280, 1280, 16)).toBe(1);
    // Weight gradients at 8x8 have many tiles (1280 x 11520) and a short K (64 pixels): no split.
    expect(choice(H200, "weightGrad", 1, 1280, 1280, 8)).toBe(1);
  });

  test("weight gradients with few channels over large images split (the VAE's outer convs: K = pixels)", () => {
    // conv_in of a VAE encoder at 512 px: 3 -> 128 channels, dW is 128 x 27 (2 tiles), K = 262144.
    expect(choice(H200, "weightGrad", 1, 3, 128, 512)).toBeGreaterThan(1);
  });

  test("lavapipe never splits by default", () => {
    expect(choice(LAVAPIPE, "forward", 1, 1280, 1280, 8)).toBe(1);
    expect(choice(LAVAPIPE, "weightGrad", 1, 3, 128, 512)).toBe(1);
  });

  test("launches follow this adapter's policy: a one-tile, long-K conv on the tiles is split on a GPU, never on a CPU adapter", async () => {
    const cpu = adapterClass(gpu()) === "cpu";
    expect(splitKPolicy(gpu().info) === null).toBe(cpu); // lavapipe, the CI adapter, is a CPU adapter
    setConvTuning(GPU_TUNING);
    const g = geo(1, 64, 4, 4, 16, 3, 3, [1, 1], [1, 1, 1, 1]); // one output tile, K 576
    const d = data(g, 1400);
    const x = toGpu(d.x, [g.n, g.cin, g.h, g.w]);
    const w = toGpu(d.w, [g.cout, g.cin, g.kh, g.kw]);
    const b = toGpu(d.b, [g.cout]);
    const y = noGrad(() => ops.conv2d(x, w, b, opts(g)));
    if (cpu) expect(lastSplit("conv")).toBe(1);
    else expect(lastSplit("conv")).toBeGreaterThan(1);
    expectClose(await y.read(), conv2dRef(d.x, d.w, d.b, g), FWD_TOL, "automatic choice");
    for (const t of [x, w, b, y]) t.dispose();
  });
});

describe("split-K rows of `rl4pix bench conv`", () => {
  test("off and on rows; where no kernel of the path splits (the register input gradient of CPU adapters), only the off row, saying so", async () => {
    const rows = await benchConvSplitK(1, [{ n: 1, channels: 256, hw: 4 }, { n: 1, channels: 16, hw: 4, inputGrad: true }]);
    const register = convTuningIsRegister();
    expect(rows.map((r) => `${r.name} ${r.shape}`)).toEqual([
      "conv3x3 split-K off 256->256 4x4 b1", "conv3x3 split-K on 256->256 4x4 b1",
      "conv3x3 input grad split-K off 16->16 4x4 b1", ...(register ? [] : ["conv3x3 input grad split-K on 16->16 4x4 b1"]),
    ]);
    for (const r of rows) expect(r.gflops!).toBeGreaterThan(0);
    // 256 channels run as im2col + matmul on lavapipe, whose product splits when forced; a GPU's
    // policy splits this one-tile conv itself.
    expect(rows[1].note).toMatch(/split [2-9]\d* \((forced|the adapter's choice)\); [0-9.]+x the speed of off/);
    if (register) {
      expect(rows[1].note).toContain(`split ${FORCED_SPLIT} (forced)`);
      expect(rows[2].note).toContain("no split-K kernel on this path");
    } else {
      expect(rows[3].note).toMatch(/split [2-9]\d* \(/);
    }
  });
});

function convTuningIsRegister(): boolean {
  return convTuning(gpu()).forward.kind === "register";
}
