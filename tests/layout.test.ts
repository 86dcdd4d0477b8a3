import { describe, expect, test } from "bun:test";
import * as ops from "../src/tensor/ops/index.ts";
import { Tensor, backward, clearTape } from "../src/tensor/index.ts";
import { gpu } from "../src/gpu/device.ts";
import { expectClose, gradCheck, prod, randn, toGpu, useGpu } from "./helpers.ts";
import { concatRef, permuteRef, sliceRef } from "./ref/layout.ts";
import { forcePackedF16Copies } from "../src/tensor/ops/layout.ts";

useGpu();

// Layout ops only move values: forward must be exact, and so must the gradients (sums of at most a
// few f32 values of the upstream gradient), up to the finite-difference error of the float64 reference.
const EXACT = { atol: 0, rtol: 0 };
const FD = { atol: 1e-6, rtol: 1e-6 };

describe("permute / transpose", () => {
  const cases: [number[], number[]][] = [
    [[7], [0]],
    [[3, 5], [1, 0]],
    [[2, 3, 4], [2, 0, 1]],
    [[1, 4, 1, 3], [3, 1, 0, 2]],
    [[2, 3, 1, 5, 2], [4, 2, 0, 3, 1]],
    [[2, 1, 3, 2, 1, 2, 3, 2], [7, 0, 5, 3, 6, 1, 4, 2]],
    [[2, 3, 4], [-1, 0, 1]],
  ];
  for (const [shape, perm] of cases) {
    test(`permute ${JSON.stringify(shape)} by ${JSON.stringify(perm)}`, async () => {
      const p = perm.map((d) => (d < 0 ? d + shape.length : d));
      await gradCheck({
        label: "permute",
        inputs: [{ data: randn(prod(shape), 1), shape }],
        gpuFn: ([x]) => ops.permute(x, perm),
        refFn: ([x]) => permuteRef(x, shape, p),
        fwd: EXACT,
        bwd: FD,
      });
    });
  }
  test("transpose swaps two axes", async () => {
    const shape = [3, 4, 5];
    await gradCheck({
      label: "transpose",
      inputs: [{ data: randn(60, 2), shape }],
      gpuFn: ([x]) => ops.transpose(x, 0, -1),
      refFn: ([x]) => permuteRef(x, shape, [2, 1, 0]),
      fwd: EXACT,
      bwd: FD,
    });
  });
  test("grids wider than the per-dimension workgroup limit are split (66000 outer rows)", async () => {
    const shape = [66000, 2, 3];
    const data = randn(prod(shape), 40);
    const x = toGpu(data, shape);
    const y = ops.permute(x, [0, 2, 1]);
    expectClose(await y.read(), permuteRef(data, shape, [0, 2, 1]), EXACT, "permute");
    const t = ops.permute(x, [2, 1, 0]); // inner dim 66000 along x
    expectClose(await t.read(), permuteRef(data, shape, [2, 1, 0]), EXACT, "transpose");
    for (const v of [x, y, t]) v.dispose();
  });
  test("a bad permutation is an error naming the op and shape", () => {
    const x = toGpu(randn(6, 3), [2, 3]);
    expect(() => ops.permute(x, [0, 0])).toThrow(/permute.*\[2,3\]/);
    expect(() => ops.permute(x, [0])).toThrow(/permute/);
    x.dispose();
  });
});

