import { describe, expect, test } from "bun:test";
import * as ops from "../src/tensor/ops/index.ts";
import { Tensor, backward, clearTape } from "../src/tensor/index.ts";
import { gpu } from "../src/gpu/device.ts";
import { f32ArrayToF16 } from "../src/tensor/f16.ts";
import { hostRandom } from "../src/tensor/philox.ts";
import { openSafetensors } from "../src/io/safetensors.ts";
import { expectClose, gradCheck, randn, toGpu, useGpu } from "./helpers.ts";
import { gatherRef, timestepEmbeddingRef } from "./ref/embedding.ts";

useGpu();

const GOLDENS = "/work/shared/goldens/components.safetensors";

describe("embedding gather", () => {
  test("forward and table gradient with repeated ids (frozen ids, finite differences)", async () => {
    const [vocab, dim] = [11, 5];
    const idList = [3, 0, 3, 10, 7, 3, 0, 9];
    const ids = Tensor.from(idList, [2, 4], "i32");
    await gradCheck({
      label: "embedding",
      inputs: [{ data: randn(vocab * dim, 1), shape: [vocab, dim] }],
      gpuFn: ([w]) => {
        const y = ops.embedding(w, ids);
        expect(y.shape).toEqual([2, 4, dim]);
        return y;
      },
      refFn: ([w]) => gatherRef(w, vocab, dim, idList),
      fwd: { atol: 0, rtol: 0 },
      // Each table entry's gradient is a sum of at most three f32 upstream values.
      bwd: { atol: 1e-6, rtol: 1e-6 },
    });
    ids.dispose();
  });
  test("ids outside the table give zero rows and no gradient", async () => {
    const [vocab, dim] = [4, 3];
    const table = randn(vocab * dim, 2);
    const idList = [-1, 2, 4, 2, 100];
    const w = toGpu(table, [vocab, dim]).requireGrad();
    const ids = Tensor.from(idList, [5], "i32");
    const y = ops.embedding(w, ids);
    expectClose(await y.read(), gatherRef(table, vocab, dim, idList), { atol: 0 }, "gather");
    const G = randn(15, 3);
    backward(y, toGpu(G, [5, dim]));
    const expected = new Float64Array(vocab * dim);
    for (let d = 0; d < dim; d++) expected[2 * dim + d] = Math.fround(G[1 * dim + d] + G[3 * dim + d]);
    expectClose(await w.grad!.read(), expected, { atol: 0 }, "grad");
    for (const t of [w, ids, y]) t.dispose();
    clearTape();
  });
  test("an f16 table gathers into f32", async () => {
    const [vocab, dim] = [6, 7];
    const bits = f32ArrayToF16(randn(vocab * dim, 4));
    const w = Tensor.from(bits, [vocab, dim], "f16");
    const exact = Float64Array.from(await w.read()); // the f16 values, widened
    const idList = [5, 0, 5, 2];
    const ids = Tensor.from(idList, [4], "i32");
    const y = ops.embedding(w, ids);
    expect(y.dtype).toBe("f32");
    expectClose(await y.read(), gatherRef(exact, vocab, dim, idList), { atol: 0 }, "f16 gather");
    for (const t of [w, ids, y]) t.dispose();
  });
  test("bad inputs are errors naming the op and shapes", () => {
    const w = toGpu(randn(6, 5), [2, 3]);
    const fIds = toGpu([0, 1], [2]);
    expect(() => ops.embedding(w, fIds)).toThrow(/embedding: ids must be i32, got f32 \[2\]/);
    const w1 = toGpu(randn(6, 5), [6]);
    const ids = Tensor.from([0], [1], "i32");
    expect(() => ops.embedding(w1, ids)).toThrow(/embedding: table must be \[V, D\], got \[6\]/);
    for (const t of [w, fIds, w1, ids]) t.dispose();
  });
});

