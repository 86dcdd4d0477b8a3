// Mask binarisation, nearest resizing and exact area averaging, on hand-built masks whose answers
// are computed by hand in the comments.
import { describe, expect, test } from "bun:test";
import { Jimp } from "jimp";
import {
  areaAverage,
  binarizeMask,
  decodeMask,
  maskRule,
  maskToAttentionMap,
  pilLuminance,
  resizeMaskTo,
  type Mask,
  type RgbaImage,
} from "../src/io/mask.ts";

function rgba(width: number, height: number, pixels: number[][]): RgbaImage {
  return { width, height, data: new Uint8Array(pixels.flat()) };
}

function mask(width: number, height: number, values: number[]): Mask {
  return { width, height, data: new Float32Array(values) };
}

function close(got: Float32Array, want: number[], digits = 6): void {
  expect(got.length).toBe(want.length);
  for (let i = 0; i < want.length; i++) expect(got[i]!).toBeCloseTo(want[i]!, digits);
}

describe("binarizeMask", () => {
  test("varying alpha: the transparent pixels are the edit region, colours ignored", () => {
    const img = rgba(3, 2, [
      [255, 255, 255, 255],
      [0, 0, 0, 0], // transparent → edit
      [10, 200, 30, 128], // half transparent → kept
      [255, 255, 255, 0], // transparent white → edit
      [0, 0, 0, 255],
      [90, 90, 90, 1],
    ]);
    expect(maskRule(img)).toBe("alpha");
    expect(Array.from(binarizeMask(img).data)).toEqual([0, 1, 0, 1, 0, 0]);
  });

  test("constant alpha: luminance > 127 (PIL L weights) is the edit region", () => {
    // L values: 128, 127, red 76, green 150, blue 29, white 255.
    const px = [
      [128, 128, 128],
      [127, 127, 127],
      [255, 0, 0],
      [0, 255, 0],
      [0, 0, 255],
      [255, 255, 255],
    ];
    expect(px.map(([r, g, b]) => pilLuminance(r!, g!, b!))).toEqual([128, 127, 76, 150, 29, 255]);
    for (const alpha of [255, 0]) {
      const img = rgba(2, 3, px.map((p) => [...p, alpha]));
      expect(maskRule(img)).toBe("luminance");
      expect(Array.from(binarizeMask(img).data)).toEqual([1, 0, 0, 1, 0, 1]);
    }
  });

  test("rejects a buffer of the wrong length", () => {
    expect(() => binarizeMask({ width: 2, height: 2, data: new Uint8Array(12) })).toThrow(/RGBA/);
  });

  test("decodes PNG bytes: RGBA with holes, and opaque grey", async () => {
    const holes = new Jimp({ width: 4, height: 2, color: 0xffffffff });
    holes.setPixelColor(0x00000000, 1, 0);
    holes.setPixelColor(0x12345600, 3, 1);
    const m1 = await decodeMask(new Uint8Array(await holes.getBuffer("image/png")));
    expect([m1.width, m1.height]).toEqual([4, 2]);
    expect(Array.from(m1.data)).toEqual([0, 1, 0, 0, 0, 0, 0, 1]);

    const grey = new Jimp({ width: 2, height: 1, color: 0x000000ff });
    grey.setPixelColor(0xc8c8c8ff, 1, 0);
    const m2 = await decodeMask(new Uint8Array(await grey.getBuffer("image/png")));
    expect(Array.from(m2.data)).toEqual([0, 1]);
  });
});

describe("resizeMaskTo (nearest)", () => {
  test("2x2 → 4x4 replicates each pixel into a 2x2 block", () => {
    const out = resizeMaskTo(mask(2, 2, [1, 0, 0, 1]), 4, 4);
    expect(Array.from(out.data)).toEqual([1, 1, 0, 0, 1, 1, 0, 0, 0, 0, 1, 1, 0, 0, 1, 1]);
  });

  test("4x4 → 2x2 takes pixels (1,1), (3,1), (1,3), (3,3)", () => {
    const v = Array.from({ length: 16 }, (_, i) => i);
    expect(Array.from(resizeMaskTo(mask(4, 4, v), 2, 2).data)).toEqual([5, 7, 13, 15]);
  });

  test("3x1 → 2x1: centres 0.75 and 2.25 → pixels 0 and 2", () => {
    expect(Array.from(resizeMaskTo(mask(3, 1, [7, 8, 9]), 2, 1).data)).toEqual([7, 9]);
  });
});

