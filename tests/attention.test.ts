// Scaled dot-product attention: forward against a float64 CPU reference, backward against central
// finite differences (tiny shapes) and against the analytic float64 backward (larger shapes, after
// that reference is itself checked by finite differences), both layouts, causal masking, the
// chunked dk/dv path, memory that stays O(L * d), and attention-map capture.
import { describe, expect, test } from "bun:test";
import * as ops from "../src/tensor/ops/index.ts";
import { backward, clearTape } from "../src/tensor/index.ts";
import { gpu } from "../src/gpu/device.ts";
import { expectClose, gradCheck, randn, toGpu, useGpu } from "./helpers.ts";
import { attentionBackwardRef, attentionRef, headMeanProbsRef, mergeHeads, splitHeads, type AttnDims } from "./ref/attention.ts";

useGpu();

// Tolerances. Forward: outputs are convex combinations of v (|v| ~ 1) with f32 exp/sum rounding over
// up to a few hundred keys: 2e-5 absolute + relative. Backward vs finite differences (h = 1e-3,
// float64, O(h^2) ~ 1e-6 truncation): 1e-3 absolute + relative; vs the analytic float64 backward,
// sums over a few hundred f32 terms: 2e-4.
const FWD = { atol: 2e-5, rtol: 2e-5 };
const BWD_FD = { atol: 1e-3, rtol: 1e-3 };
const BWD_AN = { atol: 2e-4, rtol: 2e-4 };

function inputs(dims: AttnDims, seed: number) {
  const { B, H, Lq, Lk, d } = dims;
  return {
    q: randn(B * H * Lq * d, seed, 0.8),
    k: randn(B * H * Lk * d, seed + 1, 0.8),
    v: randn(B * H * Lk * d, seed + 2),
  };
}

describe("attention, finite-difference gradients (tiny shapes)", () => {
  const cases: (AttnDims & { label: string })[] = [
    { label: "Lq 5 != Lk 7, d 3 (scalar loads)", B: 2, H: 2, Lq: 5, Lk: 7, d: 3 },
    { label: "causal 6x6, d 8 (vec4 loads)", B: 1, H: 2, Lq: 6, Lk: 6, d: 8, causal: true },
    { label: "Lq 3, Lk 9, d 8, scale 0.5", B: 2, H: 1, Lq: 3, Lk: 9, d: 8, scale: 0.5 },
    { label: "causal 4x4, d 3", B: 2, H: 1, Lq: 4, Lk: 4, d: 3, causal: true },
    { label: "one key", B: 1, H: 2, Lq: 3, Lk: 1, d: 3 },
  ];
  for (const dims of cases) {
    test(dims.label, async () => {
      const { B, H, Lq, Lk, d } = dims;
      const { q, k, v } = inputs(dims, 7);
      await gradCheck({
        label: `attention ${dims.label}`,
        inputs: [{ data: q, shape: [B, H, Lq, d] }, { data: k, shape: [B, H, Lk, d] }, { data: v, shape: [B, H, Lk, d] }],
        gpuFn: ([tq, tk, tv]) => ops.attention(tq, tk, tv, { causal: dims.causal, scale: dims.scale }),
        refFn: ([a, b, c]) => attentionRef(a, b, c, dims),
        fwd: FWD,
        bwd: BWD_FD,
      });
    });
  }

  test("merged-heads layout [B, L, H*d]", async () => {
    const dims: AttnDims = { B: 2, H: 3, Lq: 4, Lk: 5, d: 3 };
    const { B, H, Lq, Lk, d } = dims;
    const { q, k, v } = inputs(dims, 17);
    await gradCheck({
      label: "attentionMergedHeads",
      inputs: [
        { data: mergeHeads(q, B, H, Lq, d), shape: [B, Lq, H * d] },
        { data: mergeHeads(k, B, H, Lk, d), shape: [B, Lk, H * d] },
        { data: mergeHeads(v, B, H, Lk, d), shape: [B, Lk, H * d] },
      ],
      gpuFn: ([tq, tk, tv]) => ops.attentionMergedHeads(tq, tk, tv, H),
      refFn: ([a, b, c]) => mergeHeads(attentionRef(splitHeads(a, B, H, Lq, d), splitHeads(b, B, H, Lk, d), splitHeads(c, B, H, Lk, d), dims), B, H, Lq, d),
      fwd: FWD,
      bwd: BWD_FD,
    });
  });

  test("the analytic float64 backward reference agrees with finite differences", () => {
    const dims: AttnDims = { B: 1, H: 2, Lq: 3, Lk: 4, d: 3, causal: true };
    const { q, k, v } = inputs(dims, 27);
    const G = randn(q.length, 28);
    const an = attentionBackwardRef(q, k, v, G, dims);
    const h = 1e-5;
    const fd = (which: 0 | 1 | 2) => {
      const base = [q, k, v][which];
      const out = new Float64Array(base.length);
      for (let i = 0; i < base.length; i++) {
        const args = [q, k, v].map((a) => Float64Array.from(a));
        args[which][i] += h;
        const yp = attentionRef(args[0], args[1], args[2], dims);
        args[which][i] -= 2 * h;
        const ym = attentionRef(args[0], args[1], args[2], dims);
        for (let j = 0; j < G.length; j++) out[i] += ((yp[j] - ym[j]) * G[j]) / (2 * h);
      }
      return out;
    };
    expectClose(an.dq, fd(0), { atol: 1e-7 }, "ref dq");
    expectClose(an.dk, fd(1), { atol: 1e-7 }, "ref dk");
    expectClose(an.dv, fd(2), { atol: 1e-7 }, "ref dv");
  });
});

