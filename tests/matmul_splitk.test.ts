// Split-K in the matmul family: K cut into chunks summed into f32 partials, then one reduction with
// the epilogue. Forward against the float64 reference on every kernel with forced split factors
// (K not a multiple of the chunk, more splits than K steps, batches, transposes, the transposed
// narrow-output path, bias + activation, the addend), backward of matmul, linear and loraLinear
// against finite differences with the split forced, the chunk planner's invariants, and the
// per-adapter choice (an H200-like description splits the SD UNet's 8x8 products, lavapipe never).
import { afterEach, describe, expect, test } from "bun:test";
import { gpu, type AdapterDescription } from "../src/gpu/device.ts";
import { adapterClass } from "../src/gpu/tuning.ts";
import { noGrad, scope } from "../src/tensor/index.ts";
import * as ops from "../src/tensor/ops/index.ts";
import { GPU_TUNING, hasRegisterSubgroups, matmulTuning, setMatmulTuning, type MatmulTuning } from "../src/tensor/ops/matmul_tuning.ts";
import { gemm, gemmGrid, setMatmulK4 } from "../src/tensor/ops/matmul_gemm.ts";
import { autoSplits, decideSplit, lastSplit, parseSplitEnv, planSplit, setSplitK, splitKPolicy, splitLaunches } from "../src/tensor/ops/split_k.ts";
import { FORCED_SPLIT, benchMatmulSplitK } from "../src/bench/split_k.ts";
import { expectClose, gradCheck, prod, randn, toGpu, useGpu } from "./helpers.ts";
import { refLinear, refLora, refMatmul } from "./ref/matmul.ts";

useGpu();
afterEach(() => {
  setMatmulTuning(null);
  setMatmulK4("auto");
  setSplitK("auto");
});

// f32 sums in another order than the unsplit kernel: the same bound as tests/matmul.test.ts.
const fwdTol = (k: number) => ({ atol: 1e-6 * k + 1e-5, rtol: 1e-5 });

const KERNELS: Record<string, { tuning: MatmulTuning; k4: "auto" | boolean; step: (k: number) => number }> = {
  "register, scalar k": { tuning: { kind: "register", rowGroups: 4, colGroups: 1 }, k4: false, step: () => 1 },
  "register, vec4 along k": { tuning: { kind: "register", rowGroups: 4, colGroups: 1 }, k4: true, step: (k) => (k % 4 === 0 ? 4 : 1) },
  "tiled 64x64": { tuning: { kind: "tiled", per: 4 }, k4: "auto", step: () => 16 },
  "tiled 128x128": { tuning: { kind: "tiled", per: 8 }, k4: "auto", step: () => 8 },
  "tiled 64x64, k step 32": { tuning: { kind: "tiled", per: 4, depth: 32 }, k4: "auto", step: () => 32 },
};

/** Force `tuning`; false where this adapter cannot run it (the register kernel needs 8-lane subgroups: then the per-adapter choice must avoid it). */
function useKernel(tuning: MatmulTuning, k4: "auto" | boolean): boolean {
  if (tuning.kind === "register" && !hasRegisterSubgroups(gpu())) {
    expect(matmulTuning(gpu()).kind).toBe("tiled");
    return false;
  }
  setMatmulTuning(tuning);
  setMatmulK4(k4);
  return true;
}

const stored = (logical: number[], trans: boolean) => (trans ? [...logical.slice(0, -2), logical.at(-1)!, logical.at(-2)!] : logical);

// [op(A), op(B)]: K 257 (prime: no chunk divides it), 40 (fewer K steps than some splits), 68
// (k4-friendly), batches with broadcasting, a narrow output (n < 32: the register kernel's
// transposed path).
const CASES: [number[], number[]][] = [
  [[33, 257], [257, 40]],
  [[2, 3, 9, 40], [40, 6]],
  [[2, 1, 5, 68], [1, 3, 68, 36]],
  [[64, 100], [100, 8]],
];

// 2 and 3 split K into few chunks; 7 leaves a short last chunk; 1000 exceeds every K step count.
const SPLITS = [2, 3, 7, 1000];

