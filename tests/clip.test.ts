// CLIPModel (vision + text towers, projections) against float64 CPU references written from the
// architecture's definition, CLIP's preprocessing against PIL (fixture from
// tests/fixtures/gen/clip_preprocess.py), CLIP-T / CLIP-I, and the folder checks.
import { afterAll, describe, expect, test } from "bun:test";
import { copyFileSync, mkdirSync, rmSync, mkdtempSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { useGpu, expectClose, uniform } from "./helpers.ts";
import { conv2dRef } from "./ref/conv.ts";
import { layerNormRef } from "./ref/norm.ts";
import { refLinear } from "./ref/matmul.ts";
import { attentionRef, mergeHeads, splitHeads } from "./ref/attention.ts";
import { UNARY_REF } from "./ref/elementwise.ts";
import { Tensor } from "../src/tensor/tensor.ts";
import { noGrad } from "../src/tensor/autograd.ts";
import { UserError } from "../src/errors.ts";
import { openSafetensors } from "../src/io/safetensors.ts";
import {
  clipImageEmbeddings, clipTextEmbeddings, loadClip, loadClipConfigs, preprocessImage, resizeBicubicU8,
  shortestEdgeSize, type ClipBundle, type ClipProcessorConfig,
} from "../src/nn/clip_model.ts";
import { writeTinyClip } from "../src/models/tiny_clip.ts";
import { writeTinyCheckpoint } from "../src/models/tiny.ts";
import { ClipScorer, clipI, clipT, cosine } from "../src/eval/clip_score.ts";
import type { PlanarImage } from "../src/io/image.ts";

useGpu();

const root = mkdtempSync(join(tmpdir(), "rl4pix-clip-"));
afterAll(() => rmSync(root, { recursive: true, force: true }));
const CLIP_DIR = writeTinyClip(join(root, "clip"), { seed: 3 });

// ---------------------------------------------------------------------------------------------------
// float64 reference of the towers

type Weights = (key: string) => Float64Array;

function weightsOf(dir: string): Weights {
  const f = openSafetensors(join(dir, "model.safetensors"));
  return (key) => Float64Array.from(f.toF32(key));
}

const quickGelu = UNARY_REF.quickGelu;

/** One pre-LN encoder layer on x [B, L, D] (rows), quick_gelu MLP. */
function layerRef(x: Float64Array, B: number, L: number, D: number, H: number, w: Weights, p: string, causal: boolean): Float64Array {
  const d = D / H;
  const h = layerNormRef(x, D, w(`${p}.layer_norm1.weight`), w(`${p}.layer_norm1.bias`), 1e-5);
  const proj = (name: string, t: Float64Array, i: number, o: number) => refLinear(t, i, w(`${p}.${name}.weight`), o, w(`${p}.${name}.bias`));
  const q = splitHeads(proj("self_attn.q_proj", h, D, D), B, H, L, d);
  const k = splitHeads(proj("self_attn.k_proj", h, D, D), B, H, L, d);
  const v = splitHeads(proj("self_attn.v_proj", h, D, D), B, H, L, d);
  const a = mergeHeads(attentionRef(q, k, v, { B, H, Lq: L, Lk: L, d, causal }), B, H, L, d);
  const x1 = proj("self_attn.out_proj", a, D, D).map((t, i) => t + x[i]);
  const h2 = layerNormRef(x1, D, w(`${p}.layer_norm2.weight`), w(`${p}.layer_norm2.bias`), 1e-5);
  const inner = w(`${p}.mlp.fc1.bias`).length;
  const m = proj("mlp.fc1", h2, D, inner).map(quickGelu);
  return proj("mlp.fc2", m, inner, D).map((t, i) => t + x1[i]);
}

interface Dims {
  D: number;
  H: number;
  layers: number;
  P: number;
}

function visionRef(w: Weights, pixels: Float64Array, B: number, S: number, patch: number, c: Dims): Float64Array {
  const { D, H, P } = c;
  const g = Math.floor(S / patch);
  const L = 1 + g * g;
  const conv = conv2dRef(pixels, w("vision_model.embeddings.patch_embedding.weight"), null, {
    n: B, cin: 3, h: S, w: S, cout: D, kh: patch, kw: patch, stride: [patch, patch], pad: [0, 0, 0, 0],
  }); // [B, D, g, g]
  const cls = w("vision_model.embeddings.class_embedding");
  const pos = w("vision_model.embeddings.position_embedding.weight");
  let x: Float64Array = new Float64Array(B * L * D);
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < L; t++) {
      for (let j = 0; j < D; j++) {
        const e = t === 0 ? cls[j] : conv[(b * D + j) * g * g + (t - 1)];
        x[(b * L + t) * D + j] = e + pos[t * D + j];
      }
    }
  }
  x = layerNormRef(x, D, w("vision_model.pre_layrnorm.weight"), w("vision_model.pre_layrnorm.bias"), 1e-5);
  for (let i = 0; i < c.layers; i++) x = layerRef(x, B, L, D, H, w, `vision_model.encoder.layers.${i}`, false);
  const clsOut = new Float64Array(B * D);
  for (let b = 0; b < B; b++) clsOut.set(x.subarray(b * L * D, b * L * D + D), b * D);
  const pooled = layerNormRef(clsOut, D, w("vision_model.post_layernorm.weight"), w("vision_model.post_layernorm.bias"), 1e-5);
  return refLinear(pooled, D, w("visual_projection.weight"), P, null);
}