describe("areaAverage", () => {
  test("integer ratio: 4x4 → 2x2 block means", () => {
    const m = mask(4, 4, [1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 1, 1, 0, 0, 1, 1]);
    close(areaAverage(m, 2, 2).data, [0.75, 0, 0, 1]);
  });

  test("3x3 → 2x2: the centre pixel spreads 1/4 of itself into each 1.5x1.5 cell", () => {
    const m = mask(3, 3, [0, 0, 0, 0, 1, 0, 0, 0, 0]);
    close(areaAverage(m, 2, 2).data, [0.25 / 2.25, 0.25 / 2.25, 0.25 / 2.25, 0.25 / 2.25]);
    const corner = mask(3, 3, [1, 0, 0, 0, 0, 0, 0, 0, 0]);
    close(areaAverage(corner, 2, 2).data, [1 / 2.25, 0, 0, 0]);
  });

  test("5x1 → 2x1: cells [0, 2.5) and [2.5, 5) weight pixel 2 by one half each", () => {
    // [1, 0, 1, 1, 0]: (1 + 0 + 0.5) / 2.5 = 0.6 and (0.5 + 1 + 0) / 2.5 = 0.6
    close(areaAverage(mask(5, 1, [1, 0, 1, 1, 0]), 2, 1).data, [0.6, 0.6]);
    // [0, 0, 1, 0, 0]: 0.5 / 2.5 = 0.2 each
    close(areaAverage(mask(5, 1, [0, 0, 1, 0, 0]), 2, 1).data, [0.2, 0.2]);
  });

  test("7x5 → 3x2 keeps the mean (partial pixels both ways)", () => {
    const v = [
      1, 0, 0, 1, 1, 0, 1,
      0, 1, 1, 0, 0, 1, 0,
      1, 1, 1, 1, 0, 0, 0,
      0, 0, 1, 0, 1, 1, 1,
      1, 0, 0, 0, 0, 1, 0,
    ];
    const out = areaAverage(mask(7, 5, v), 3, 2);
    const meanIn = v.reduce((a, b) => a + b, 0) / v.length;
    const meanOut = out.data.reduce((a, b) => a + b, 0) / out.data.length;
    expect(meanOut).toBeCloseTo(meanIn, 6);
    // Cell (0,0) covers x in [0, 7/3), y in [0, 2.5): rows 0,1 fully and half of row 2;
    // columns 0,1 fully and 1/3 of column 2.
    const want00 =
      (1 + 0 + 0 / 3 + (0 + 1 + 1 / 3) + 0.5 * (1 + 1 + 1 / 3)) / ((7 / 3) * 2.5);
    expect(out.data[0]!).toBeCloseTo(want00, 6);
  });

  test("upsampling 2x1 → 4x1 repeats values; all-ones stays all-ones", () => {
    close(areaAverage(mask(2, 1, [1, 0]), 4, 1).data, [1, 1, 0, 0]);
    close(areaAverage(mask(13, 11, new Array(143).fill(1)), 4, 3).data, new Array(12).fill(1));
  });

  test("maskToAttentionMap: binarise, resize to the image, area-average to the map", () => {
    // 2x2 mask image, top-left pixel transparent → resized to 8x8 → 4x4 map: top-left 2x2 cells are 1.
    const img = rgba(2, 2, [
      [0, 0, 0, 0],
      [0, 0, 0, 255],
      [0, 0, 0, 255],
      [0, 0, 0, 255],
    ]);
    const map = maskToAttentionMap(img, 8, 8, 4, 4);
    close(map.data, [1, 1, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    // To a 3x3 map: cells cover 8/3 px; the 4-px edit square covers cell (0,0) fully and
    // 4/3 of 8/3 of cells (0,1), (1,0) → 0.5, and (1,1) → 0.25.
    close(maskToAttentionMap(img, 8, 8, 3, 3).data, [1, 0.5, 0, 0.5, 0.25, 0, 0, 0, 0]);
  });
});
