// Tiny checkpoint generator and the embedded default model: the folder parses as a diffusers IP2P
// pipeline, weight files match the module trees key for key, generation is deterministic in the seed,
// the fp16 variant is the f32 weights rounded to nearest-even f16, and the default model is cached.
import { afterAll, describe, expect, test } from "bun:test";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, unlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { SYNTH_VOCABULARY } from "../src/data/synth.ts";
import { UserError } from "../src/errors.ts";
import { loadPipelineConfig, resolveWeightFiles, type PipelineConfig } from "../src/io/diffusers.ts";
import { openSafetensors } from "../src/io/safetensors.ts";
import { strictMatch } from "../src/io/state_dict.ts";
import { DEFAULT_TINY_SPEC, tinyModelDir, tinySpecHash, writeTinyCheckpoint } from "../src/models/tiny.ts";
import { CLIPTextModel } from "../src/nn/clip_text.ts";
import type { Module } from "../src/nn/module.ts";
import { UNet2DConditionModel } from "../src/nn/unet.ts";
import { AutoencoderKL } from "../src/nn/vae.ts";
import { ClipTokenizer } from "../src/text/clip_tokenizer.ts";

const tmp = mkdtempSync(join(tmpdir(), "rl4pix-tiny-"));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

/** A much smaller model for the determinism checks (keeps the suite fast on 2 cores). */
const SMALL = {
  unet: { block_out_channels: [8, 16], norm_num_groups: 4, attention_head_dim: 2, cross_attention_dim: 16 },
  vae: { block_out_channels: [8, 8], norm_num_groups: 4 },
  text_encoder: { hidden_size: 16, intermediate_size: 24, num_attention_heads: 2, num_hidden_layers: 1 },
};

function componentFiles(dir: string, cfg: PipelineConfig, variant?: string): [string, Module, string][] {
  return [
    ["unet", new UNet2DConditionModel(cfg.unet), resolveWeightFiles(join(dir, "unet"), { variant })[0]],
    ["vae", new AutoencoderKL(cfg.vae), resolveWeightFiles(join(dir, "vae"))[0]],
    ["text_encoder", new CLIPTextModel(cfg.textEncoder), resolveWeightFiles(join(dir, "text_encoder"))[0]],
  ];
}

function std(a: Float32Array, mean = 0): number {
  let s = 0;
  for (const v of a) s += (v - mean) ** 2;
  return Math.sqrt(s / a.length);
}

function meanOf(a: Float32Array): number {
  let s = 0;
  for (const v of a) s += v;
  return s / a.length;
}

/** Decode IEEE binary16 bits (written out here so the check does not reuse the code under test). */
function halfToNumber(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return sign * m * 2 ** -24;
  if (e === 31) return m ? NaN : sign * Infinity;
  return sign * (1 + m / 1024) * 2 ** (e - 15);
}

// The default spec written explicitly (seed from weights/tiny.json), with the fp16 UNet.
const defaultDir = join(tmp, "default");

