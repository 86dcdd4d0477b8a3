// Image sizes read from headers only (PNG IHDR, JPEG SOF), and the mask-shape rule.
import { describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Jimp } from "jimp";
import { imageHeaderOf, maskShapeProblem, readImageHeader } from "../src/io/image_header.ts";
import { UserError } from "../src/errors.ts";

async function encoded(width: number, height: number, mime: "image/png" | "image/jpeg"): Promise<Uint8Array> {
  return new Uint8Array(await new Jimp({ width, height, color: 0x336699ff }).getBuffer(mime));
}

/** A JPEG with a 100 KB APP1 (EXIF-like) segment, and another 200 KB one, before its frame header. */
function withBigMetadata(jpeg: Uint8Array): Uint8Array {
  const seg = (n: number) => {
    const s = new Uint8Array(n + 4);
    s.set([0xff, 0xe1, (n + 2) >> 8, (n + 2) & 0xff]);
    return s;
  };
  const parts = [jpeg.subarray(0, 2), seg(60_000), seg(65_000), seg(65_000), seg(65_000), jpeg.subarray(2)];
  const out = new Uint8Array(parts.reduce((a, p) => a + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

describe("imageHeaderOf / readImageHeader", () => {
  test("PNG and JPEG sizes, also behind 255 KB of JPEG metadata", async () => {
    expect(imageHeaderOf(await encoded(37, 21, "image/png"))).toEqual({ format: "png", width: 37, height: 21 });
    const jpeg = await encoded(45, 13, "image/jpeg");
    expect(imageHeaderOf(jpeg)).toEqual({ format: "jpeg", width: 45, height: 13 });
    const dir = mkdtempSync(join(tmpdir(), "rl4pix-header-"));
    try {
      const p = join(dir, "big.jpg");
      writeFileSync(p, withBigMetadata(jpeg));
      expect(readImageHeader(p)).toEqual({ format: "jpeg", width: 45, height: 13 });
      // the decoder agrees that this file is that image
      const decoded = await Jimp.read(p);
      expect([decoded.bitmap.width, decoded.bitmap.height]).toEqual([45, 13]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("text, empty, GIF and cut-short files are named problems", async () => {
    const dir = mkdtempSync(join(tmpdir(), "rl4pix-header-"));
    try {
      const cases: [string, Uint8Array, RegExp][] = [
        ["text.png", new TextEncoder().encode("hello, not an image"), /text\.png: not an image \(starts with bytes 68 65 6c 6c/],
        ["empty.png", new Uint8Array(0), /empty\.png: an empty file; expected a PNG or JPEG image/],
        ["anim.gif", new TextEncoder().encode("GIF89a......"), /anim\.gif: a GIF image; expected a PNG or JPEG/],
        ["cut.png", (await encoded(8, 8, "image/png")).subarray(0, 16), /cut\.png: damaged PNG/],
        ["cut.jpg", (await encoded(8, 8, "image/jpeg")).subarray(0, 40), /cut\.jpg: damaged or truncated JPEG/],
      ];
      for (const [name, bytes, want] of cases) {
        writeFileSync(join(dir, name), bytes);
        expect(() => readImageHeader(join(dir, name))).toThrow(UserError);
        expect(() => readImageHeader(join(dir, name))).toThrow(want);
      }
      expect(() => readImageHeader(join(dir, "absent.png"))).toThrow(/absent\.png: file not found/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("maskShapeProblem", () => {
  test("same size or same aspect ratio (MagicBrush's larger masks) is fine; another aspect ratio is not", () => {
    expect(maskShapeProblem({ width: 64, height: 64 }, { width: 64, height: 64 })).toBeNull();
    expect(maskShapeProblem({ width: 1024, height: 1024 }, { width: 500, height: 500 })).toBeNull();
    expect(maskShapeProblem({ width: 1000, height: 667 }, { width: 500, height: 333 })).toBeNull(); // rounding
    expect(maskShapeProblem({ width: 64, height: 32 }, { width: 64, height: 64 })).toBe(
      "the mask is 64x32 but its image is 64x64; a mask must have its image's aspect ratio",
    );
    expect(maskShapeProblem({ width: 500, height: 480 }, { width: 500, height: 500 })).not.toBeNull();
  });
});
