// LoRA files: the golden attention-processor file written by diffusers 0.17, the peft/diffusers
// format both ways, and UserErrors for files that are not (UNet) LoRAs.
import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { UserError } from "../src/errors.ts";
import { loraScale, readLoraFile, writeLoraFile, type LoraLayer } from "../src/io/lora_format.ts";
import { openSafetensors, writeSafetensors, type TensorToWrite } from "../src/io/safetensors.ts";

const GOLDEN = fileURLToPath(new URL("../../shared/goldens/tiny-ip2p-lora/pytorch_lora_weights.safetensors", import.meta.url));
const dir = mkdtempSync(join(tmpdir(), "rl4pix-lora-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function f32(n: number, seed: number): Float32Array {
  return Float32Array.from({ length: n }, (_, i) => Math.fround(Math.sin(seed * 31 + i * 0.7)));
}

function userError(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(UserError);
    return (e as Error).message;
  }
  throw new Error("expected a UserError");
}

describe("golden attn-procs file (unet.save_attn_procs, diffusers 0.17)", () => {
  test("96 tensors become 48 modules of rank 4 with the right shapes and values", () => {
    const raw = openSafetensors(GOLDEN);
    expect(raw.tensors.size).toBe(96);
    const { format, layers } = readLoraFile(GOLDEN);
    expect(format).toBe("attn-procs");
    expect(layers.size).toBe(48);
    // 6 transformer blocks (down_blocks.1 x2, mid x1, up_blocks.0 x3) x attn1/attn2 x q/k/v/out
    const blocks = [
      "down_blocks.1.attentions.0", "down_blocks.1.attentions.1", "mid_block.attentions.0",
      "up_blocks.0.attentions.0", "up_blocks.0.attentions.1", "up_blocks.0.attentions.2",
    ];
    const expected: string[] = [];
    for (const b of blocks) {
      for (const a of ["attn1", "attn2"]) {
        for (const p of ["to_q", "to_k", "to_v", "to_out.0"]) expected.push(`${b}.transformer_blocks.0.${a}.${p}`);
      }
    }
    expect([...layers.keys()].sort()).toEqual(expected.sort());
    for (const [module, l] of layers) {
      expect(l.rank).toBe(4);
      expect(l.alpha).toBeUndefined();
      expect(loraScale(l)).toBe(1);
      expect(l.outFeatures).toBe(64);
      // cross-attention keys/values read the 32-wide text states
      const crossKv = module.includes("attn2.to_k") || module.includes("attn2.to_v");
      expect(l.inFeatures).toBe(crossKv ? 32 : 64);
      expect(l.down.length).toBe(4 * l.inFeatures);
      expect(l.up.length).toBe(64 * 4);
    }
    const m = layers.get("up_blocks.0.attentions.2.transformer_blocks.0.attn1.to_out.0")!;
    const prefix = "up_blocks.0.attentions.2.transformer_blocks.0.attn1.processor.to_out_lora";
    expect(Array.from(m.down)).toEqual(Array.from(raw.toF32(`${prefix}.down.weight`)));
    expect(Array.from(m.up)).toEqual(Array.from(raw.toF32(`${prefix}.up.weight`)));
    // a trained LoRA: the up weights are not all zero
    expect(m.up.some((v) => v !== 0)).toBe(true);
  });

  test("re-written in the peft format, it reads back identically", () => {
    const { layers } = readLoraFile(GOLDEN);
    const p = join(dir, "peft.safetensors");
    writeLoraFile(p, layers);
    const f = openSafetensors(p);
    expect(f.tensors.size).toBe(96);
    expect(f.metadata?.format).toBe("pt");
    const key = "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k";
    expect(f.info(`${key}.lora_A.weight`).shape).toEqual([4, 32]);
    expect(f.info(`${key}.lora_B.weight`).shape).toEqual([64, 4]);
    expect(f.has("unet.mid_block.attentions.0.transformer_blocks.0.attn1.to_out.0.lora_A.weight")).toBe(true);
    const back = readLoraFile(p);
    expect(back.format).toBe("peft");
    expect([...back.layers.keys()]).toEqual([...layers.keys()]);
    for (const [module, l] of layers) {
      const b = back.layers.get(module)!;
      expect(b.rank).toBe(l.rank);
      expect(Array.from(b.down)).toEqual(Array.from(l.down));
      expect(Array.from(b.up)).toEqual(Array.from(l.up));
    }
  });
});