for (const [kernel, { tuning, k4, step }] of Object.entries(KERNELS)) {
  describe(`split-K matmul, ${kernel}`, () => {
    test("forward vs the float64 reference for every split factor, transposes and batches", async () => {
      if (!useKernel(tuning, k4)) return;
      let seed = 1;
      for (const s of SPLITS) {
        setSplitK(s);
        for (const [la, lb] of CASES) {
          for (const transA of [false, true]) {
            for (const transB of [false, true]) {
              const sa = stored(la, transA);
              const sb = stored(lb, transB);
              const a = randn(prod(sa), seed++);
              const b = randn(prod(sb), seed++);
              const k = la.at(-1)!;
              const y = scope(() => ops.matmul(toGpu(a, sa), toGpu(b, sb), { transA, transB }));
              const label = `${kernel} split ${s}: ${JSON.stringify(sa)}${transA ? "ᵀ" : ""} x ${JSON.stringify(sb)}${transB ? "ᵀ" : ""}`;
              // The launch split K: never into more chunks than asked or than the kernel has K steps.
              const used = lastSplit("matmul")!;
              expect(used).toBeGreaterThan(1);
              expect(used).toBeLessThanOrEqual(Math.min(s, k));
              expectClose(await y.read(), refMatmul(a, sa, b, sb, transA, transB).data, fwdTol(k), label);
              y.dispose();
            }
          }
        }
      }
    });

    test("more splits than K steps: one step per chunk", async () => {
      if (!useKernel(tuning, k4)) return;
      setSplitK(1000);
      const [m, k, n] = [20, 40, 36];
      const a = randn(m * k, 90);
      const b = randn(n * k, 91);
      // linear's layout (B stored [n, k]): both operands contiguous along k, so k4 applies where forced.
      const y = noGrad(() => scope(() => ops.linear(toGpu(a, [m, k]), toGpu(b, [n, k]))));
      expect(lastSplit("matmul")).toBe(Math.ceil(k / step(k)));
      expectClose(await y.read(), refLinear(a, k, b, n, null), fwdTol(k), `${kernel} 1000 splits`);
      y.dispose();
    });

    test("the epilogue runs once, after the sum: bias and each activation, alpha and an addend", async () => {
      if (!useKernel(tuning, k4)) return;
      setSplitK(3);
      const [rows, inF, outF] = [37, 132, 45];
      const x = randn(rows * inF, 70);
      const w = randn(outF * inF, 71, 0.2);
      const bias = randn(outF, 72);
      for (const act of ["none", "silu", "gelu"] as const) {
        const y = noGrad(() => scope(() => ops.linear(toGpu(x, [rows, inF]), toGpu(w, [outF, inF]), toGpu(bias, [outF]), { activation: act })));
        expectClose(await y.read(), refLinear(x, inF, w, outF, bias, act), fwdTol(inF), `${kernel} linear + ${act}`);
        y.dispose();
      }
      // alpha * A B + addend (loraLinear's last product) with a bias along the rows of a narrow product.
      const addend = randn(rows * outF, 73);
      const c = scope(() => gemm(toGpu(x, [rows, inF]), toGpu(w, [outF, inF]), { transB: true, alpha: 0.5, addend: toGpu(addend, [rows, outF]), bias: toGpu(bias, [outF]) }));
      const base = refLinear(x, inF, w, outF, null);
      expectClose(await c.read(), base.map((v, i) => 0.5 * v + bias[i % outF] + addend[i]), fwdTol(inF), `${kernel} alpha, bias, addend`);
      c.dispose();
    });
  });
}

