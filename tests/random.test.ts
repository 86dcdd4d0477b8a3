import { describe, expect, test } from "bun:test";
import * as ops from "../src/tensor/ops/index.ts";
import { gpu } from "../src/gpu/device.ts";
import { cosSinPi, hostRandom, lnF32, mulhi32, philox4x32 } from "../src/tensor/philox.ts";
import { expectClose, rng, useGpu } from "./helpers.ts";
import { erf } from "./ref/elementwise.ts";

useGpu();

const u32 = (a: ArrayLike<number>) => Array.from(a, (v) => v >>> 0);

describe("host Philox4x32-10", () => {
  test("known-answer vectors of Random123 (tests/kat_vectors)", () => {
    expect(philox4x32([0, 0, 0, 0], [0, 0])).toEqual([0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]);
    const ff = 0xffffffff;
    expect(philox4x32([ff, ff, ff, ff], [ff, ff])).toEqual([0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]);
    expect(philox4x32([0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344], [0xa4093822, 0x299f31d0])).toEqual([
      0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1,
    ]);
  });
  test("mulhi32 matches a bigint product", () => {
    const vals = [0, 1, 0xffff, 0x10000, 0xd2511f53, 0xcd9e8d57, 0xffffffff, 0x80000000, 0x12345678];
    for (const a of vals) for (const b of vals) expect(mulhi32(a, b)).toBe(Number((BigInt(a) * BigInt(b)) >> 32n));
  });
});

describe("GPU generator vs the host twin", () => {
  const cases: [number | bigint, number | bigint, number][] = [
    [0, 0, 1],
    [42, 0, 1001],
    [42, 3, 257],
    [2 ** 40 + 7, 1, 66],
    [-1, 5, 9],
    [123456789012345678n, 2n ** 40n + 2n, 130],
    // Blocks cross 2^32: the counter's high word must carry.
    [9, (2 ** 32 - 2) * 4 + 1, 4099],
  ];
  for (const [seed, offset, n] of cases) {
    test(`seed ${seed} offset ${offset} n ${n}: bits and uniforms bit-exact, normals to an ulp`, async () => {
      const bits = ops.randomBits([n], seed, offset);
      expect(bits.dtype).toBe("i32");
      expect(u32(await bits.read())).toEqual(u32(hostRandom("bits", n, seed, offset)));
      const uni = ops.rand([n], seed, offset);
      expectClose(await uni.read(), hostRandom("uniform", n, seed, offset), { atol: 0, rtol: 0 }, "uniform");
      const nor = ops.randn([n], seed, offset);
      // The shader's ln/sin/cos are our own polynomials of + - * /, mirrored on the host: equal bits on
      // lavapipe; a device that fuses multiply-adds or divides approximately may differ by an ulp or two.
      expectClose(await nor.read(), hostRandom("normal", n, seed, offset), { atol: 1e-7, rtol: 5e-7 }, "normal");
      for (const t of [bits, uni, nor]) t.dispose();
    });
  }
  test("shape does not matter, only the flat index", async () => {
    const a = ops.randn([3, 5, 7], 11);
    const b = ops.randn([105], 11);
    expect(Array.from(await a.read())).toEqual(Array.from(await b.read()));
    a.dispose();
    b.dispose();
  });
  test("a slice of a larger draw equals a draw at that offset", async () => {
    const big = ops.randn([4, 250], 77);
    const part = ops.slice(ops.reshape(big, [1000]), 0, 137, 637);
    const direct = ops.randn([500], 77, 137);
    expect(Array.from(await part.read())).toEqual(Array.from(await direct.read()));
    for (const t of [big, part, direct]) t.dispose();
  });
  test("different seeds and offsets give different draws", async () => {
    const a = await ops.randn([1000], 1).read();
    const b = await ops.randn([1000], 2).read();
    const c = await ops.randn([1000], 1, 1000).read();
    let same = 0;
    for (let i = 0; i < 1000; i++) same += Number(a[i] === b[i]) + Number(a[i] === c[i]);
    expect(same).toBe(0);
  });
  test("a draw over the storage binding limit runs in windows and continues the stream", async () => {
    const g = gpu();
    const n = g.maxBinding / 4 + 4099; // one window plus a partial one
    const t = ops.randomBits([n], 5, 3);
    const tailStart = g.maxBinding / 4 - 2000;
    const tail = new Uint32Array(await g.read(t.buffer, tailStart * 4, (n - tailStart) * 4));
    expect(Array.from(tail)).toEqual(u32(hostRandom("bits", n - tailStart, 5, 3 + tailStart)));
    t.dispose();
    g.pool.trim();
  });
});