function textRef(w: Weights, ids: number[], eosPos: number, c: Dims): Float64Array {
  const { D, H, P } = c;
  const L = ids.length;
  const tok = w("text_model.embeddings.token_embedding.weight");
  const pos = w("text_model.embeddings.position_embedding.weight");
  let x: Float64Array = new Float64Array(L * D);
  for (let t = 0; t < L; t++) for (let j = 0; j < D; j++) x[t * D + j] = tok[ids[t] * D + j] + pos[t * D + j];
  for (let i = 0; i < c.layers; i++) x = layerRef(x, 1, L, D, H, w, `text_model.encoder.layers.${i}`, true);
  x = layerNormRef(x, D, w("text_model.final_layer_norm.weight"), w("text_model.final_layer_norm.bias"), 1e-5);
  return refLinear(x.subarray(eosPos * D, eosPos * D + D), D, w("text_projection.weight"), P, null);
}

const DIMS: Dims = { D: 32, H: 4, layers: 2, P: 16 };

// ---------------------------------------------------------------------------------------------------

let clipCache: ClipBundle | null = null;
function clip(): ClipBundle {
  clipCache ??= loadClip(CLIP_DIR);
  return clipCache;
}

/** A deterministic RGB image in [0, 1] (values on the 8-bit grid). */
function testImage(w: number, h: number, seed: number): PlanarImage {
  const u = uniform(3 * w * h, seed);
  return { width: w, height: h, channels: 3, data: Float32Array.from(u, (v) => Math.round(v * 255) / 255) };
}

describe("CLIPModel", () => {
  test("tiny folder: config, processor and weights load; the vision tower matches the float64 reference", async () => {
    const c = clip();
    expect(c.model.config.vision.imageSize).toBe(32);
    expect(c.model.config.vision.patchSize).toBe(8);
    expect(c.model.config.projectionDim).toBe(16);
    expect(c.model.logitScale).toBeCloseTo(2.6592, 5);
    const B = 2, S = 32;
    const pixels = uniform(B * 3 * S * S, 11, -2, 2);
    const got = noGrad(() => c.model.imageFeatures(Tensor.from(Float32Array.from(pixels), [B, 3, S, S], "f32")));
    const ref = visionRef(weightsOf(CLIP_DIR), pixels, B, S, 8, DIMS);
    expectClose(await got.readF32(), ref, { atol: 2e-4, rtol: 1e-3 }, "image_embeds");
    got.dispose();
  });

  test("text features at the end-of-text token match the reference; batching and padding do not change them", async () => {
    const c = clip();
    const texts = ["a red circle", "move the blue square to the left side of the picture and make it bigger"];
    const batched = await clipTextEmbeddings(c, texts);
    const w = weightsOf(CLIP_DIR);
    for (let i = 0; i < texts.length; i++) {
      const enc = c.tokenizer.encodeUntruncated(texts[i]);
      expect(enc[enc.length - 1]).toBe(c.tokenizer.eosId);
      // Padding after the end-of-text token (with the pad id) must not matter: the encoder is causal.
      const padded = [...enc, ...new Array(5).fill(c.tokenizer.padId)];
      const ref = textRef(w, padded, enc.length - 1, DIMS);
      expectClose(batched.embeds[i], ref, { atol: 2e-4, rtol: 1e-3 }, `text ${i}`);
      const alone = await clipTextEmbeddings(c, [texts[i]]);
      expectClose(alone.embeds[0], batched.embeds[i], { atol: 1e-5, rtol: 1e-4 }, `text ${i} alone`);
    }
    expect(batched.truncated).toEqual([false, false]);
    const long = await clipTextEmbeddings(c, [Array.from({ length: 100 }, () => "red").join(" ")]);
    expect(long.truncated).toEqual([true]);
  });

  test("image embeddings go through preprocessing (resize + crop) and batches", async () => {
    const c = clip();
    const imgs = [testImage(48, 40, 1), testImage(32, 32, 2), testImage(20, 37, 3)];
    const emb = await clipImageEmbeddings(c, imgs, 2);
    const w = weightsOf(CLIP_DIR);
    for (let i = 0; i < imgs.length; i++) {
      const px = Float64Array.from(preprocessImage(imgs[i], c.processor));
      expect(px.length).toBe(3 * 32 * 32);
      expectClose(emb[i], visionRef(w, px, 1, 32, 8, DIMS), { atol: 2e-4, rtol: 1e-3 }, `image ${i}`);
    }
  });

  test("deterministic tiny folder: the same seed gives the same files", () => {
    const again = writeTinyClip(join(root, "clip-again"), { seed: 3 });
    for (const f of readdirSync(CLIP_DIR)) expect(readFileSync(join(again, f)).equals(readFileSync(join(CLIP_DIR, f)))).toBe(true);
    const other = writeTinyClip(join(root, "clip-other"), { seed: 4 });
    expect(readFileSync(join(other, "model.safetensors")).equals(readFileSync(join(CLIP_DIR, "model.safetensors")))).toBe(false);
  });
});

