// safetensors reader/writer: round trips of every dtype, the golden files written by Python, and one
// UserError per kind of broken file.
import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { UserError } from "../src/errors.ts";
import { openSafetensors, writeSafetensors, type TensorToWrite } from "../src/io/safetensors.ts";

const GOLDENS = fileURLToPath(new URL("../../shared/goldens/", import.meta.url));
const dir = mkdtempSync(join(tmpdir(), "rl4pix-st-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A safetensors file from a literal header object and data bytes (for hand-made broken files). */
function rawFile(name: string, header: unknown, data: Uint8Array = new Uint8Array(0), lenOverride?: bigint): string {
  const json = new TextEncoder().encode(typeof header === "string" ? header : JSON.stringify(header));
  const out = new Uint8Array(8 + json.length + data.length);
  new DataView(out.buffer).setBigUint64(0, lenOverride ?? BigInt(json.length), true);
  out.set(json, 8);
  out.set(data, 8 + json.length);
  const p = join(dir, name);
  writeFileSync(p, out);
  return p;
}

function expectUserError(fn: () => unknown, ...fragments: string[]): void {
  let err: unknown;
  try {
    fn();
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(UserError);
  for (const f of fragments) expect((err as Error).message).toContain(f);
}

describe("round trip", () => {
  test("every dtype keeps its dtype, shape and bytes", () => {
    const tensors: Record<string, TensorToWrite> = {
      f64: { dtype: "F64", shape: [2, 3], data: Float64Array.from([1.5, -2, 3e300, 0, -0, Math.PI]) },
      f32: { dtype: "F32", shape: [3], data: Float32Array.from([1.25, -3.5, 1e-30]) },
      f16: { dtype: "F16", shape: [2, 2], data: Uint16Array.from([0x3c00, 0xc000, 0x7bff, 0x0001]) },
      bf16: { dtype: "BF16", shape: [2], data: Uint16Array.from([0x3f80, 0xc0a0]) },
      i64: { dtype: "I64", shape: [3], data: BigInt64Array.from([1n, -(2n ** 40n), 9007199254740993n]) },
      i32: { dtype: "I32", shape: [2, 1], data: Int32Array.from([-7, 2147483647]) },
      i16: { dtype: "I16", shape: [2], data: Int16Array.from([-32768, 12]) },
      i8: { dtype: "I8", shape: [3], data: Int8Array.from([-128, 0, 127]) },
      u8: { dtype: "U8", shape: [1, 1, 4], data: Uint8Array.from([0, 1, 200, 255]) },
      bool: { dtype: "BOOL", shape: [2], data: Uint8Array.from([1, 0]) },
      scalar: { dtype: "F32", shape: [], data: Float32Array.from([42]) },
      empty: { dtype: "F32", shape: [0, 5], data: new Float32Array(0) },
    };
    const p = join(dir, "all.safetensors");
    writeSafetensors(p, tensors, { format: "pt", note: "ünïcode" });
    const f = openSafetensors(p);
    expect(f.metadata).toEqual({ format: "pt", note: "ünïcode" });
    expect(new Set(f.tensors.keys())).toEqual(new Set(Object.keys(tensors)));
    for (const [name, t] of Object.entries(tensors)) {
      expect(f.info(name).dtype).toBe(t.dtype);
      expect(f.info(name).shape).toEqual([...t.shape]);
      const back = f.readTensor(name);
      expect(back.constructor).toBe(t.data.constructor);
      expect(Array.from(back as ArrayLike<number | bigint>)).toEqual(Array.from(t.data as ArrayLike<number | bigint>));
    }
    // The header length is a multiple of 8 and every tensor starts aligned to its element size.
    const bytes = readFileSync(p);
    const n = Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true));
    expect(n % 8).toBe(0);
    for (const name of f.names()) {
      const info = f.info(name);
      const size = { F64: 8, I64: 8, F32: 4, I32: 4, F16: 2, BF16: 2, I16: 2, I8: 1, U8: 1, BOOL: 1 }[info.dtype];
      expect(info.begin % size).toBe(0);
    }
    // Conversions.
    expect(Array.from(f.toF32("f16"))).toEqual([1, -2, 65504, 2 ** -24]);
    expect(Array.from(f.toF32("bf16"))).toEqual([1, -5]);
    expect(Array.from(f.toF32("u8"))).toEqual([0, 1, 200, 255]);
    expect(Array.from(f.toI32("i32"))).toEqual([-7, 2147483647]);
    expect(Array.from(f.toI32("bool"))).toEqual([1, 0]);
    expectUserError(() => f.toI32("i64"), "'i64'", "int32");
    expectUserError(() => f.toI32("f32"), "'f32'", "not an integer");
    expectUserError(() => f.readTensor("nope"), "no tensor named 'nope'");
    // No temporary files are left next to the output.
    expect(readdirSync(dir).filter((x) => x.includes(".tmp"))).toEqual([]);
  });

  test("float32 input is converted for F16/BF16 with round-to-nearest-even, Int32Array for I64", () => {
    const p = join(dir, "conv.safetensors");
    writeSafetensors(p, {
      h: { dtype: "F16", shape: [4], data: Float32Array.from([1, 1 + 2 ** -11, 1 + 3 * 2 ** -11, 70000]) },
      b: { dtype: "BF16", shape: [3], data: Float32Array.from([1 + 2 ** -8, 1 + 3 * 2 ** -8, -0.5]) },
      l: { dtype: "I64", shape: [2], data: Int32Array.from([-3, 77]) },
    });
    const f = openSafetensors(p);
    // ties go to the even mantissa: 1+2^-11 -> 1, 1+3*2^-11 -> 1+2^-9; overflow -> inf
    expect(Array.from(f.toF32("h"))).toEqual([1, 1, 1 + 2 ** -9, Infinity]);
    expect(Array.from(f.toF32("b"))).toEqual([1, 1 + 2 ** -6, -0.5]);
    expect(Array.from(f.readTensor("l") as BigInt64Array)).toEqual([-3n, 77n]);
    expect(Array.from(f.toI32("l"))).toEqual([-3, 77]);
  });

  test("a mismatch between shape and data is a programming error", () => {
    expect(() =>
      writeSafetensors(join(dir, "bad.safetensors"), { x: { dtype: "F32", shape: [2, 2], data: new Float32Array(3) } }),
    ).toThrow("'x' has shape [2,2] (4 elements) but 3 values");
    expect(() =>
      writeSafetensors(join(dir, "bad.safetensors"), { x: { dtype: "I32", shape: [2], data: new Float32Array(2) } }),
    ).toThrow("'x' is I32 but its data is a Float32Array");
  });

  test("writing into a missing folder is a UserError naming the file", () => {
    const p = join(dir, "no-such-folder", "x.safetensors");
    expectUserError(() => writeSafetensors(p, {}), p, "folder does not exist");
  });
});

describe("golden files written by Python", () => {
  test("components.safetensors: shapes, dtypes, metadata, finite values", () => {
    const f = openSafetensors(join(GOLDENS, "components.safetensors"));
    expect(f.metadata).toEqual({ format: "pt" });
    expect(f.info("te.input_ids")).toMatchObject({ dtype: "I64", shape: [3, 77] });
    expect(f.info("unet.sample")).toMatchObject({ dtype: "F32", shape: [3, 8, 8, 8] });
    expect(f.info("vae.encode.moments").shape).toEqual([1, 8, 32, 32]);
    expect(f.info("attn2.mid_block.attentions.0.transformer_blocks.0.attn2.per_head").shape).toEqual([3, 8, 16, 77]);
    expect(Array.from(f.toI32("unet.tvec.timesteps"))).toEqual([999, 500, 1]);
    const ids = f.toI32("te.input_ids");
    expect(Array.from(ids.subarray(0, 6))).toEqual([49406, 2105, 518, 2390, 5496, 49407]);
    for (const name of f.names()) {
      if (f.info(name).dtype !== "F32") continue;
      const v = f.toF32(name);
      expect(v.length).toBe(f.info(name).shape.reduce((a, b) => a * b, 1));
      expect(v.every(Number.isFinite)).toBe(true);
    }
    // Attention probabilities: every row sums to 1.
    const p = f.toF32("attn2.down_blocks.1.attentions.0.transformer_blocks.0.attn2");
    for (let r = 0; r < 3 * 16; r++) {
      let s = 0;
      for (let k = 0; k < 77; k++) s += p[r * 77 + k];
      expect(Math.abs(s - 1)).toBeLessThan(1e-5);
    }
  });

  test("fp16 UNet variant holds the fp32 weights rounded to half precision", () => {
    const f32 = openSafetensors(join(GOLDENS, "tiny-ip2p/unet/diffusion_pytorch_model.safetensors"));
    const f16 = openSafetensors(join(GOLDENS, "tiny-ip2p/unet/diffusion_pytorch_model.fp16.safetensors"));
    expect(f32.tensors.size).toBe(304);
    expect(new Set(f16.tensors.keys())).toEqual(new Set(f32.tensors.keys()));
    for (const name of ["conv_in.weight", "down_blocks.1.attentions.0.proj_in.weight", "time_embedding.linear_2.bias"]) {
      expect(f16.info(name).dtype).toBe("F16");
      expect(f16.info(name).shape).toEqual(f32.info(name).shape);
      const a = f32.toF32(name);
      const b = f16.toF32(name);
      for (let i = 0; i < a.length; i++) {
        // half precision: relative error at most 2^-11 for normal numbers, 2^-25 absolute near zero
        expect(Math.abs(a[i] - b[i])).toBeLessThanOrEqual(Math.abs(a[i]) * 2 ** -11 + 2 ** -25);
      }
    }
    expect(f32.info("conv_in.weight").shape).toEqual([32, 8, 3, 3]);
  });
});

describe("broken files are UserErrors that name the file and the problem", () => {
  const okHeader = { x: { dtype: "F32", shape: [2], data_offsets: [0, 8] } };
  const eight = new Uint8Array(8);

  test("missing file, folder, too short", () => {
    expectUserError(() => openSafetensors(join(dir, "missing.safetensors")), "missing.safetensors", "not found");
    expectUserError(() => openSafetensors(dir), dir, "folder");
    const p = join(dir, "short.safetensors");
    writeFileSync(p, new Uint8Array(5));
    expectUserError(() => openSafetensors(p), "short.safetensors", "too short");
  });

  test("header length beyond the file or beyond the limit", () => {
    const p1 = rawFile("len1.safetensors", okHeader, eight, 10_000n);
    expectUserError(() => openSafetensors(p1), "len1.safetensors", "header length 10000 exceeds the file size");
    const p2 = rawFile("len2.safetensors", okHeader, eight, 2n ** 62n);
    expectUserError(() => openSafetensors(p2), "len2.safetensors", "exceeds the 100000000-byte limit");
  });

  test("header that is not JSON or not an object", () => {
    expectUserError(() => openSafetensors(rawFile("json.safetensors", "{not json")), "json.safetensors", "not valid JSON");
    expectUserError(() => openSafetensors(rawFile("arr.safetensors", "[1,2]")), "arr.safetensors", "not a JSON object");
    const p = join(dir, "utf.safetensors");
    writeFileSync(p, Uint8Array.from([2, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xfe]));
    expectUserError(() => openSafetensors(p), "utf.safetensors", "not valid UTF-8");
  });

  test("unknown dtype, bad shape, bad offsets, bad metadata", () => {
    const dt = rawFile("dtype.safetensors", { x: { dtype: "F8_E4M3", shape: [2], data_offsets: [0, 2] } }, new Uint8Array(2));
    expectUserError(() => openSafetensors(dt), "dtype.safetensors", "'x'", "unsupported dtype \"F8_E4M3\"");
    const sh = rawFile("shape.safetensors", { x: { dtype: "F32", shape: [2, -1], data_offsets: [0, 8] } }, eight);
    expectUserError(() => openSafetensors(sh), "shape.safetensors", "'x'", "invalid shape");
    const of = rawFile("offs.safetensors", { x: { dtype: "F32", shape: [2], data_offsets: [8, 0] } }, eight);
    expectUserError(() => openSafetensors(of), "offs.safetensors", "'x'", "invalid data_offsets");
    const md = rawFile("meta.safetensors", { __metadata__: { a: 1 }, ...okHeader }, eight);
    expectUserError(() => openSafetensors(md), "meta.safetensors", "__metadata__", "'a'");
  });

  test("byte range that does not match shape x dtype", () => {
    const p = rawFile("lie.safetensors", { x: { dtype: "F32", shape: [10, 20], data_offsets: [0, 400] } }, new Uint8Array(400));
    expectUserError(
      () => openSafetensors(p),
      "lie.safetensors: tensor 'x' has byte range [0, 400) (400 bytes) but shape [10,20] F32 needs 800 bytes",
    );
  });

  test("truncated data section", () => {
    const p = rawFile("trunc.safetensors", okHeader, new Uint8Array(5));
    expectUserError(() => openSafetensors(p), "trunc.safetensors", "'x'", "beyond the end of the data section");
    // A real file cut short.
    const whole = readFileSync(join(GOLDENS, "tiny-ip2p/vae/diffusion_pytorch_model.safetensors"));
    const cut = join(dir, "cut.safetensors");
    writeFileSync(cut, whole.subarray(0, whole.length - 1000));
    expectUserError(() => openSafetensors(cut), "cut.safetensors", "beyond the end of the data section");
  });

  test("overlapping ranges, holes and trailing bytes", () => {
    const ov = rawFile(
      "overlap.safetensors",
      { a: { dtype: "F32", shape: [2], data_offsets: [0, 8] }, b: { dtype: "F32", shape: [2], data_offsets: [4, 12] } },
      new Uint8Array(12),
    );
    expectUserError(() => openSafetensors(ov), "overlap.safetensors", "'a'", "'b'", "overlap");
    const hole = rawFile("hole.safetensors", { a: { dtype: "F32", shape: [1], data_offsets: [4, 8] } }, eight);
    expectUserError(() => openSafetensors(hole), "hole.safetensors", "bytes [0, 4)", "belong to no tensor");
    const extra = rawFile("extra.safetensors", okHeader, new Uint8Array(12));
    expectUserError(() => openSafetensors(extra), "extra.safetensors", "cover only 8", "extra bytes");
  });
});