describe("slice / split / chunk", () => {
  const cases: [number[], number, number, number][] = [
    [[10], 0, 2, 7],
    [[4, 6], 1, 1, 5],
    [[4, 6], 0, 3, 4],
    [[3, 5, 7], 2, 0, 3],
    [[3, 5, 7], 1, -3, -1],
    [[2, 1, 9], 2, 4, 9],
  ];
  for (const [shape, axis, start, end] of cases) {
    test(`slice ${JSON.stringify(shape)} axis ${axis} [${start}, ${end})`, async () => {
      const n = shape[axis];
      const s = start < 0 ? start + n : start;
      const e = end < 0 ? end + n : end;
      await gradCheck({
        label: "slice",
        inputs: [{ data: randn(prod(shape), 4), shape }],
        gpuFn: ([x]) => ops.slice(x, axis, start, end),
        refFn: ([x]) => sliceRef(x, shape, axis, s, e),
        fwd: EXACT,
        bwd: FD,
      });
    });
  }
  test("split by size and by sections, chunk with a ragged end", async () => {
    const shape = [3, 10, 2];
    const x = toGpu(randn(60, 5), shape);
    const data = Float64Array.from(await x.read());
    const check = async (pieces: Tensor[], bounds: number[]) => {
      expect(pieces.length).toBe(bounds.length - 1);
      for (let k = 0; k < pieces.length; k++) {
        expectClose(await pieces[k].read(), sliceRef(data, shape, 1, bounds[k], bounds[k + 1]), EXACT, `piece ${k}`);
      }
      for (const p of pieces) p.dispose();
    };
    await check(ops.split(x, 4, 1), [0, 4, 8, 10]);
    await check(ops.split(x, [1, 6, 3], 1), [0, 1, 7, 10]);
    await check(ops.chunk(x, 3, 1), [0, 4, 8, 10]);
    await check(ops.chunk(x, 2, -2), [0, 5, 10]);
    expect(() => ops.split(x, [1, 2], 1)).toThrow(/split/);
    x.dispose();
  });
  test("chunk backward: pieces used in another order sum back into the input gradient", async () => {
    const shape = [2, 9];
    await gradCheck({
      label: "chunk+concat",
      inputs: [{ data: randn(18, 6), shape }],
      gpuFn: ([x]) => {
        const [a, b, c] = ops.chunk(x, 3, 1);
        return ops.concat([c, a, b, a], 1); // `a` twice: its gradient is a sum
      },
      refFn: ([x]) => {
        const piece = (k: number) => sliceRef(x, shape, 1, 3 * k, 3 * k + 3);
        return concatRef([piece(2), piece(0), piece(1), piece(0)], [[2, 3], [2, 3], [2, 3], [2, 3]], 1);
      },
      fwd: EXACT,
      bwd: FD,
    });
  });
});

describe("kernel paths: buffer copies, vec4 runs, 32-bit elements", () => {
  // [20, 24]: more rows than the buffer-copy path takes; runs of 8 at 4-aligned offsets move as vec4.
  const shape = [20, 24];
  const data = randn(480, 50);
  const piece = (x: Float64Array, a: number, b: number) => sliceRef(x, shape, 1, a, b);
  for (const [a, b, what] of [[4, 12, "vec4"], [2, 10, "misaligned"], [0, 24, "whole"]] as const) {
    test(`slice [${a}, ${b}) of the last axis (${what})`, async () => {
      await gradCheck({
        label: "slice",
        inputs: [{ data, shape }],
        gpuFn: ([x]) => ops.slice(x, 1, a, b),
        refFn: ([x]) => piece(x, a, b),
        fwd: EXACT,
        bwd: FD,
      });
    });
  }
  test("chunk into vec4 runs and concat them back in another order", async () => {
    await gradCheck({
      label: "chunk+concat vec4",
      inputs: [{ data, shape }],
      gpuFn: ([x]) => {
        const [p0, p1, p2] = ops.chunk(x, 3, 1); // [20, 8] each
        return ops.concat([p2, p0, p1], 1);
      },
      refFn: ([x]) => concatRef([piece(x, 16, 24), piece(x, 0, 8), piece(x, 8, 16)], [[20, 8], [20, 8], [20, 8]], 1),
      fwd: EXACT,
      bwd: FD,
    });
  });
});

describe("concat / stack", () => {
  const cases: [number[][], number][] = [
    [[[5], [3], [1]], 0],
    [[[2, 3], [2, 4]], 1],
    [[[1, 3, 2], [4, 3, 2], [2, 3, 2]], 0],
    [[[2, 3, 1], [2, 3, 5]], -1],
    [[[2, 2, 3], [2, 1, 3], [2, 3, 3]], 1],
  ];
  for (const [shapes, axis] of cases) {
    test(`concat ${JSON.stringify(shapes)} axis ${axis}`, async () => {
      const ax = axis < 0 ? axis + shapes[0].length : axis;
      await gradCheck({
        label: "concat",
        inputs: shapes.map((shape, k) => ({ data: randn(prod(shape), 10 + k), shape })),
        gpuFn: (xs) => ops.concat(xs, axis),
        refFn: (xs) => concatRef(xs, shapes, ax),
        fwd: EXACT,
        bwd: FD,
      });
    });
  }
  test("concat with a frozen input gives it no gradient", async () => {
    const a = toGpu(randn(6, 11), [2, 3]).requireGrad();
    const b = toGpu(randn(4, 12), [2, 2]); // frozen
    const y = ops.concat([a, b], 1);
    const G = randn(10, 13);
    const g = toGpu(G, [2, 5]);
    backward(y, g);
    expect(b.grad).toBeNull();
    expectClose(await a.grad!.read(), sliceRef(G, [2, 5], 1, 0, 3), EXACT, "grad a");
    for (const t of [a, b, y, g]) t.dispose();
    clearTape();
  });
  test("stack adds a new axis", async () => {
    const shape = [3, 2];
    await gradCheck({
      label: "stack",
      inputs: [0, 1, 2].map((k) => ({ data: randn(6, 20 + k), shape })),
      gpuFn: (xs) => ops.stack(xs, 1),
      refFn: (xs) => concatRef(xs, [[3, 1, 2], [3, 1, 2], [3, 1, 2]], 1),
      fwd: EXACT,
      bwd: FD,
    });
  });
  test("mismatched shapes are an error naming both shapes", () => {
    const a = toGpu(randn(6, 1), [2, 3]);
    const b = toGpu(randn(6, 1), [3, 2]);
    expect(() => ops.concat([a, b], 1)).toThrow(/concat: \[3,2\].*\[2,3\]/);
    a.dispose();
    b.dispose();
  });
});

