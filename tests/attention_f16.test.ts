// f16 activations through scaled dot-product attention (needs shader-f16: lavapipe has it): f16 q,
// k, v give an f16 output and f16 gradients, while scores, softmax, logsumexp and all sums stay f32.
// Forward against the float64 reference on f16-rounded inputs, backward against central finite
// differences (tiny shapes) and the analytic float64 backward (longer sequences), on every kernel
// path attention can take: vec4 and scalar loads, 16- and 8-row forward tiles, other tile shapes,
// lane exchange through subgroups or workgroup memory, dk/dv written directly or summed over query
// chunks from f32 partial copies, both layouts, causal masks; and attention-map capture, which stays
// f32 for f16 q and k.
import { describe, expect, test } from "bun:test";
import * as ops from "../src/tensor/ops/index.ts";
import { Tensor, backward, clearTape } from "../src/tensor/index.ts";
import { gpu } from "../src/gpu/device.ts";
import { expectClose, gradCheck, randn, roundF16, toGpu, useGpu } from "./helpers.ts";
import { attentionBackwardRef, attentionProbsRef, attentionRef, headMeanProbsRef, mergeHeads, splitHeads, type AttnDims } from "./ref/attention.ts";

useGpu();

// Tolerances. The reference sees the same f16-rounded q, k, v (and upstream gradient), so what
// differs is f32 arithmetic (the f32 tests' bounds: 2e-5 forward; 1e-3 against finite differences,
// 2e-4 against the analytic backward) plus:
//  - one rounding of each stored output or gradient to f16: at most half an ulp, 2^-11 relative;
//  - in the backward, delta_i = dO_i . O_i read from the f16-rounded output O: an error of at most
//    e_i = 2^-11 sum_c |dO_ic O_ic| per query, which reaches dq_i as scale e_i sum_j P_ij |k_j| and
//    dk_j as scale sum_i P_ij e_i |q_i| (dv does not read delta). `deltaBound` computes the largest of
//    these from the float64 reference and adds it to the absolute tolerance.
// A second f16 rounding anywhere (an f16 score, probability or accumulator) exceeds these bounds.
const HALF_ULP = 2 ** -11;
const FWD = { atol: 2e-5, rtol: 2e-5 + HALF_ULP };
const BWD_FD = { atol: 1e-3, rtol: 1e-3 + HALF_ULP };
const BWD_AN = { atol: 2e-4, rtol: 2e-4 + HALF_ULP };

/** The largest error in dq or dk that delta read from the f16-rounded output may cause (see above). */
function deltaBound(q: Float64Array, k: Float64Array, v: Float64Array, G: Float64Array, dims: AttnDims): number {
  const { B, H, Lq, Lk, d } = dims;
  const scale = dims.scale ?? 1 / Math.sqrt(d);
  const P = attentionProbsRef(q, k, dims); // [B, H, Lq, Lk]
  const O = attentionRef(q, k, v, dims); // [B, H, Lq, d]
  let worst = 0;
  const dkBound = new Float64Array(k.length);
  for (let bh = 0; bh < B * H; bh++) {
    for (let i = 0; i < Lq; i++) {
      let e = 0;
      for (let c = 0; c < d; c++) e += Math.abs(G[(bh * Lq + i) * d + c] * O[(bh * Lq + i) * d + c]);
      e *= HALF_ULP;
      for (let c = 0; c < d; c++) {
        let s = 0;
        for (let j = 0; j < Lk; j++) s += P[(bh * Lq + i) * Lk + j] * Math.abs(k[(bh * Lk + j) * d + c]);
        worst = Math.max(worst, scale * e * s);
      }
      for (let j = 0; j < Lk; j++) {
        const w = scale * P[(bh * Lq + i) * Lk + j] * e;
        for (let c = 0; c < d; c++) dkBound[(bh * Lk + j) * d + c] += w * Math.abs(q[(bh * Lq + i) * d + c]);
      }
    }
  }
  for (const b of dkBound) worst = Math.max(worst, b);
  return worst;
}