describe("peft format", () => {
  test("alpha other than the rank is folded into lora_B", () => {
    const layer: LoraLayer = { down: f32(2 * 3, 1), up: f32(5 * 2, 2), rank: 2, inFeatures: 3, outFeatures: 5, alpha: 1 };
    const p = join(dir, "alpha.safetensors");
    writeLoraFile(p, new Map([["mid_block.attentions.0.transformer_blocks.0.attn2.to_v", layer]]));
    const back = readLoraFile(p).layers.get("mid_block.attentions.0.transformer_blocks.0.attn2.to_v")!;
    expect(back.alpha).toBeUndefined();
    expect(Array.from(back.down)).toEqual(Array.from(layer.down));
    expect(Array.from(back.up)).toEqual(Array.from(layer.up, (v) => Math.fround(v * 0.5)));
  });

  test("a convolution's adapter: written and read as peft's [rank, in, k, k] and [out, rank, 1, 1]", () => {
    const layer: LoraLayer = { down: f32(2 * 3 * 9, 5), up: f32(4 * 2, 6), rank: 2, inFeatures: 3, outFeatures: 4, kernelSize: 3 };
    const p = join(dir, "conv.safetensors");
    writeLoraFile(p, new Map([["up_blocks.1.resnets.0.conv1", layer]]));
    const f = openSafetensors(p);
    expect(f.info("unet.up_blocks.1.resnets.0.conv1.lora_A.weight").shape).toEqual([2, 3, 3, 3]);
    expect(f.info("unet.up_blocks.1.resnets.0.conv1.lora_B.weight").shape).toEqual([4, 2, 1, 1]);
    const back = readLoraFile(p).layers.get("up_blocks.1.resnets.0.conv1")!;
    expect(back).toMatchObject({ rank: 2, inFeatures: 3, outFeatures: 4, kernelSize: 3 });
    expect(Array.from(back.down)).toEqual(Array.from(layer.down));
    expect(Array.from(back.up)).toEqual(Array.from(layer.up));
  });

  test("lora.down/lora.up spelling, adapter names, .alpha tensors and F16 data", () => {
    const t: Record<string, TensorToWrite> = {
      "unet.a.to_q.lora.down.weight": { dtype: "F32", shape: [2, 3], data: f32(6, 3) },
      "unet.a.to_q.lora.up.weight": { dtype: "F32", shape: [4, 2], data: f32(8, 4) },
      "unet.a.to_q.alpha": { dtype: "F32", shape: [], data: Float32Array.from([8]) },
      "unet.b.to_k.lora_A.default.weight": { dtype: "F16", shape: [1, 2], data: Float32Array.from([0.5, -2]) },
      "unet.b.to_k.lora_B.default.weight": { dtype: "F16", shape: [3, 1], data: Float32Array.from([1, 0.25, 4]) },
    };
    const p = join(dir, "variants.safetensors");
    writeSafetensors(p, t);
    const { layers } = readLoraFile(p);
    expect([...layers.keys()]).toEqual(["a.to_q", "b.to_k"]);
    expect(layers.get("a.to_q")!.alpha).toBe(8);
    expect(loraScale(layers.get("a.to_q")!)).toBe(4);
    expect(layers.get("b.to_k")).toMatchObject({ rank: 1, inFeatures: 2, outFeatures: 3 });
    expect(Array.from(layers.get("b.to_k")!.up)).toEqual([1, 0.25, 4]);
  });
});

describe("broken LoRA files", () => {
  const w = (shape: number[]): TensorToWrite => ({ dtype: "F32", shape, data: new Float32Array(shape.reduce((a, b) => a * b, 1)) });
  const cases: [string, Record<string, TensorToWrite>, string[]][] = [
    ["missing up", { "unet.x.to_q.lora_A.weight": w([2, 3]) }, ["'x.to_q'", "no up (lora_B) weight"]],
    ["rank mismatch", { "unet.x.lora_A.weight": w([2, 3]), "unet.x.lora_B.weight": w([4, 3]) }, ["rank 2", "rank 3"]],
    ["not a LoRA key", { "conv_in.weight": w([2, 2]) }, ["'conv_in.weight' is not a LoRA weight"]],
    ["text encoder", { "text_encoder.x.lora_A.weight": w([2, 3]), "text_encoder.x.lora_B.weight": w([3, 2]) }, ["text-encoder LoRA"]],
    ["conv LoRA with a non-square kernel", { "unet.c.lora_A.weight": w([2, 3, 3, 1]), "unet.c.lora_B.weight": w([3, 2, 1, 1]) }, ["'c'", "[2,3,3,1]", "square"]],
    ["conv LoRA whose up is not 1x1", { "unet.c.lora_A.weight": w([2, 3, 3, 3]), "unet.c.lora_B.weight": w([3, 2, 3, 3]) }, ["[3,2,3,3]", "expected [out, rank, 1, 1]"]],
    ["conv LoRA rank mismatch", { "unet.c.lora_A.weight": w([2, 3, 3, 3]), "unet.c.lora_B.weight": w([3, 4, 1, 1]) }, ["rank 2", "rank 4"]],
    ["linear down, conv up", { "unet.c.lora_A.weight": w([2, 3]), "unet.c.lora_B.weight": w([3, 2, 1, 1]) }, ["expected [out, rank]"]],
    ["3-D down", { "unet.c.lora_A.weight": w([2, 3, 3]), "unet.c.lora_B.weight": w([3, 2]) }, ["[2,3,3]", "[rank, in, k, k]"]],
    ["duplicate", { "unet.x.lora_A.weight": w([2, 3]), "unet.x.lora.down.weight": w([2, 3]), "unet.x.lora_B.weight": w([3, 2]) }, ["both the down weight of 'x'"]],
    ["empty", {}, ["holds no LoRA weights"]],
  ];
  for (const [what, tensors, fragments] of cases) {
    test(what, () => {
      const p = join(dir, `${what.replace(/ /g, "_")}.safetensors`);
      writeSafetensors(p, tensors);
      const msg = userError(() => readLoraFile(p));
      expect(msg).toContain(p);
      for (const f of fragments) expect(msg).toContain(f);
    });
  }
});