describe("CLIP preprocessing", () => {
  const fixture = JSON.parse(readFileSync(join(import.meta.dir, "fixtures", "clip_preprocess.json"), "utf8")) as {
    cases: { width: number; height: number; size: number; crop: number; resized_width: number; resized_height: number; resized: number[]; pixels: number[] }[];
  };
  /** The fixture's image formula (see the generator). */
  function formulaImage(w: number, h: number): Uint8Array {
    const out = new Uint8Array(3 * w * h);
    for (let c = 0; c < 3; c++) for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) {
      out[(c * h + y) * w + x] = (37 * x + 91 * y + 53 * c + 7 * x * y + ((x * x) % 13)) % 256;
    }
    return out;
  }
  const proc = (size: number, crop: number): ClipProcessorConfig => ({
    file: "test", doResize: true, shortestEdge: size, doCenterCrop: true, cropHeight: crop, cropWidth: crop,
    doRescale: true, rescaleFactor: 1 / 255, doNormalize: true,
    imageMean: [0.48145466, 0.4578275, 0.40821073], imageStd: [0.26862954, 0.26130258, 0.27577711],
  });

  test("bicubic resize equals PIL's 8-bit BICUBIC exactly (down, up, one side)", () => {
    expect(fixture.cases.length).toBeGreaterThanOrEqual(5);
    for (const c of fixture.cases) {
      const [nw, nh] = shortestEdgeSize(c.width, c.height, c.size);
      expect([nw, nh]).toEqual([c.resized_width, c.resized_height]);
      const got = resizeBicubicU8(formulaImage(c.width, c.height), 3, c.width, c.height, nw, nh);
      let bad = 0;
      for (let i = 0; i < got.length; i++) if (got[i] !== c.resized[i]) bad++;
      expect(`${c.width}x${c.height}->${nw}x${nh}: ${bad} differing values`).toBe(`${c.width}x${c.height}->${nw}x${nh}: 0 differing values`);
    }
  });

  test("resize + center crop + rescale + normalise equals the reference pipeline", () => {
    for (const c of fixture.cases) {
      const u8 = formulaImage(c.width, c.height);
      const img: PlanarImage = { width: c.width, height: c.height, channels: 3, data: Float32Array.from(u8, (v) => v / 255) };
      expectClose(preprocessImage(img, proc(c.size, c.crop)), c.pixels, { atol: 2e-6, rtol: 1e-6 }, `${c.width}x${c.height}`);
    }
  });

  test("shortest-edge sizes as transformers computes them", () => {
    expect(shortestEdgeSize(500, 375, 224)).toEqual([298, 224]);
    expect(shortestEdgeSize(375, 500, 224)).toEqual([224, 298]);
    expect(shortestEdgeSize(224, 300, 224)).toEqual([224, 300]);
    expect(shortestEdgeSize(500, 500, 224)).toEqual([224, 224]);
  });

  test("a constant image stays constant: pixel = (v/255 - mean) / std", () => {
    const img: PlanarImage = { width: 45, height: 30, channels: 3, data: new Float32Array(3 * 45 * 30).fill(128 / 255) };
    const px = preprocessImage(img, proc(20, 16));
    const p = proc(20, 16);
    for (let c = 0; c < 3; c++) {
      const want = (128 / 255 - p.imageMean[c]) / p.imageStd[c];
      for (let i = 0; i < 16 * 16; i++) expect(Math.abs(px[c * 256 + i] - want)).toBeLessThan(1e-6);
    }
  });
});