// The tiled kernel's K step is 16: a product splits when its K spans at least 2 steps (K > 16).
describe("split-K matmul backward (tiled kernels, as on a GPU)", () => {
  for (const [name, s] of [["split 3", 3], ["more splits than K steps", 64]] as const) {
    test(`matmul with every transpose, ${name}`, async () => {
      setMatmulTuning({ kind: "tiled", per: 4 });
      setSplitK(s);
      let seed = 300;
      for (const transA of [false, true]) {
        for (const transB of [false, true]) {
          // Forward K 37; dA = dC op(B)ᵀ sums over n = 20; dB = op(A)ᵀ dC over the 2 x 17 rows
          // (one product) or, with A transposed, over 17 rows per batch before the batch sum.
          const la = [2, 17, 37];
          const lb = [37, 20];
          const sa = stored(la, transA);
          const sb = stored(lb, transB);
          const before = splitLaunches("matmul");
          await gradCheck({
            label: `matmul ${name} ${transA}/${transB}`,
            inputs: [{ data: randn(prod(sa), seed++), shape: sa }, { data: randn(prod(sb), seed++), shape: sb }],
            gpuFn: ([a, b]) => ops.matmul(a, b, { transA, transB }),
            refFn: ([a, b]) => refMatmul(a, sa, b, sb, transA, transB).data,
            fwd: fwdTol(37),
          });
          expect(splitLaunches("matmul") - before).toBe(3); // the forward and both gradients split
        }
      }
    });
  }

  test("linear with bias and GELU, and loraLinear (its rank-r weight gradients sum over all rows)", async () => {
    setMatmulTuning({ kind: "tiled", per: 4 });
    setSplitK(4);
    const [rows, inF, outF, r] = [40, 20, 18, 2];
    let before = splitLaunches("matmul");
    await gradCheck({
      label: "linear split-K",
      inputs: [{ data: randn(rows * inF, 400), shape: [rows, inF] }, { data: randn(outF * inF, 401), shape: [outF, inF] }, { data: randn(outF, 402), shape: [outF] }],
      gpuFn: ([x, w, b]) => ops.linear(x, w, b, { activation: "gelu" }),
      refFn: ([x, w, b]) => refLinear(x, inF, w, outF, b, "gelu"),
      fwd: fwdTol(inF),
    });
    // y = x Wᵀ (K 20), dx = dy W (K 18), dW = dyᵀ x (K 40): all split.
    expect(splitLaunches("matmul") - before).toBe(3);
    const w = toGpu(randn(outF * inF, 403), [outF, inF]);
    const b = toGpu(randn(outF, 404), [outF]);
    const wv = randn(outF * inF, 403);
    const bv = randn(outF, 404);
    before = splitLaunches("matmul");
    await gradCheck({
      label: "loraLinear split-K",
      inputs: [{ data: randn(rows * inF, 405), shape: [rows, inF] }, { data: randn(r * inF, 406), shape: [r, inF] }, { data: randn(outF * r, 407), shape: [outF, r] }],
      gpuFn: ([x, down, up]) => ops.loraLinear(x, w, b, down, up, 0.75),
      refFn: ([x, down, up]) => refLora(x, inF, wv, outF, bv, down, up, r, 0.75),
      fwd: fwdTol(inF),
    });
    // Forward: x Aᵀ and x Wᵀ (K 20) split, h Bᵀ (K = r = 2) does not. Backward: dUp = dyᵀ h and
    // dDown = dhᵀ x (K = 40 rows), dh = dy B and dx = dy W (K 18) split; dh A (K 2) does not.
    expect(splitLaunches("matmul") - before).toBe(6);
    w.dispose();
    b.dispose();
  });
});

describe("split-K chunk plan and forcing", () => {
  test("chunks are multiples of the step, cover K exactly, none empty, never more than asked", () => {
    for (const k of [1, 15, 16, 17, 40, 257, 11520]) {
      for (const step of [1, 4, 8, 16, 32]) {
        for (const s of [1, 2, 3, 7, 13, 1000]) {
          const { splits, chunk } = planSplit(s, k, step);
          expect(splits).toBeGreaterThanOrEqual(1);
          expect(splits).toBeLessThanOrEqual(s);
          if (splits === 1) {
            expect(chunk).toBe(k);
            continue;
          }
          expect(chunk % step).toBe(0);
          expect((splits - 1) * chunk).toBeLessThan(k); // the last chunk is not empty
          expect(splits * chunk).toBeGreaterThanOrEqual(k); // and the chunks reach the end of K
        }
      }
    }
  });

  test("RL4PIX_SPLIT_K: auto, off, a factor; anything else is refused", () => {
    expect(parseSplitEnv(undefined)).toBeNull();
    expect(parseSplitEnv("auto")).toBeNull();
    expect(parseSplitEnv("off")).toBe(1);
    expect(parseSplitEnv("6")).toBe(6);
    expect(() => parseSplitEnv("0")).toThrow(/RL4PIX_SPLIT_K/);
    expect(() => parseSplitEnv("two")).toThrow(/RL4PIX_SPLIT_K/);
  });

  test("a forced split is cut until the partials fit one storage binding", () => {
    const plan = decideSplit(null, 8, { groups: 1, k: 4096, step: 16, partialBytes: 1000 }, 3500);
    expect(plan.splits).toBe(3);
  });
});