describe("writeTinyCheckpoint (default sizes)", () => {
  const dir = defaultDir;
  const info = writeTinyCheckpoint(dir, { variants: ["fp16"] });
  const cfg = loadPipelineConfig(dir);

  test("the folder is a diffusers InstructPix2Pix pipeline with the documented sizes", () => {
    expect(cfg.className).toBe("StableDiffusionInstructPix2PixPipeline");
    const index = JSON.parse(readFileSync(join(dir, "model_index.json"), "utf8"));
    expect(index.unet).toEqual(["diffusers", "UNet2DConditionModel"]);
    expect(index.scheduler).toEqual(["diffusers", "DDIMScheduler"]);
    expect(cfg.unet.inChannels).toBe(8);
    expect(cfg.unet.outChannels).toBe(4);
    expect(cfg.unet.blockOutChannels).toEqual([32, 64]);
    expect(cfg.unet.layersPerBlock).toEqual([1, 1]);
    expect(cfg.unet.downBlockTypes).toEqual(["DownBlock2D", "CrossAttnDownBlock2D"]);
    expect(cfg.unet.upBlockTypes).toEqual(["CrossAttnUpBlock2D", "UpBlock2D"]);
    expect(cfg.unet.attentionHeads).toEqual([4, 4]);
    expect(cfg.unet.crossAttentionDim).toEqual([32, 32]);
    expect(cfg.unet.normNumGroups).toBe(8);
    expect(cfg.unet.sampleSize).toBe(32);
    expect(cfg.vae.blockOutChannels).toEqual([16, 32]);
    expect(cfg.vae.latentChannels).toBe(4);
    expect(cfg.vae.normNumGroups).toBe(8);
    expect(cfg.vae.scalingFactor).toBe(0.18215);
    expect(cfg.textEncoder.hiddenSize).toBe(32);
    expect(cfg.textEncoder.numHiddenLayers).toBe(2);
    expect(cfg.textEncoder.numAttentionHeads).toBe(4);
    expect(cfg.textEncoder.intermediateSize).toBe(64);
    expect(cfg.textEncoder.hiddenAct).toBe("quick_gelu");
    expect(cfg.textEncoder.maxPositionEmbeddings).toBe(77);
    const s = cfg.scheduler;
    expect([s.className, s.betaSchedule, s.betaStart, s.betaEnd]).toEqual(["DDIMScheduler", "scaled_linear", 0.00085, 0.012]);
    expect([s.numTrainTimesteps, s.setAlphaToOne, s.stepsOffset, s.clipSample]).toEqual([1000, false, 1, false]);
    expect([s.predictionType, s.timestepSpacing]).toEqual(["epsilon", "leading"]);
    expect(info.seed).toBe(DEFAULT_TINY_SPEC.seed);
    expect(info.variants).toEqual(["fp16"]);
  });

  test("the tokenizer makes every synthetic word one token and matches the text encoder's vocabulary", () => {
    const tok = ClipTokenizer.fromDir(cfg.tokenizer.dir);
    expect(cfg.textEncoder.vocabSize).toBe(tok.vocabSize);
    expect(info.vocabSize).toBe(tok.vocabSize);
    expect([cfg.textEncoder.bosTokenId, cfg.textEncoder.eosTokenId]).toEqual([tok.bosId, tok.eosId]);
    for (const w of SYNTH_VOCABULARY) expect(tok.encodeUntruncated(w).length).toBe(3);
  });

  test("every weight file holds exactly the module tree's keys and shapes (f32)", () => {
    for (const [name, module, file] of componentFiles(dir, cfg)) {
      const f = openSafetensors(file);
      const found = new Map(f.names().map((n) => [n, f.info(n).shape] as [string, readonly number[]]));
      const expected = new Map(module.namedParameters().map(([k, p]) => [k, p.shape] as [string, readonly number[]]));
      strictMatch(expected, found, file);
      for (const n of f.names()) expect(f.info(n).dtype).toBe("F32");
      const count = [...expected.values()].reduce((a, s) => a + s.reduce((x, y) => x * y, 1), 0);
      expect(info.parameters[name as "unet"]).toBe(count);
      expect(f.metadata).toEqual({ format: "pt" });
    }
  });

  test("initial values follow the documented scales", () => {
    const unet = openSafetensors(join(dir, "unet", "diffusion_pytorch_model.safetensors"));
    // conv kernel [64, 32, 3, 3]: N(0, 1/288)
    const conv = unet.toF32("down_blocks.1.resnets.0.conv1.weight");
    expect(Math.abs(meanOf(conv))).toBeLessThan(0.01);
    expect(std(conv) * Math.sqrt(32 * 9)).toBeCloseTo(1, 1);
    // linear [64, 64] in the attention: N(0, 1/64)
    expect(std(unet.toF32("down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.weight")) * 8).toBeCloseTo(1, 1);
    // conv_out [4, 32, 3, 3] scaled by 0.1
    expect(std(unet.toF32("conv_out.weight")) * Math.sqrt(32 * 9)).toBeCloseTo(0.1, 1);
    // GroupNorm scale: 1 + small noise; biases small
    const gn = unet.toF32("mid_block.resnets.0.norm1.weight");
    expect(meanOf(gn)).toBeCloseTo(1, 1);
    expect(std(gn, 1)).toBeGreaterThan(0.005);
    expect(std(gn, 1)).toBeLessThan(0.05);
    expect(std(unet.toF32("down_blocks.1.resnets.0.conv1.bias"))).toBeLessThan(0.05);
    const text = openSafetensors(join(dir, "text_encoder", "model.safetensors"));
    const emb = text.toF32("text_model.embeddings.token_embedding.weight");
    expect(std(emb)).toBeGreaterThan(0.018);
    expect(std(emb)).toBeLessThan(0.022);
    expect(meanOf(text.toF32("text_model.final_layer_norm.weight"))).toBeCloseTo(1, 1);
    for (const n of unet.names()) for (const v of unet.toF32(n)) if (!Number.isFinite(v)) throw new Error(`${n} has ${v}`);
  });

  test("the fp16 variant holds the f32 weights rounded to nearest (ties to even) f16", () => {
    const f32 = openSafetensors(join(dir, "unet", "diffusion_pytorch_model.safetensors"));
    const f16 = openSafetensors(resolveWeightFiles(join(dir, "unet"), { variant: "fp16" })[0]);
    expect(f16.names().sort()).toEqual(f32.names().sort());
    for (const n of f32.names()) {
      expect(f16.info(n).dtype).toBe("F16");
      expect(f16.info(n).shape).toEqual(f32.info(n).shape);
      const x = f32.toF32(n);
      const h = f16.readTensor(n) as Uint16Array;
      for (let i = 0; i < x.length; i++) {
        const v = halfToNumber(h[i]);
        const err = Math.abs(v - x[i]);
        // The neighbouring f16 values (same sign) are no closer; on a tie the mantissa is even.
        const mag = h[i] & 0x7fff;
        for (const nb of [mag - 1, mag + 1]) {
          if (nb < 0 || nb >= 0x7c00) continue;
          const other = Math.abs(halfToNumber((h[i] & 0x8000) | nb) - x[i]);
          if (other < err || (other === err && (h[i] & 1) === 1)) throw new Error(`${n}[${i}]: ${x[i]} stored as ${v}`);
        }
        if (Math.sign(v) !== Math.sign(x[i]) && v !== 0) throw new Error(`${n}[${i}]: sign flipped`);
      }
    }
  });
});

