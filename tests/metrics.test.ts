// Evaluation metrics against scikit-image 0.19 / PIL reference values
// (tests/fixtures/gen/ssim.py → tests/fixtures/metrics_*.{json,bin}) and hand-computable cases.
import { describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import {
  gaussianKernel1d,
  l1,
  l2,
  pairMetrics,
  psnr,
  resizeBilinear,
  ssim,
  type PlanarRgb,
} from "../src/eval/metrics.ts";
import { rng } from "./helpers.ts";

const fixtures = new URL("./fixtures/", import.meta.url);
const expected = JSON.parse(readFileSync(new URL("metrics_expected.json", fixtures), "utf8"));
const raw = readFileSync(new URL("metrics_images.bin", fixtures));
const floats = new Float32Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength));

function img(offset: number, width: number, height: number): PlanarRgb {
  return { width, height, data: floats.slice(offset, offset + 3 * width * height) };
}

function randomImage(w: number, h: number, seed: number): PlanarRgb {
  const r = rng(seed);
  const data = new Float32Array(3 * w * h);
  for (let i = 0; i < data.length; i++) data[i] = r();
  return { width: w, height: h, data };
}

describe("metrics vs scikit-image", () => {
  test("fixture is complete", () => {
    expect(floats.length).toBe(expected.floats);
    expect(expected.cases.length).toBeGreaterThanOrEqual(5);
  });

  for (const c of expected.cases) {
    test(c.name, () => {
      const a = img(c.a, c.width, c.height);
      const b = img(c.b, c.width, c.height);
      expect(Math.abs(l1(a, b) - c.l1)).toBeLessThanOrEqual(1e-6);
      expect(Math.abs(l2(a, b) - c.l2)).toBeLessThanOrEqual(1e-6);
      if (c.psnr === null) expect(psnr(a, b)).toBe(Infinity);
      else expect(Math.abs(psnr(a, b) - c.psnr)).toBeLessThanOrEqual(1e-6);
      expect(Math.abs(ssim(a, b) - c.ssim)).toBeLessThanOrEqual(1e-6);
    });
  }

  for (const c of expected.resize) {
    test(`PIL bilinear resize ${c.name}`, () => {
      const out = resizeBilinear(img(c.src, c.width, c.height), c.outWidth, c.outHeight);
      const ref = img(c.out, c.outWidth, c.outHeight);
      let worst = 0;
      for (let i = 0; i < ref.data.length; i++) worst = Math.max(worst, Math.abs(out.data[i]! - ref.data[i]!));
      expect(worst).toBeLessThanOrEqual(2e-6);
    });
  }

  test("pairMetrics resizes the generated image to the target's size", () => {
    const p = expected.pair;
    const m = pairMetrics(img(p.gen, p.genWidth, p.genHeight), img(p.target, p.width, p.height));
    expect(Math.abs(m.l1 - p.l1)).toBeLessThanOrEqual(1e-6);
    expect(Math.abs(m.l2 - p.l2)).toBeLessThanOrEqual(1e-6);
    expect(Math.abs(m.psnr - p.psnr)).toBeLessThanOrEqual(1e-5);
    expect(Math.abs(m.ssim - p.ssim)).toBeLessThanOrEqual(1e-6);
  });
});

describe("metrics by hand", () => {
  test("Gaussian window: 11 taps at sigma 1.5, symmetric, sums to 1", () => {
    const k = gaussianKernel1d(1.5, 3.5);
    expect(k.length).toBe(11);
    let s = 0;
    for (const v of k) s += v;
    expect(s).toBeCloseTo(1, 14);
    expect(k[0]).toBeCloseTo(k[10]!, 15);
    expect(k[4]! / k[5]!).toBeCloseTo(Math.exp(-0.5 / 2.25), 14);
  });

  test("constant offset: L1, L2, PSNR known in closed form", () => {
    const a = randomImage(12, 12, 1);
    const b: PlanarRgb = { ...a, data: a.data.map((v) => v * 0.5 + 0.25) };
    const c: PlanarRgb = { ...b, data: b.data.map((v) => v + 0.125) };
    expect(l1(b, c)).toBeCloseTo(0.125, 6);
    expect(l2(b, c)).toBeCloseTo(0.015625, 6);
    expect(psnr(b, c)).toBeCloseTo(10 * Math.log10(64), 4);
  });

  test("SSIM of identical images is 1 and is symmetric", () => {
    const a = randomImage(20, 17, 2);
    const b = randomImage(20, 17, 3);
    expect(ssim(a, a)).toBeCloseTo(1, 12);
    expect(Math.abs(ssim(a, b) - ssim(b, a))).toBeLessThan(1e-12);
    expect(ssim(a, b)).toBeLessThan(0.2);
  });

  test("constant images: SSIM reduces to the luminance term", () => {
    // Constant images: every local variance is 0, so S = (2 μx μy + C1) / (μx² + μy² + C1).
    const w = 15;
    const a: PlanarRgb = { width: w, height: w, data: new Float32Array(3 * w * w).fill(0.5) };
    const b: PlanarRgb = { width: w, height: w, data: new Float32Array(3 * w * w).fill(0.25) };
    const c1 = 0.01 ** 2;
    const want = (2 * 0.5 * 0.25 + c1) / (0.25 + 0.0625 + c1);
    expect(ssim(a, b)).toBeCloseTo(want, 12);
  });

  test("rejects mismatched sizes and too-small images", () => {
    expect(() => l1(randomImage(4, 4, 1), randomImage(4, 5, 1))).toThrow(/sizes differ/);
    expect(() => ssim(randomImage(10, 20, 1), randomImage(10, 20, 2))).toThrow(/window/);
  });

  test("same-size resize is the identity; two unrelated 512x512 images have SSIM near 0", () => {
    const a = randomImage(512, 512, 4);
    const b = randomImage(512, 512, 5);
    expect(resizeBilinear(a, 512, 512).data).toEqual(a.data);
    const m = pairMetrics(a, b);
    expect(m.ssim).toBeGreaterThan(-0.1);
    expect(m.ssim).toBeLessThan(0.1);
  });
});