// Adapter descriptions as Dawn reports them (vendor, architecture, device, description).
const H200: AdapterDescription = { vendor: "nvidia", architecture: "hopper", device: "0x2335", description: "NVIDIA H200", isFallbackAdapter: false };
const LAVAPIPE: AdapterDescription = { vendor: "mesa", architecture: "", device: "", description: "llvmpipe (LLVM 15.0.6, 256 bits)", isFallbackAdapter: false };

/** The split the per-adapter policy picks for an [m, k] x [k, n] product on the GPU's tiled kernel. */
function gpuChoice(info: AdapterDescription, m: number, k: number, n: number): number {
  const grid = gemmGrid(GPU_TUNING, m, n, 1, false);
  return decideSplit(splitKPolicy(info), null, { groups: grid.gx * grid.gy, k, step: grid.step, partialBytes: 4 * m * n }, 2 ** 31).splits;
}

describe("split-K choice per adapter", () => {
  test("an H200-like adapter splits the SD UNet's 8x8 products (20 output tiles, long K), not the wide ones", () => {
    // Attention projections at 8x8 (64 tokens, 1280 channels): 20 tiles of 64x64 for 132 SMs.
    expect(gpuChoice(H200, 64, 1280, 1280)).toBeGreaterThan(1);
    // The feed-forward's output projection at 8x8 (K 5120).
    expect(gpuChoice(H200, 64, 5120, 1280)).toBeGreaterThan(1);
    // A LoRA up-weight gradient at 64x64 latents, batch 3: [320, 4] summed over 12288 rows.
    expect(gpuChoice(H200, 320, 12288, 4)).toBeGreaterThan(1);
    // 4096 tokens x 320 -> 1280: 1280 tiles fill the GPU already.
    expect(gpuChoice(H200, 4096, 320, 1280)).toBe(1);
    // A short K leaves nothing to split: 77 text tokens x 768 -> 768 at K 64.
    expect(gpuChoice(H200, 77, 64, 768)).toBe(1);
  });

  test("a CPU adapter (lavapipe) never splits by default", () => {
    expect(splitKPolicy(LAVAPIPE)).toBeNull();
    expect(gpuChoice(LAVAPIPE, 64, 1280, 1280)).toBe(1);
    expect(autoSplits(splitKPolicy(LAVAPIPE), { groups: 1, k: 1 << 20, step: 16, partialBytes: 4 })).toBe(1);
  });

  test("launches follow this adapter's policy: a small-grid, long-K product on the tiled kernel is split on a GPU, never on a CPU adapter", async () => {
    const cpu = adapterClass(gpu()) === "cpu";
    expect(splitKPolicy(gpu().info) === null).toBe(cpu); // lavapipe, the CI adapter, is a CPU adapter
    setMatmulTuning({ kind: "tiled", per: 4 });
    const [m, k, n] = [16, 1024, 64]; // one 64x64 tile, 64 K steps
    const a = randn(m * k, 800);
    const b = randn(k * n, 801);
    const y = scope(() => ops.matmul(toGpu(a, [m, k]), toGpu(b, [k, n])));
    if (cpu) expect(lastSplit("matmul")).toBe(1);
    else expect(lastSplit("matmul")).toBeGreaterThan(1);
    expectClose(await y.read(), refMatmul(a, [m, k], b, [k, n]).data, fwdTol(k), "automatic choice");
    y.dispose();
  });
});

describe("split-K rows of `rl4pix bench matmul`", () => {
  test("off and on for each shape, the on row naming the split it timed and the ratio; on this CPU adapter a forced split", async () => {
    const rows = await benchMatmulSplitK(1, [[16, 96, 40, "a small product"]]);
    expect(rows.map((r) => `${r.name} ${r.shape}`)).toEqual(["matmul split-K off 16x96x40", "matmul split-K on 16x96x40"]);
    for (const r of rows) expect(r.gflops!).toBeGreaterThan(0);
    // K 96 is too short for the policy on any adapter (chunks of >= 256), so "on" is the forced
    // factor, cut to the kernel's K steps (8 chunks of 12 k on lavapipe's register kernel).
    expect(rows[1].note).toMatch(/split [2-8] \(forced\)/);
    if (matmulTuning(gpu()).kind === "register") expect(rows[1].note).toContain(`split ${FORCED_SPLIT} (forced)`);
    expect(rows[1].note).toMatch(/[0-9.]+x the speed of off/);
    expect(rows[1].note).toContain("a small product");
  });
});