describe("distribution of 1e6 samples", () => {
  const N = 1_000_000;
  test("normals: moments, tail fractions and Kolmogorov-Smirnov", async () => {
    const x = await ops.randn([N], 2024).read();
    let m1 = 0;
    for (const v of x) m1 += v;
    m1 /= N;
    let m2 = 0, m3 = 0, m4 = 0;
    for (const v of x) {
      const d = v - m1;
      m2 += d * d;
      m3 += d * d * d;
      m4 += d * d * d * d;
    }
    m2 /= N;
    const skew = m3 / N / m2 ** 1.5;
    const kurt = m4 / N / (m2 * m2);
    // Standard errors at N = 1e6: mean 0.001, std 0.0007, skew 0.0025, kurtosis 0.005; allow ~5 sigma.
    expect(Math.abs(m1)).toBeLessThan(0.005);
    expect(Math.abs(Math.sqrt(m2) - 1)).toBeLessThan(0.0035);
    expect(Math.abs(skew)).toBeLessThan(0.0125);
    expect(Math.abs(kurt - 3)).toBeLessThan(0.025);
    const sorted = Float64Array.from(x).sort();
    let ks = 0;
    for (let i = 0; i < N; i += 1) {
      const cdf = 0.5 * (1 + erf(sorted[i] / Math.SQRT2));
      ks = Math.max(ks, Math.abs(cdf - i / N), Math.abs(cdf - (i + 1) / N));
    }
    // KS critical value at alpha = 0.001 is 1.95 / sqrt(N).
    expect(ks).toBeLessThan(1.95 / Math.sqrt(N));
    let beyond3 = 0;
    for (const v of x) if (Math.abs(v) > 3) beyond3++;
    expect(Math.abs(beyond3 / N - 0.0026998)).toBeLessThan(0.0003);
  });
  test("uniforms: mean, variance and a 64-bin chi-square", async () => {
    const x = await ops.rand([N], 99, 12345).read();
    let s = 0, s2 = 0;
    const bins = new Array(64).fill(0);
    let outside = 0;
    for (const v of x) {
      if (!(v >= 0 && v < 1)) outside++;
      s += v;
      s2 += v * v;
      bins[Math.floor(v * 64)]++;
    }
    expect(outside).toBe(0);
    expect(Math.abs(s / N - 0.5)).toBeLessThan(0.0015);
    expect(Math.abs(s2 / N - (s / N) ** 2 - 1 / 12)).toBeLessThan(0.0005);
    let chi = 0;
    for (const b of bins) chi += (b - N / 64) ** 2 / (N / 64);
    expect(chi).toBeLessThan(110); // chi-square, 63 dof: p = 0.0002
  });
});

describe("host twin accuracy (the generator's own ln / cos / sin)", () => {
  test("ln within 4 ulp of Math.log, cos/sin(pi v) within 2e-7 of Math.cos/sin", () => {
    const r = rng(8);
    let lnRel = 0, trigAbs = 0;
    for (let i = 0; i < 200_000; i++) {
      const u = (Math.floor(r() * 2 ** 24) + 1) * 2 ** -24;
      if (u < 1) lnRel = Math.max(lnRel, Math.abs(lnF32(u) - Math.log(u)) / Math.abs(Math.log(u)));
      const v = Math.floor(r() * 2 ** 24) * 2 ** -23 - 1;
      const [c, s] = cosSinPi(v);
      trigAbs = Math.max(trigAbs, Math.abs(c - Math.cos(Math.PI * v)), Math.abs(s - Math.sin(Math.PI * v)));
    }
    expect(lnRel).toBeLessThan(4 * 2 ** -24);
    expect(trigAbs).toBeLessThan(2e-7);
  });
});