/** Forward and all three gradients on the GPU vs the float64 references. */
async function checkAgainstAnalytic(dims: AttnDims, seed: number, label: string): Promise<void> {
  const { B, H, Lq, Lk, d } = dims;
  const { q, k, v } = inputs(dims, seed);
  const G = randn(B * H * Lq * d, seed + 5);
  const tq = toGpu(q, [B, H, Lq, d]).requireGrad();
  const tk = toGpu(k, [B, H, Lk, d]).requireGrad();
  const tv = toGpu(v, [B, H, Lk, d]).requireGrad();
  const y = ops.attention(tq, tk, tv, { causal: dims.causal, scale: dims.scale });
  expectClose(await y.read(), attentionRef(q, k, v, dims), FWD, `${label} forward`);
  backward(y, toGpu(G, y.shape));
  const ref = attentionBackwardRef(q, k, v, G, dims);
  expectClose(await tq.grad!.read(), ref.dq, BWD_AN, `${label} dq`);
  expectClose(await tk.grad!.read(), ref.dk, BWD_AN, `${label} dk`);
  expectClose(await tv.grad!.read(), ref.dv, BWD_AN, `${label} dv`);
  for (const t of [tq, tk, tv, y]) t.dispose();
  clearTape();
}

describe("attention, longer sequences (analytic float64 backward)", () => {
  test("Lk 300 over many key blocks, Lq 130 over several query blocks, d 40", async () => {
    await checkAgainstAnalytic({ B: 1, H: 2, Lq: 130, Lk: 300, d: 40 }, 41, "long");
  }, 60_000);
  test("causal 150x150, d 40", async () => {
    await checkAgainstAnalytic({ B: 1, H: 1, Lq: 150, Lk: 150, d: 40, causal: true }, 51, "causal long");
  }, 60_000);
  test("few keys, many queries: dk/dv summed over query chunks (Lq 200, Lk 5, d 8)", async () => {
    await checkAgainstAnalytic({ B: 1, H: 1, Lq: 200, Lk: 5, d: 8 }, 61, "chunked");
  }, 60_000);
  test("cross-attention shape 256 x 77, 2 heads of 8", async () => {
    await checkAgainstAnalytic({ B: 2, H: 2, Lq: 256, Lk: 77, d: 8 }, 71, "cross");
  }, 60_000);

  test("self-attention at 64x64-latent length (4096 x 4096, d 40): sampled rows vs float64", async () => {
    const L = 4096, d = 40;
    const q = randn(L * d, 131, 0.6), k = randn(L * d, 132, 0.6), v = randn(L * d, 133);
    const y = ops.attention(toGpu(q, [1, 1, L, d]), toGpu(k, [1, 1, L, d]), toGpu(v, [1, 1, L, d]));
    const got = await y.read();
    const rows = [0, 1, 7, 8, 1000, 2047, 2048, 4095];
    const want = new Float64Array(rows.length * d);
    const gotRows = new Float64Array(rows.length * d);
    const s = new Float64Array(L);
    rows.forEach((i, n) => {
      let m = -Infinity;
      for (let j = 0; j < L; j++) {
        let dot = 0;
        for (let c = 0; c < d; c++) dot += q[i * d + c] * k[j * d + c];
        s[j] = dot / Math.sqrt(d);
        m = Math.max(m, s[j]);
      }
      let sum = 0;
      for (let j = 0; j < L; j++) sum += (s[j] = Math.exp(s[j] - m));
      for (let j = 0; j < L; j++) for (let c = 0; c < d; c++) want[n * d + c] += (s[j] / sum) * v[j * d + c];
      for (let c = 0; c < d; c++) gotRows[n * d + c] = got[i * d + c];
    });
    expectClose(gotRows, want, FWD, "4096x4096");
  }, 60_000);

  test("memory stays O(L * d): 2048 x 2048 allocates far less than one [Lq, Lk] matrix", async () => {
    const L = 2048, d = 8;
    const pool = gpu().pool;
    await gpu().sync();
    pool.trim();
    pool.resetPeak();
    const before = pool.snapshot().allocatedBytes;
    const mk = (seed: number) => toGpu(randn(L * d, seed), [1, 1, L, d]).requireGrad();
    const [tq, tk, tv] = [mk(81), mk(82), mk(83)];
    const y = ops.attention(tq, tk, tv);
    backward(y, toGpu(randn(L * d, 84), y.shape));
    await gpu().sync();
    const peak = pool.snapshot().peakAllocatedBytes - before;
    const probsBytes = L * L * 4; // 16 MiB
    expect(peak).toBeLessThan(probsBytes / 8);
    // and the result is still right at one sampled row
    const out = await y.read();
    expect(out.every(Number.isFinite)).toBe(true);
    for (const t of [tq, tk, tv, y]) t.dispose();
  }, 60_000);
});