/** f16-rounded inputs in the [B, H, L, d] layout. */
function inputs(dims: AttnDims, seed: number) {
  const { B, H, Lq, Lk, d } = dims;
  return {
    q: roundF16(randn(B * H * Lq * d, seed, 0.8)),
    k: roundF16(randn(B * H * Lk * d, seed + 1, 0.8)),
    v: roundF16(randn(B * H * Lk * d, seed + 2)),
  };
}

test("this adapter reads and writes f16 activations (every test below needs shader-f16)", () => {
  expect(gpu().hasF16).toBe(true);
});

describe("attention on f16 activations, finite-difference gradients (tiny shapes)", () => {
  const cases: (AttnDims & { label: string })[] = [
    { label: "Lq 5 != Lk 7, d 3 (scalar loads)", B: 2, H: 2, Lq: 5, Lk: 7, d: 3 },
    { label: "causal 6x6, d 8 (vec4 loads)", B: 1, H: 2, Lq: 6, Lk: 6, d: 8, causal: true },
    { label: "Lq 3, Lk 9, d 8, scale 0.5", B: 2, H: 1, Lq: 3, Lk: 9, d: 8, scale: 0.5 },
    { label: "causal 4x4, d 5", B: 2, H: 1, Lq: 4, Lk: 4, d: 5, causal: true },
    { label: "one key", B: 1, H: 2, Lq: 3, Lk: 1, d: 3 },
  ];
  for (const dims of cases) {
    test(`${dims.label}: f16 output and f16 dq, dk, dv`, async () => {
      const { B, H, Lq, Lk, d } = dims;
      const { q, k, v } = inputs(dims, 7);
      const G = roundF16(randn(B * H * Lq * d, 99)); // gradCheck's upstream gradient (its default seed)
      await gradCheck({
        label: `attention f16 ${dims.label}`,
        inputs: [
          { data: q, shape: [B, H, Lq, d], dtype: "f16" },
          { data: k, shape: [B, H, Lk, d], dtype: "f16" },
          { data: v, shape: [B, H, Lk, d], dtype: "f16" },
        ],
        gpuFn: ([tq, tk, tv]) => {
          const y = ops.attention(tq, tk, tv, { causal: dims.causal, scale: dims.scale });
          expect(y.dtype).toBe("f16");
          return y;
        },
        refFn: ([a, b, c]) => attentionRef(a, b, c, dims),
        fwd: FWD,
        bwd: { ...BWD_FD, atol: BWD_FD.atol + deltaBound(q, k, v, G, dims) },
      });
    });
  }

  test("merged-heads layout [B, L, H*d] (the UNet's)", async () => {
    const dims: AttnDims = { B: 2, H: 3, Lq: 4, Lk: 5, d: 4 };
    const { B, H, Lq, Lk, d } = dims;
    const { q, k, v } = inputs(dims, 17);
    const G = mergeHeads(roundF16(randn(B * H * Lq * d, 99)), B, H, Lq, d);
    await gradCheck({
      label: "attentionMergedHeads f16",
      inputs: [
        { data: mergeHeads(q, B, H, Lq, d), shape: [B, Lq, H * d], dtype: "f16" },
        { data: mergeHeads(k, B, H, Lk, d), shape: [B, Lk, H * d], dtype: "f16" },
        { data: mergeHeads(v, B, H, Lk, d), shape: [B, Lk, H * d], dtype: "f16" },
      ],
      gpuFn: ([tq, tk, tv]) => ops.attentionMergedHeads(tq, tk, tv, H),
      refFn: ([a, b, c]) => mergeHeads(attentionRef(splitHeads(a, B, H, Lq, d), splitHeads(b, B, H, Lk, d), splitHeads(c, B, H, Lk, d), dims), B, H, Lq, d),
      fwd: FWD,
      // G here is gradCheck's in the merged layout; the bound is computed in the split one.
      bwd: { ...BWD_FD, atol: BWD_FD.atol + deltaBound(q, k, v, splitHeads(G, B, H, Lq, d), dims) },
    });
  });
});

