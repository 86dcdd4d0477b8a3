import { describe, expect, test } from "bun:test";
import * as ops from "../src/tensor/ops/index.ts";
import { Tensor, backward, clearTape } from "../src/tensor/index.ts";
import { gpu } from "../src/gpu/device.ts";
import { f16BitsToF32, f32ToF16Bits } from "../src/tensor/f16.ts";
import { hostRandom } from "../src/tensor/philox.ts";
import { expectClose, randn, rng, toGpu, useGpu } from "./helpers.ts";

useGpu();

const f32Bits = (v: number) => new Uint32Array(Float32Array.of(v).buffer)[0];
const bitsToF32 = (b: number) => new Float32Array(Uint32Array.of(b).buffer)[0];

async function rawU16(t: Tensor): Promise<Uint16Array> {
  return new Uint16Array(await gpu().read(t.buffer, 0, t.size * 2));
}

describe("f32 -> f16 rounds exactly as the host (round to nearest even)", () => {
  test("special values, ties, overflow and subnormals", async () => {
    const vals = [
      0, -0, 1, -1, 65504, 65519.99, 65520, -65520, 1e6, Infinity, -Infinity, NaN, -NaN,
      2 ** -14, 2 ** -14 * (1 - 2 ** -11), 2 ** -24, 2 ** -25, 2 ** -25 * 1.5, 3 * 2 ** -26, 2 ** -26, 1e-40, -1e-45,
      1 + 2 ** -11, 1 + 3 * 2 ** -11, 1 + 2 ** -11 + 2 ** -20, 2047.5, 2048 + 1, 2048 + 3, 0.1, -0.3333,
    ];
    const x = Tensor.from(Float32Array.from(vals), [vals.length]);
    const y = ops.cast(x, "f16");
    expect(y.dtype).toBe("f16");
    expect(Array.from(await rawU16(y))).toEqual(vals.map(f32ToF16Bits));
    x.dispose();
    y.dispose();
  });
  test("200k random f32 bit patterns (every exponent), odd length", async () => {
    const r = rng(17);
    const n = 200_001;
    const bits = new Uint32Array(n);
    for (let i = 0; i < n; i++) bits[i] = Math.floor(r() * 2 ** 32) >>> 0;
    const x = Tensor.from(new Float32Array(bits.buffer), [n]);
    const y = ops.cast(x, "f16");
    const got = await rawU16(y);
    const f32 = new Float32Array(bits.buffer);
    // JS numbers cannot carry a NaN's sign, so NaNs are checked against the rule itself: the
    // canonical quiet NaN 0x7e00 with the input's sign.
    const want = (i: number) => (Number.isNaN(f32[i]) ? ((bits[i] >>> 16) & 0x8000) | 0x7e00 : f32ToF16Bits(f32[i]));
    let bad = -1;
    for (let i = 0; i < n && bad < 0; i++) if (got[i] !== want(i)) bad = i;
    if (bad >= 0) throw new Error(`bits 0x${bits[bad].toString(16)}: got 0x${got[bad].toString(16)}, want 0x${want(bad).toString(16)}`);
    x.dispose();
    y.dispose();
  });
});

describe("f16 -> f32 is exact", () => {
  test("all 65536 half bit patterns", async () => {
    const halves = Uint16Array.from({ length: 65536 }, (_, i) => i);
    const x = Tensor.from(halves, [65536], "f16");
    const y = ops.cast(x, "f32");
    expect(y.dtype).toBe("f32");
    const got = new Uint32Array(await gpu().read(y.buffer, 0, 65536 * 4));
    for (let h = 0; h < 65536; h++) {
      const want = f16BitsToF32(h);
      const ok = Number.isNaN(want) ? Number.isNaN(bitsToF32(got[h])) && got[h] >>> 31 === h >>> 15 : got[h] === f32Bits(want);
      if (!ok) throw new Error(`half 0x${h.toString(16)}: got bits 0x${got[h].toString(16)}, want ${want}`);
    }
    // And back again: every non-NaN half survives the round trip.
    const back = await rawU16(ops.cast(y, "f16"));
    for (let h = 0; h < 65536; h++) if (!Number.isNaN(f16BitsToF32(h)) && back[h] !== h) throw new Error(`round trip of 0x${h.toString(16)} gave 0x${back[h].toString(16)}`);
    x.dispose();
    y.dispose();
  });
});

describe("autograd and large tensors", () => {
  test("the gradient is cast back to the input's dtype", async () => {
    const data = randn(9, 3);
    const x = toGpu(data, [3, 3]).requireGrad();
    const y = ops.cast(ops.cast(x, "f16"), "f32");
    expectClose(await y.read(), Array.from(data, (v) => f16BitsToF32(f32ToF16Bits(v))), { atol: 0 }, "forward");
    const G = randn(9, 4);
    backward(y, toGpu(G, [3, 3]));
    // d(cast)/dx is the identity; the f16 hop rounds the gradient on its way back.
    expectClose(await x.grad!.read(), Array.from(G, (v) => f16BitsToF32(f32ToF16Bits(v))), { atol: 0 }, "grad");
    expect(() => ops.cast(Tensor.from([1], [1], "i32"), "f32")).toThrow(/cast: only f32 <-> f16, got i32 \[1\]/);
    x.dispose();
    clearTape();
  });
  test("a tensor over the storage binding limit converts window by window", async () => {
    const g = gpu();
    const n = g.maxBinding / 4 + 1001;
    const x = ops.randn([n], 9);
    const y = ops.cast(x, "f16");
    const start = n - 3001; // odd or even with the adapter's limit: reads need not be word-aligned
    const tail = n - start;
    const got = new Uint16Array(await g.read(y.buffer, start * 2, tail * 2));
    const want = Array.from(hostRandom("normal", tail, 9, start), f32ToF16Bits);
    expect(Array.from(got)).toEqual(want);
    x.dispose();
    // An f16 range at an odd element offset: read() widens it to whole words and cuts on the host.
    for (const [s0, len] of [[1, 3], [5, 2], [start + 1, 7]]) {
      const part = new Uint16Array(await g.read(y.buffer, s0 * 2, len * 2));
      expect(Array.from(part)).toEqual(Array.from(hostRandom("normal", len, 9, s0), f32ToF16Bits));
    }
    x.dispose();
    y.dispose();
    g.pool.trim();
  });
});