describe("a table over the storage binding limit (CLIP-sized, 49408x768 f32 = 151 MB)", () => {
  test("gather and gradient across row windows", async () => {
    const g = gpu();
    const dim = 768;
    // CLIP's vocabulary, or more rows where the device's binding limit is larger.
    const vocab = Math.max(49408, Math.ceil(g.maxBinding / (dim * 4)) + 5000);
    const seed = 1234;
    const table = ops.randn([vocab, dim], seed).requireGrad(); // built on the GPU, row r = stream r*D..
    expect(table.byteLength).toBeGreaterThan(g.maxBinding);
    const lastOfFirstWindow = Math.floor(g.maxBinding / (dim * 4)) - 1;
    const idList = [vocab - 2, 0, lastOfFirstWindow, lastOfFirstWindow + 1, vocab - 1, vocab - 1, 320, lastOfFirstWindow + 1];
    const ids = Tensor.from(idList, [2, 4], "i32");
    const y = ops.embedding(table, ids);
    const got = await y.read();
    const expected = new Float64Array(idList.length * dim);
    idList.forEach((id, t) => expected.set(hostRandom("normal", dim, seed, id * dim), t * dim));
    expectClose(got, expected, { atol: 1e-7, rtol: 5e-7 }, "big gather");

    const G = randn(idList.length * dim, 5);
    backward(y, toGpu(G, [2, 4, dim]));
    const gradBuf = table.grad!.buffer;
    const readRow = async (r: number) => new Float32Array(await g.read(gradBuf, r * dim * 4, dim * 4));
    for (const id of new Set(idList)) {
      const want = new Float64Array(dim);
      idList.forEach((other, t) => {
        if (other === id) for (let d = 0; d < dim; d++) want[d] = Math.fround(want[d] + G[t * dim + d]);
      });
      expectClose(await readRow(id), want, { atol: 0 }, `grad row ${id}`);
    }
    for (const r of [1, lastOfFirstWindow - 1, lastOfFirstWindow + 2, vocab - 3]) {
      expect(Array.from(await readRow(r)).every((v) => v === 0)).toBe(true);
    }
    for (const t of [table, ids, y]) t.dispose();
    clearTape();
    g.pool.trim();
  });
  test("embeddingFromHost uploads only the gathered rows (f32 and f16 tables)", async () => {
    const [vocab, dim] = [50, 6];
    const table = randn(vocab * dim, 6);
    const idList = [49, 0, 7, 7];
    const y = ops.embeddingFromHost(Float32Array.from(table), vocab, dim, idList, [2, 2]);
    expect(y.shape).toEqual([2, 2, dim]);
    expectClose(await y.read(), gatherRef(table, vocab, dim, idList), { atol: 0 }, "host gather");
    const half = f32ArrayToF16(table);
    const yh = ops.embeddingFromHost(half, vocab, dim, idList);
    const w = Tensor.from(half, [vocab, dim], "f16");
    const widened = Float64Array.from(await w.read());
    expectClose(await yh.read(), gatherRef(widened, vocab, dim, idList), { atol: 0 }, "host gather f16");
    expect(() => ops.embeddingFromHost(Float32Array.from(table), vocab, dim, [50])).toThrow(/id 50 at position 0/);
    for (const t of [y, yh, w]) t.dispose();
  });
});

describe("timestep embedding (diffusers get_timestep_embedding)", () => {
  const configs: { dim: number; flip: boolean; shift: number; scale?: number; maxPeriod?: number }[] = [
    { dim: 32, flip: true, shift: 0 },
    { dim: 320, flip: true, shift: 0 },
    { dim: 16, flip: false, shift: 1 },
    { dim: 7, flip: false, shift: 1 },
    { dim: 9, flip: true, shift: 0, scale: 2.5, maxPeriod: 500 },
  ];
  for (const c of configs) {
    test(`dim ${c.dim} flip ${c.flip} shift ${c.shift}${c.scale ? ` scale ${c.scale} maxPeriod ${c.maxPeriod}` : ""}`, async () => {
      // Small timesteps: the f32 argument is within an ulp or two of the exact one, so sin/cos agree
      // with float64 to ~1e-6. Large timesteps (up to 999): the argument's own f32 rounding (an ulp
      // of ~1000 is 6e-5) dominates.
      for (const [ts, atol] of [[[0, 1, 2.5, 7], 2e-6], [[999, 500, 250, 1], 1.5e-4]] as [number[], number][]) {
        const y = ops.timestepEmbedding(ts, c.dim, { flipSinToCos: c.flip, downscaleFreqShift: c.shift, scale: c.scale, maxPeriod: c.maxPeriod });
        expect(y.shape).toEqual([ts.length, c.dim]);
        expectClose(await y.read(), timestepEmbeddingRef(ts, c.dim, c.flip, c.shift, c.scale, c.maxPeriod), { atol }, `timesteps ${ts}`);
        y.dispose();
      }
    });
  }
  test("timesteps as f32 and i32 tensors give the same rows as host numbers", async () => {
    const host = await ops.timestepEmbedding([999, 500, 1], 32, { flipSinToCos: true, downscaleFreqShift: 0 }).read();
    for (const dtype of ["f32", "i32"] as const) {
      const ts = Tensor.from([999, 500, 1], [3], dtype);
      const y = ops.timestepEmbedding(ts, 32, { flipSinToCos: true, downscaleFreqShift: 0 });
      expect(Array.from(await y.read())).toEqual(Array.from(host));
      ts.dispose();
      y.dispose();
    }
  });
  test("matches diffusers' time_proj golden (t = 500) and a per-row timestep check", async () => {
    const file = openSafetensors(GOLDENS);
    const golden = file.readTensor("unet.t500.intermediate.time_proj") as Float32Array; // [3, 32]
    const y = ops.timestepEmbedding([500, 500, 500], 32, { flipSinToCos: true, downscaleFreqShift: 0 });
    // Same f32 arithmetic as torch: 75 of 96 values are bit-equal; the worst (8.3e-7) is frequency 7,
    // where torch's expf lands one ulp away from the correctly rounded exp we use (argument 8.9,
    // whose ulp is 9.5e-7).
    expectClose(await y.read(), golden, { atol: 1e-6 }, "time_proj golden");
    const tvec = Array.from(file.readTensor("unet.tvec.timesteps") as BigInt64Array, Number);
    expect(tvec).toEqual([999, 500, 1]);
    const yv = await ops.timestepEmbedding(tvec, 32, { flipSinToCos: true, downscaleFreqShift: 0 }).read();
    expectClose(yv.subarray(32, 64), golden.subarray(0, 32), { atol: 1e-6 }, "row of t = 500");
    expectClose(yv, timestepEmbeddingRef(tvec, 32, true, 0), { atol: 1.5e-4 }, "tvec vs float64");
    y.dispose();
  });
});