/** Forward and all three gradients on the GPU (f16) vs the float64 references. */
async function checkAgainstAnalytic(dims: AttnDims, seed: number, label: string): Promise<void> {
  const { B, H, Lq, Lk, d } = dims;
  const { q, k, v } = inputs(dims, seed);
  const G = roundF16(randn(B * H * Lq * d, seed + 5));
  const tq = toGpu(q, [B, H, Lq, d], "f16").requireGrad();
  const tk = toGpu(k, [B, H, Lk, d], "f16").requireGrad();
  const tv = toGpu(v, [B, H, Lk, d], "f16").requireGrad();
  const y = ops.attention(tq, tk, tv, { causal: dims.causal, scale: dims.scale });
  expect(y.dtype).toBe("f16");
  expectClose(await y.read(), attentionRef(q, k, v, dims), FWD, `${label} forward`);
  backward(y, toGpu(G, y.shape, "f16"));
  const ref = attentionBackwardRef(q, k, v, G, dims);
  const tol = { ...BWD_AN, atol: BWD_AN.atol + deltaBound(q, k, v, G, dims) };
  for (const t of [tq, tk, tv]) expect(t.grad!.dtype).toBe("f16");
  expectClose(await tq.grad!.read(), ref.dq, tol, `${label} dq`);
  expectClose(await tk.grad!.read(), ref.dk, tol, `${label} dk`);
  expectClose(await tv.grad!.read(), ref.dv, BWD_AN, `${label} dv`);
  for (const t of [tq, tk, tv, y]) t.dispose();
  clearTape();
}

describe("attention on f16 activations, longer sequences (analytic float64 backward)", () => {
  test("Lk 300 over many key blocks, Lq 130 over several 16-row query tiles, d 40", async () => {
    await checkAgainstAnalytic({ B: 1, H: 2, Lq: 130, Lk: 300, d: 40 }, 41, "long");
  }, 120_000);
  test("causal 150x150, d 40", async () => {
    await checkAgainstAnalytic({ B: 1, H: 1, Lq: 150, Lk: 150, d: 40, causal: true }, 51, "causal long");
  }, 120_000);
  test("few keys, many queries: dk/dv from f32 partial copies over 4 query chunks, rounded once (Lq 200, Lk 5, d 8)", async () => {
    await checkAgainstAnalytic({ B: 1, H: 1, Lq: 200, Lk: 5, d: 8 }, 61, "chunked");
  }, 120_000);
  test("cross-attention shape 256 x 77, 2 heads of 8 (dk/dv written as f16 directly)", async () => {
    await checkAgainstAnalytic({ B: 2, H: 2, Lq: 256, Lk: 77, d: 8 }, 71, "cross");
  }, 120_000);
});

describe("attention on f16 activations, kernel variants", () => {
  test("wide heads (d 132) use shorter tiles", async () => {
    await checkAgainstAnalytic({ B: 1, H: 1, Lq: 19, Lk: 23, d: 132 }, 101, "wide");
  }, 120_000);
  test("other tile shapes: 3 rows per tile, 3 keys per lane per forward step, 2 per backward step; scalar loads", async () => {
    ops.setAttentionTuning({ rows: 3, keys: 3, bwdKeys: 2 });
    try {
      await checkAgainstAnalytic({ B: 2, H: 1, Lq: 17, Lk: 50, d: 6, causal: true }, 111, "rows 3");
    } finally {
      ops.setAttentionTuning(null);
    }
  }, 120_000);
  test("lanes exchanging through workgroup memory (the path for adapters without subgroups)", async () => {
    ops.setAttentionTuning({ rows: 1, keys: 1, bwdKeys: 1, subgroups: false });
    try {
      await checkAgainstAnalytic({ B: 1, H: 2, Lq: 13, Lk: 21, d: 8 }, 121, "no subgroups");
    } finally {
      ops.setAttentionTuning(null);
    }
  }, 120_000);
});