describe("other dtypes", () => {
  test("i32 permute, slice and concat copy exactly", async () => {
    const ids = Int32Array.from({ length: 24 }, (_, i) => (i * 7919) % 49408 - 100);
    const x = Tensor.from(ids, [2, 3, 4], "i32");
    const ref = Float64Array.from(ids);
    const p = ops.permute(x, [2, 0, 1]);
    expect(p.dtype).toBe("i32");
    expect(Array.from(await p.read())).toEqual(Array.from(permuteRef(ref, [2, 3, 4], [2, 0, 1])));
    const s = ops.slice(x, 2, 1, 3);
    expect(Array.from(await s.read())).toEqual(Array.from(sliceRef(ref, [2, 3, 4], 2, 1, 3)));
    const c = ops.concat([x, x], 1);
    expect(Array.from(await c.read())).toEqual(Array.from(concatRef([ref, ref], [[2, 3, 4], [2, 3, 4]], 1)));
    for (const t of [x, p, s, c]) t.dispose();
  });
  // Adapters with shader-f16 copy halves natively and can be forced onto the packed path (two halves
  // per u32 word, atomics on the destination word) that adapters without the feature always take.
  for (const packed of [false, true]) {
    test(`f16 permute, concat and odd-length slices copy exactly (${packed ? "packed u32 words" : "adapter's own path"})`, async () => {
      forcePackedF16Copies(packed);
      try {
        const data = randn(3 * 5, 30); // f16 rounding happens on upload; the copies must keep the bits
        const x = Tensor.from(Float32Array.from(data), [3, 5], "f16");
        const xv = Float64Array.from(await x.read());
        const p = ops.permute(x, [1, 0]);
        expect(p.dtype).toBe("f16");
        expectClose(await p.read(), permuteRef(xv, [3, 5], [1, 0]), EXACT, "f16 permute");
        const s = ops.slice(x, 0, 1, 2); // 5 halves starting at an odd element: not a 4-byte copy
        expectClose(await s.read(), sliceRef(xv, [3, 5], 0, 1, 2), EXACT, "f16 slice");
        const odd = ops.slice(x, 1, 1, 4); // [3, 3]: a strided copy with odd offsets and row lengths
        expectClose(await odd.read(), sliceRef(xv, [3, 5], 1, 1, 4), EXACT, "f16 strided slice");
        const c = ops.concat([odd, x], 1); // [3, 8]: neighbouring halves written by different invocations
        expectClose(await c.read(), concatRef([sliceRef(xv, [3, 5], 1, 1, 4), xv], [[3, 3], [3, 5]], 1), EXACT, "f16 concat");
        for (const t of [x, p, s, odd, c]) t.dispose();
      } finally {
        forcePackedF16Copies(false);
      }
    });
  }
});

describe("tensors over the storage binding limit", () => {
  test("concat and slice along the leading axis of a 160 MB tensor", async () => {
    const g = gpu();
    const rows = Math.ceil((g.maxBinding * 0.6) / (4 * 1024)); // each half is 60% of the limit
    const a = ops.full([rows, 1024], 1.5);
    const b = ops.full([rows, 1024], -2.25);
    const big = ops.concat([a, b], 0); // [2·rows, 1024], over the limit
    expect(big.byteLength).toBeGreaterThan(g.maxBinding);
    const tail = ops.slice(big, 0, rows - 1, rows + 1); // one row of each half
    const v = await tail.read();
    expect(v.length).toBe(2048);
    for (let i = 0; i < 1024; i++) if (v[i] !== 1.5 || v[1024 + i] !== -2.25) throw new Error(`element ${i} wrong`);
    expect(() => ops.permute(big, [1, 0])).toThrow(/binding limit/);
    for (const t of [a, b, big, tail]) t.dispose();
    g.pool.trim();
  });
});