describe("attention kernel variants", () => {
  test("wide heads (d 132) use shorter tiles", async () => {
    await checkAgainstAnalytic({ B: 1, H: 1, Lq: 19, Lk: 23, d: 132 }, 101, "wide");
  }, 60_000);
  test("other tile shapes: 3 rows per tile, 3 keys per lane per forward step, 2 per backward step", async () => {
    ops.setAttentionTuning({ rows: 3, keys: 3, bwdKeys: 2 });
    try {
      await checkAgainstAnalytic({ B: 2, H: 1, Lq: 17, Lk: 50, d: 8, causal: true }, 111, "rows 3");
    } finally {
      ops.setAttentionTuning(null);
    }
  }, 60_000);
  test("lanes exchanging through workgroup memory (the path for adapters without subgroups)", async () => {
    // one row per tile keeps the barrier count (and lavapipe's compile time) small
    ops.setAttentionTuning({ rows: 1, keys: 1, bwdKeys: 1, subgroups: false });
    try {
      await checkAgainstAnalytic({ B: 1, H: 2, Lq: 13, Lk: 21, d: 8 }, 121, "no subgroups");
    } finally {
      ops.setAttentionTuning(null);
    }
  }, 60_000);
});

describe("attention capture", () => {
  const dims: AttnDims = { B: 3, H: 2, Lq: 9, Lk: 6, d: 3 };
  const { B, H, Lq, Lk, d } = dims;

  test("sum mode: head-averaged probabilities of chosen rows and columns, accumulated over calls", async () => {
    const { q, k, v } = inputs(dims, 91);
    const tq = toGpu(q, [B, H, Lq, d]), tk = toGpu(k, [B, H, Lk, d]), tv = toGpu(v, [B, H, Lk, d]);
    const out = ops.zeros([1, Lq]);
    const cols = [1, 2, 4];
    ops.attention(tq, tk, tv, { capture: { rows: [1, 1], cols, out, weight: 0.5 } }).dispose();
    ops.attention(tq, tk, tv, { capture: { rows: [1, 1], cols, out, weight: 0.25 } }).dispose();
    const P = headMeanProbsRef(q, k, dims, 1, 1); // [1, Lq, Lk]
    const want = new Float64Array(Lq);
    for (let i = 0; i < Lq; i++) for (const c of cols) want[i] += 0.75 * P[i * Lk + c];
    expectClose(await out.read(), want, { atol: 1e-6, rtol: 1e-5 }, "capture sum");
  });

  test("map mode with a column range writes only those columns of [count, Lq, Lk]; causal respected", async () => {
    const cdims = { ...dims, Lk: Lq, causal: true };
    const { q, k, v } = inputs(cdims, 93);
    const tq = toGpu(q, [B, H, Lq, d]), tk = toGpu(k, [B, H, Lq, d]), tv = toGpu(v, [B, H, Lq, d]);
    const out = ops.zeros([2, Lq, Lq]);
    ops.attention(tq, tk, tv, { causal: true, capture: { rows: [0, 2], cols: { start: 2, count: 5 }, out, weight: 1, mode: "map" } }).dispose();
    const P = headMeanProbsRef(q, k, cdims, 0, 2);
    for (let t = 0; t < P.length; t++) {
      const c = t % Lq;
      if (c < 2 || c >= 7) P[t] = 0;
    }
    expectClose(await out.read(), P, { atol: 1e-6, rtol: 1e-5 }, "capture map");
  });

  test("merged-heads layout captures the same map", async () => {
    const { q, k, v } = inputs(dims, 95);
    const tq = toGpu(mergeHeads(q, B, H, Lq, d), [B, Lq, H * d]);
    const tk = toGpu(mergeHeads(k, B, H, Lk, d), [B, Lk, H * d]);
    const tv = toGpu(mergeHeads(v, B, H, Lk, d), [B, Lk, H * d]);
    const out = ops.zeros([3, Lq, Lk]);
    const all = Array.from({ length: Lk }, (_, i) => i);
    ops.attentionMergedHeads(tq, tk, tv, H, { capture: { rows: [0, 3], cols: all, out, weight: 1, mode: "map" } }).dispose();
    expectClose(await out.read(), headMeanProbsRef(q, k, dims, 0, 3), { atol: 1e-6, rtol: 1e-5 }, "capture merged");
  });

  test("captureAttention (no attention output) recomputes the logsumexp: causal, merged heads", async () => {
    const cdims = { ...dims, Lk: Lq, causal: true };
    const { q, k } = inputs(cdims, 97);
    const tq = toGpu(mergeHeads(q, B, H, Lq, d), [B, Lq, H * d]);
    const tk = toGpu(mergeHeads(k, B, H, Lq, d), [B, Lq, H * d]);
    const out = ops.zeros([2, Lq]);
    const cols = [0, 3, 8];
    ops.captureAttention(tq, tk, H, { causal: true, capture: { rows: [1, 2], cols, out, weight: 2 } });
    const P = headMeanProbsRef(q, k, cdims, 1, 2); // [2, Lq, Lq]
    const want = new Float64Array(2 * Lq);
    for (let t = 0; t < 2 * Lq; t++) for (const c of cols) want[t] += 2 * P[t * Lq + c];
    expectClose(await out.read(), want, { atol: 1e-6, rtol: 1e-5 }, "captureAttention");
  });

  test("a wrongly shaped accumulator or out-of-range rows are errors", () => {
    const tq = ops.zeros([B, H, Lq, d]), tk = ops.zeros([B, H, Lk, d]);
    expect(() => ops.attention(tq, tk, tk, { capture: { rows: [0, 1], cols: [0], out: ops.zeros([2, Lq]), weight: 1 } })).toThrow(/capture/);
    expect(() => ops.attention(tq, tk, tk, { capture: { rows: [2, 2], cols: [0], out: ops.zeros([2, Lq]), weight: 1 } })).toThrow(/capture/);
    expect(() => ops.attention(tq, tk, tk, { capture: { rows: [0, 1], cols: [Lk], out: ops.zeros([1, Lq]), weight: 1 } })).toThrow(/capture/);
  });
});

describe("attention argument checks", () => {
  test("mismatched shapes name the op and both shapes", () => {
    const q = ops.zeros([1, 2, 3, 4]);
    const k = ops.zeros([1, 2, 5, 3]);
    expect(() => ops.attention(q, k, k)).toThrow(/attention: .*\[1,2,3,4\].*\[1,2,5,3\]/);
    expect(() => ops.attentionMergedHeads(ops.zeros([1, 3, 10]), ops.zeros([1, 4, 10]), ops.zeros([1, 4, 10]), 3)).toThrow(/heads/);
  });
});