describe("CLIP-T and CLIP-I", () => {
  test("cosine: scale-invariant, 1 for the same vector, -1 for its negation, 0 when orthogonal", () => {
    expect(cosine([1, 2, 3], [2, 4, 6])).toBeCloseTo(1, 12);
    expect(cosine([1, 2, 3], [-1, -2, -3])).toBeCloseTo(-1, 12);
    expect(cosine([1, 0], [0, 5])).toBe(0);
    expect(cosine([3, 4], [4, 3])).toBeCloseTo(24 / 25, 12);
    expect(() => cosine([1], [1, 2])).toThrow();
  });

  test("identical images give CLIP-I 1; scores equal cosines of the reference embeddings", async () => {
    const c = clip();
    const a = testImage(40, 40, 7), b = testImage(40, 40, 8);
    const ii = await clipI(c, [a, a], [a, b]);
    expect(ii[0]).toBeCloseTo(1, 6);
    const w = weightsOf(CLIP_DIR);
    const ea = visionRef(w, Float64Array.from(preprocessImage(a, c.processor)), 1, 32, 8, DIMS);
    const eb = visionRef(w, Float64Array.from(preprocessImage(b, c.processor)), 1, 32, 8, DIMS);
    expect(Math.abs(ii[1] - cosine(ea, eb))).toBeLessThan(1e-4);
    expect(ii[1]).toBeLessThan(1 - 1e-6);
    const caption = "a red circle";
    const [t] = await clipT(c, [a], [caption]);
    const ids = c.tokenizer.encodeUntruncated(caption);
    expect(Math.abs(t - cosine(ea, textRef(w, ids, ids.length - 1, DIMS)))).toBeLessThan(1e-4);
    expect(t).toBeGreaterThanOrEqual(-1);
    expect(t).toBeLessThanOrEqual(1);
  });

  test("ClipScorer: null CLIP-T without a caption, null CLIP-I without a target", async () => {
    const s = new ClipScorer(clip());
    const a = testImage(32, 32, 9);
    const r = await s.score([{ generated: a }, { generated: a, target: a, caption: "a blue square" }]);
    expect(r[0].clipT).toBeNull();
    expect(r[0].clipI).toBeNull();
    expect(r[1].clipI!).toBeCloseTo(1, 6);
    expect(typeof r[1].clipT).toBe("number");
  });
});

describe("CLIP folder checks", () => {
  const expectUserError = (fn: () => unknown, pattern: RegExp) => {
    let err: unknown = null;
    try {
      fn();
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(UserError);
    expect((err as Error).message).toMatch(pattern);
    expect((err as Error).message.includes("\n")).toBe(false);
  };
  function copyClip(name: string, edit: (cfg: Record<string, unknown>) => void, file = "config.json"): string {
    const dir = join(root, name);
    mkdirSync(dir, { recursive: true });
    for (const f of readdirSync(CLIP_DIR)) copyFileSync(join(CLIP_DIR, f), join(dir, f));
    const cfg = JSON.parse(readFileSync(join(dir, file), "utf8"));
    edit(cfg);
    writeFileSync(join(dir, file), JSON.stringify(cfg));
    return dir;
  }

  test("an InstructPix2Pix folder is refused, naming model_index.json", () => {
    const ip2p = writeTinyCheckpoint(join(root, "ip2p")).dir;
    expectUserError(() => loadClipConfigs(ip2p), /model_index\.json.*not a CLIPModel folder/);
    expectUserError(() => loadClipConfigs(join(ip2p, "text_encoder")), /config\.json.*(model_type|vision_config)/);
  });

  test("a config without vision_config, a text-only config and a missing folder are refused", () => {
    const noVision = copyClip("no-vision", (c) => {
      delete c.vision_config;
      delete c.model_type;
    });
    expectUserError(() => loadClipConfigs(noVision), /config\.json: not a CLIPModel config: no "vision_config"/);
    const textOnly = copyClip("text-only", (c) => {
      c.model_type = "clip_text_model";
    });
    expectUserError(() => loadClipConfigs(textOnly), /config\.json: "model_type" is "clip_text_model"/);
    expectUserError(() => loadClipConfigs(join(root, "nope")), /nope: CLIP folder not found/);
  });

  test("processor/model size mismatch, unsupported resample and wrong weights are refused", () => {
    const crop = copyClip("bad-crop", (c) => {
      c.crop_size = 48;
    }, "preprocessor_config.json");
    expectUserError(() => loadClipConfigs(crop), /preprocessor_config\.json: the processor gives 48x48 but the vision model takes 32x32/);
    const resample = copyClip("bad-resample", (c) => {
      c.resample = 2;
    }, "preprocessor_config.json");
    expectUserError(() => loadClipConfigs(resample), /preprocessor_config\.json: "resample" is 2/);
    const bigger = copyClip("bad-weights", (c) => {
      (c.vision_config as Record<string, unknown>).hidden_size = 64;
    });
    expectUserError(() => loadClip(bigger), /model\.safetensors: weights do not match the model/);
  });
});