describe("attention capture from f16 q and k: maps stay f32", () => {
  // Probabilities are computed in f32 from the same f16 inputs the reference sees: the f32 capture
  // tolerance applies unchanged (an f16-rounded probability would be off by up to 2^-11 relative).
  const CAP = { atol: 1e-6, rtol: 1e-5 };
  const dims: AttnDims = { B: 3, H: 2, Lq: 9, Lk: 6, d: 3 };
  const { B, H, Lq, Lk, d } = dims;

  test("sum mode through the forward's logsumexp, accumulated over calls", async () => {
    const { q, k, v } = inputs(dims, 91);
    const tq = toGpu(q, [B, H, Lq, d], "f16"), tk = toGpu(k, [B, H, Lk, d], "f16"), tv = toGpu(v, [B, H, Lk, d], "f16");
    const out = ops.zeros([1, Lq]);
    const cols = [1, 2, 4];
    ops.attention(tq, tk, tv, { capture: { rows: [1, 1], cols, out, weight: 0.5 } }).dispose();
    ops.attention(tq, tk, tv, { capture: { rows: [1, 1], cols, out, weight: 0.25 } }).dispose();
    const P = headMeanProbsRef(q, k, dims, 1, 1); // [1, Lq, Lk]
    const want = new Float64Array(Lq);
    for (let i = 0; i < Lq; i++) for (const c of cols) want[i] += 0.75 * P[i * Lk + c];
    expect(out.dtype).toBe("f32");
    expectClose(await out.read(), want, CAP, "capture sum f16");
    for (const t of [tq, tk, tv, out]) t.dispose();
  });

  test("map mode, merged heads, causal, vec4-sized heads", async () => {
    const cdims: AttnDims = { B: 2, H: 2, Lq: 7, Lk: 7, d: 4, causal: true };
    const { q, k, v } = inputs(cdims, 93);
    const m = (x: Float64Array) => mergeHeads(x, 2, 2, 7, 4);
    const tq = toGpu(m(q), [2, 7, 8], "f16"), tk = toGpu(m(k), [2, 7, 8], "f16"), tv = toGpu(m(v), [2, 7, 8], "f16");
    const out = ops.zeros([2, 7, 7]);
    const y = ops.attentionMergedHeads(tq, tk, tv, 2, { causal: true, capture: { rows: [0, 2], cols: { start: 0, count: 7 }, out, weight: 1, mode: "map" } });
    expect(y.dtype).toBe("f16");
    expectClose(await out.read(), headMeanProbsRef(q, k, cdims, 0, 2), CAP, "capture map f16");
    for (const t of [tq, tk, tv, out, y]) t.dispose();
  });

  test("captureAttention (no attention output) recomputes the logsumexp in f32", async () => {
    const cdims = { ...dims, Lk: Lq, causal: true };
    const { q, k } = inputs(cdims, 97);
    const tq = toGpu(mergeHeads(q, B, H, Lq, d), [B, Lq, H * d], "f16");
    const tk = toGpu(mergeHeads(k, B, H, Lq, d), [B, Lq, H * d], "f16");
    const out = ops.zeros([2, Lq]);
    const cols = [0, 3, 8];
    ops.captureAttention(tq, tk, H, { causal: true, capture: { rows: [1, 2], cols, out, weight: 2 } });
    const P = headMeanProbsRef(q, k, cdims, 1, 2); // [2, Lq, Lq]
    const want = new Float64Array(2 * Lq);
    for (let t = 0; t < 2 * Lq; t++) for (const c of cols) want[t] += 2 * P[t * Lq + c];
    expectClose(await out.read(), want, CAP, "captureAttention f16");
    for (const t of [tq, tk, out]) t.dispose();
  });
});

describe("attention on f16 activations: refusals", () => {
  test("mixed f16 / f32 operands are refused, naming both", () => {
    const q = Tensor.from(new Float32Array(24), [1, 2, 3, 4], "f16");
    const k = Tensor.from(new Float32Array(40), [1, 2, 5, 4]);
    expect(() => ops.attention(q, k, k)).toThrow("attention: q [1,2,3,4] f16 and k [1,2,5,4] f32 mix dtypes");
    q.dispose();
    k.dispose();
  });

  test("an f32 upstream gradient for an f16 output is refused in the backward", () => {
    const q = Tensor.from(randn(24, 5), [1, 2, 3, 4], "f16").requireGrad();
    const y = ops.attention(q, q, q);
    const g32 = Tensor.from(new Float32Array(24), [1, 2, 3, 4]);
    try {
      expect(() => backward(y, g32)).toThrow("attention backward: an f32 gradient [1,2,3,4] for an f16 output [1,2,3,4]");
    } finally {
      clearTape();
      for (const t of [q, y, g32]) t.dispose();
    }
  });
});