describe("determinism and options", () => {
  const a = writeTinyCheckpoint(join(tmp, "small-a"), { seed: 3, ...SMALL });
  const b = writeTinyCheckpoint(join(tmp, "small-b"), { seed: 3, ...SMALL });
  const c = writeTinyCheckpoint(join(tmp, "small-c"), { seed: 4, ...SMALL });
  const files = [
    "model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors", "vae/config.json",
    "vae/diffusion_pytorch_model.safetensors", "text_encoder/config.json", "text_encoder/model.safetensors",
    "tokenizer/vocab.json", "tokenizer/merges.txt", "tokenizer/special_tokens_map.json",
    "tokenizer/tokenizer_config.json", "scheduler/scheduler_config.json",
  ];

  test("the same seed gives byte-identical files", () => {
    for (const f of files) expect(Buffer.compare(readFileSync(join(a.dir, f)), readFileSync(join(b.dir, f)))).toBe(0);
    expect(a.specHash).toBe(b.specHash);
  });

  test("another seed gives different weights (every tensor) and the same configs", () => {
    for (const f of ["unet/config.json", "vae/config.json", "text_encoder/config.json", "tokenizer/vocab.json"]) {
      expect(readFileSync(join(a.dir, f), "utf8")).toBe(readFileSync(join(c.dir, f), "utf8"));
    }
    for (const f of ["unet/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors"]) {
      const x = openSafetensors(join(a.dir, f));
      const y = openSafetensors(join(c.dir, f));
      expect(y.names()).toEqual(x.names());
      for (const n of x.names()) {
        const p = x.toF32(n);
        const q = y.toF32(n);
        let same = 0;
        for (let i = 0; i < p.length; i++) if (p[i] === q[i]) same++;
        expect(same).toBeLessThan(Math.max(1, p.length / 10));
      }
    }
    expect(c.specHash).not.toBe(a.specHash);
  });

  test("size overrides reach the configs and the weights", () => {
    const cfg = loadPipelineConfig(a.dir);
    expect(cfg.unet.blockOutChannels).toEqual([8, 16]);
    expect(cfg.textEncoder.hiddenSize).toBe(16);
    for (const [, module, file] of componentFiles(a.dir, cfg)) {
      const f = openSafetensors(file);
      strictMatch(new Map(module.namedParameters().map(([k, p]) => [k, p.shape])), new Map(f.names().map((n) => [n, f.info(n).shape])), file);
    }
    expect(a.parameters.unet).toBeLessThan(200_000);
  });

  test("mistakes are user errors and leave no temporary folders behind", () => {
    const parent = join(tmp, "errors");
    mkdirSync(parent);
    const bad = (fn: () => unknown, re: RegExp) => {
      let err: unknown = null;
      try {
        fn();
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(UserError);
      expect((err as Error).message).toMatch(re);
    };
    bad(() => writeTinyCheckpoint(join(parent, "x"), { ...SMALL, unet: { ...SMALL.unet, cross_attention_dim: 8 } }), /cross_attention_dim/);
    bad(() => writeTinyCheckpoint(join(parent, "x"), { ...SMALL, unet: { ...SMALL.unet, norm_num_groups: 3 } }), /x.unet.config\.json.*norm_num_groups/);
    bad(() => writeTinyCheckpoint(join(parent, "x"), { seed: -1 }), /seed/);
    bad(() => writeTinyCheckpoint(join(parent, "x"), { seed: 1.5 }), /seed/);
    bad(() => writeTinyCheckpoint(join(parent, "x"), { variants: ["bf16"] }), /variant/);
    bad(() => writeTinyCheckpoint(join(parent, "x"), { text_encoder: { vocab_size: 10 } }), /vocab_size/);
    expect(readdirSync(parent)).toEqual([]);
    // An existing non-empty folder is refused unless overwrite is asked for.
    const full = join(parent, "full");
    mkdirSync(full);
    writeFileSync(join(full, "keep.txt"), "x");
    bad(() => writeTinyCheckpoint(full, SMALL), /not empty/);
    expect(readFileSync(join(full, "keep.txt"), "utf8")).toBe("x");
    writeTinyCheckpoint(full, { ...SMALL, overwrite: true });
    expect(existsSync(join(full, "keep.txt"))).toBe(false);
    expect(existsSync(join(full, "unet", "diffusion_pytorch_model.safetensors"))).toBe(true);
    // An existing empty folder is fine.
    const empty = join(parent, "empty");
    mkdirSync(empty);
    writeTinyCheckpoint(empty, SMALL);
    expect(readdirSync(parent).sort()).toEqual(["empty", "full"]);
  });
});

describe("tinyModelDir", () => {
  test("materialises weights/tiny.json once and reuses it", async () => {
    const cache = join(tmp, "cache");
    const dir = await tinyModelDir({ cacheDir: cache });
    expect(dir.startsWith(cache)).toBe(true);
    expect(dir).toContain(tinySpecHash(DEFAULT_TINY_SPEC).slice(0, 16));
    const cfg = loadPipelineConfig(dir);
    expect(cfg.unet.blockOutChannels).toEqual(DEFAULT_TINY_SPEC.unet.block_out_channels as number[]);
    for (const [, module, file] of componentFiles(dir, cfg)) {
      const f = openSafetensors(file);
      strictMatch(new Map(module.namedParameters().map(([k, p]) => [k, p.shape])), new Map(f.names().map((n) => [n, f.info(n).shape])), file);
    }
    // The default seed's files equal an explicit write of the default spec.
    for (const f of ["unet/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors", "tokenizer/vocab.json"]) {
      expect(Buffer.compare(readFileSync(join(dir, f)), readFileSync(join(defaultDir, f)))).toBe(0);
    }
    expect(existsSync(join(dir, "unet", "diffusion_pytorch_model.fp16.safetensors"))).toBe(false);

    const weights = join(dir, "unet", "diffusion_pytorch_model.safetensors");
    const before = statSync(weights).mtimeMs;
    const t0 = performance.now();
    expect(await tinyModelDir({ cacheDir: cache })).toBe(dir);
    expect(performance.now() - t0).toBeLessThan(100);
    expect(statSync(weights).mtimeMs).toBe(before);
    expect(readdirSync(cache)).toEqual([dir.slice(cache.length + 1)]);

    // A damaged cached folder is rebuilt.
    unlinkSync(join(dir, "vae", "diffusion_pytorch_model.safetensors"));
    expect(await tinyModelDir({ cacheDir: cache })).toBe(dir);
    expect(existsSync(join(dir, "vae", "diffusion_pytorch_model.safetensors"))).toBe(true);
    expect(readdirSync(cache)).toEqual([dir.slice(cache.length + 1)]);
  });

  test("the spec embedded from weights/tiny.json is the file on disk", () => {
    const onDisk = JSON.parse(readFileSync(new URL("../weights/tiny.json", import.meta.url), "utf8"));
    expect(DEFAULT_TINY_SPEC.seed).toBe(onDisk.seed);
    expect(DEFAULT_TINY_SPEC.unet).toEqual(onDisk.unet);
    expect(DEFAULT_TINY_SPEC.text_encoder).toEqual(onDisk.text_encoder);
  });
});
