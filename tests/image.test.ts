// Host image I/O: PNG round trips (grey, RGB, RGBA), a JPEG detected by content, bad files, the
// uint8 / [-1, 1] conversions of diffusers, and the three resize modes.
import { afterAll, describe, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { UserError } from "../src/errors.ts";
import {
  decodeImage, fromMinusOneOne, readImage, readImageRGBA, resize, toMinusOneOne, toUint8, writePng,
  type PlanarImage, type RgbImage,
} from "../src/io/image.ts";

const GOLDENS = fileURLToPath(new URL("../../shared/goldens/", import.meta.url));
const dir = mkdtempSync(join(tmpdir(), "rl4pix-img-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A test pattern whose values are exact multiples of 1/255. */
function pattern(width: number, height: number, channels: number): PlanarImage {
  const data = new Float32Array(channels * width * height);
  for (let c = 0; c < channels; c++) {
    for (let y = 0; y < height; y++) {
      for (let x = 0; x < width; x++) data[(c * height + y) * width + x] = ((x * 37 + y * 11 + c * 80) % 256) / 255;
    }
  }
  return { width, height, channels, data };
}

async function userError(fn: () => Promise<unknown>): Promise<string> {
  try {
    await fn();
  } catch (e) {
    expect(e).toBeInstanceOf(UserError);
    return (e as Error).message;
  }
  throw new Error("expected a UserError");
}

describe("PNG round trips", () => {
  test("RGB: exact values, no alpha, colour type 2, no temp files left", async () => {
    const img = pattern(13, 7, 3);
    const p = join(dir, "rgb.png");
    await writePng(p, img);
    expect(readFileSync(p)[25]).toBe(2); // IHDR colour type: RGB
    const back = await readImage(p);
    expect(back.width).toBe(13);
    expect(back.height).toBe(7);
    expect(back.channels).toBe(3);
    expect(back.alpha).toBeNull();
    expect(Array.from(back.data)).toEqual(Array.from(img.data));
    expect(readdirSync(dir).filter((f) => f.includes(".tmp"))).toEqual([]);
  });

  test("RGBA: alpha is returned separately and by readImageRGBA", async () => {
    const img = pattern(6, 5, 4);
    const p = join(dir, "rgba.png");
    await writePng(p, img);
    const rgb = await readImage(p);
    expect(Array.from(rgb.data)).toEqual(Array.from(img.data.subarray(0, 3 * 30)));
    expect(Array.from(rgb.alpha!)).toEqual(Array.from(img.data.subarray(3 * 30)));
    const rgba = await readImageRGBA(p);
    expect(rgba.channels).toBe(4);
    expect(rgba.hasAlpha).toBe(true);
    expect(Array.from(rgba.data)).toEqual(Array.from(img.data));
  });

  test("grey: one plane written, three equal planes read; RGBA view of an opaque file has A = 1", async () => {
    const img = pattern(4, 3, 1);
    const p = join(dir, "grey.png");
    await writePng(p, img);
    const back = await readImage(p);
    for (let c = 0; c < 3; c++) expect(Array.from(back.data.subarray(c * 12, (c + 1) * 12))).toEqual(Array.from(img.data));
    const rgba = await readImageRGBA(p);
    expect(rgba.hasAlpha).toBe(false);
    expect(Array.from(rgba.data.subarray(36))).toEqual(new Array(12).fill(1));
  });

  test("values outside [0, 1] are clamped when written", async () => {
    const p = join(dir, "clamp.png");
    await writePng(p, { width: 2, height: 1, channels: 1, data: Float32Array.of(-0.5, 1.5) });
    expect(Array.from((await readImage(p)).data.subarray(0, 2))).toEqual([0, 1]);
  });

  test("the golden pipeline input decodes", async () => {
    const img = await readImage(join(GOLDENS, "pipeline_input.png"));
    expect(img.width).toBeGreaterThan(0);
    expect(img.data.length).toBe(3 * img.width * img.height);
    expect(img.data.every((v) => v >= 0 && v <= 1)).toBe(true);
    const fromBytes = await decodeImage(readFileSync(join(GOLDENS, "pipeline_input.png")), "pipeline_input.png");
    expect(Array.from(fromBytes.data)).toEqual(Array.from(img.data));
  });
});

describe("JPEG and bad files", () => {
  test("a JPEG named .png is read by its content", async () => {
    const { Jimp } = await import("jimp");
    const jpeg = await new Jimp({ width: 16, height: 8, color: 0x3c8cdcff }).getBuffer("image/jpeg", { quality: 95 });
    const p = join(dir, "actually-a-jpeg.png");
    writeFileSync(p, jpeg);
    const img = await readImage(p);
    expect([img.width, img.height]).toEqual([16, 8]);
    expect(img.alpha).toBeNull();
    const expected = [0x3c, 0x8c, 0xdc];
    for (let c = 0; c < 3; c++) {
      for (const v of img.data.subarray(c * 128, (c + 1) * 128)) expect(Math.abs(v * 255 - expected[c])).toBeLessThanOrEqual(3);
    }
  });

  test("missing file, folder, text file, GIF, empty and truncated PNG", async () => {
    expect(await userError(() => readImage(join(dir, "nope.png")))).toBe(`${join(dir, "nope.png")}: file not found`);
    const sub = join(dir, "folder.png");
    mkdirSync(sub);
    expect(await userError(() => readImage(sub))).toContain("is a folder");
    const txt = join(dir, "notes.png");
    writeFileSync(txt, "hello, world");
    const msg = await userError(() => readImage(txt));
    expect(msg).toContain(txt);
    expect(msg).toContain("not an image (starts with bytes 68 65 6c 6c");
    const gif = join(dir, "anim.jpg");
    writeFileSync(gif, "GIF89a....");
    expect(await userError(() => readImage(gif))).toContain("a GIF image; expected a PNG or JPEG");
    const empty = join(dir, "empty.png");
    writeFileSync(empty, "");
    expect(await userError(() => readImage(empty))).toContain("an empty file");
    const whole = readFileSync(join(GOLDENS, "pipeline_input.png"));
    const cut = join(dir, "cut.png");
    writeFileSync(cut, whole.subarray(0, 200));
    const cutMsg = await userError(() => readImage(cut));
    expect(cutMsg).toContain(cut);
    expect(cutMsg).toContain("cannot decode PNG");
  });
});

describe("value conversions (diffusers' image processor)", () => {
  test("toUint8 clamps and rounds x * 255 half to even like numpy", () => {
    const x = Float32Array.of(0, 1, 0.5, -0.2, 1.3, 2.5 / 255, 3.5 / 255, 127.5 / 255, 0.0019607844, 0.998, NaN);
    // numpy: (np.clip(x, 0, 1) * np.float32(255)).round().astype(np.uint8), NaN -> 0 here
    expect(Array.from(toUint8(x))).toEqual([0, 255, 128, 0, 255, 2, 4, 128, 0, 254, 0]);
  });

  test("[-1, 1] scaling both ways", () => {
    expect(Array.from(toMinusOneOne(Float32Array.of(0, 1, 0.5, 0.25)))).toEqual([-1, 1, 0, -0.5]);
    expect(Array.from(fromMinusOneOne(Float32Array.of(-1, 1, 0, -1.5, 2, 0.25)))).toEqual([0, 1, 0.5, 0, 1, 0.625]);
  });

  test("every uint8 value survives u8 -> [0,1] -> [-1,1] -> [0,1] -> u8", () => {
    const u8 = Float32Array.from({ length: 256 }, (_, i) => i / 255);
    expect(Array.from(toUint8(fromMinusOneOne(toMinusOneOne(u8))))).toEqual(Array.from({ length: 256 }, (_, i) => i));
  });
});

describe("resize", () => {
  const row = (values: number[]): PlanarImage => ({ width: values.length, height: 1, channels: 1, data: Float32Array.from(values) });
  const close = (a: Float32Array, b: number[]) => {
    expect(a.length).toBe(b.length);
    a.forEach((v, i) => expect(Math.abs(v - b[i])).toBeLessThan(1e-6));
  };

  test("a constant image stays constant in every mode and size", () => {
    const flat: PlanarImage = { width: 9, height: 7, channels: 2, data: new Float32Array(126).fill(0.3) };
    for (const mode of ["bilinear", "area", "nearest"] as const) {
      for (const [w, h] of [[4, 3], [20, 11], [9, 7], [1, 1]]) {
        const r = resize(flat, w, h, mode);
        expect([r.width, r.height, r.channels]).toEqual([w, h, 2]);
        close(r.data, new Array(2 * w * h).fill(0.3));
      }
    }
  });

  test("bilinear enlarging uses half-pixel centres and clamps at the edges", () => {
    // output centres map to source positions -0.25, 0.25, 0.75, 1.25 (pixel centres at 0 and 1)
    close(resize(row([0, 1]), 4, 1, "bilinear").data, [0, 0.25, 0.75, 1]);
  });

  test("bilinear shrinking is antialiased like PIL (triangle filter widened by the factor)", () => {
    // 4 -> 2: output 0 is centred at 1.0 with support 2: weights 0.75, 0.75, 0.25 for pixels 0, 1, 2
    const a = [1, 2, 4, 8];
    close(resize(row(a), 2, 1, "bilinear").data, [(3 * a[0] + 3 * a[1] + a[2]) / 7, (a[1] + 3 * a[2] + 3 * a[3]) / 7]);
  });

  test("area averages exactly the covered source pixels", () => {
    const block: PlanarImage = { width: 4, height: 4, channels: 1, data: Float32Array.from({ length: 16 }, (_, i) => i) };
    close(resize(block, 2, 2, "area").data, [(0 + 1 + 4 + 5) / 4, (2 + 3 + 6 + 7) / 4, (8 + 9 + 12 + 13) / 4, (10 + 11 + 14 + 15) / 4]);
    // 3 -> 2: output 0 covers [0, 1.5), output 1 covers [1.5, 3)
    close(resize(row([3, 6, 12]), 2, 1, "area").data, [(3 + 0.5 * 6) / 1.5, (0.5 * 6 + 12) / 1.5]);
  });

  test("nearest picks the source pixel under each output centre", () => {
    close(resize(row([10, 11, 12, 13]), 2, 1, "nearest").data, [11, 13]);
    close(resize(row([10, 20]), 5, 1, "nearest").data, [10, 10, 20, 20, 20]);
  });

  test("an RGB image's alpha plane is resized with it", () => {
    const img: RgbImage = {
      width: 2, height: 2, channels: 3, data: new Float32Array(12).fill(0.5), alpha: Float32Array.of(0, 1, 0, 1),
    };
    const r = resize(img, 1, 1, "area");
    close(r.data, [0.5, 0.5, 0.5]);
    close(r.alpha!, [0.5]);
  });
});
