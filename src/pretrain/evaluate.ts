// Held-out measurements of a model being pretrained (every figure on the fixed held-out split):
//   vaePsnr          reconstruction PSNR (dB) of sources and targets through the VAE's mode
//   wordDistinctness mean and max pairwise cosine of the text encoder's final states of the content
//                    words (colours and shapes), each alone; random: 0.76–0.94 (learning-notes E11)
//   t2iGrounding     teacher-forced at t = 300: each object's colour and kind tokens' cross-attention
//                    map vs that object's mask, as cos(map, mask) / cos(uniform, mask) ("own"), and
//                    against the other objects' masks ("other"); 1.0 = no better than a flat map
//   editMetrics      sampled edits (the CLI's sampler): L1 to the target inside the mask, relative to
//                    the input's L1 there, L1 outside the mask, and the paper's attention cosine
//                    (SPEC §5) next to a constant map's
import type { IP2PModels } from "../diffusion/pipeline.ts";
import { encodeImages, encodePrompts } from "../diffusion/pipeline.ts";
import { editImage, resolveLayerSpec } from "../diffusion/edit.ts";
import { type AttentionCaptureHook, setAttentionCaptureHook } from "../nn/attention.ts";
import { Tensor, noGrad } from "../tensor/index.ts";
import { scopeAsync } from "../tensor/scope.ts";
import * as ops from "../tensor/ops/index.ts";
import { cosineSimilarity } from "../rl/reward.ts";
import { psnr } from "../eval/metrics.ts";
import { SHAPE_COLORS, SHAPES } from "../data/synth.ts";
import { mixSeeds } from "../data/prng.ts";
import { imageBatch } from "./objectives.ts";
import { maskToMap, type PretrainExample } from "./data.ts";

function mean(xs: readonly number[]): number {
  return xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : NaN;
}

/** Mean PSNR (data range 1) of every source and target of `examples` through encode-mode-decode. */
export async function vaePsnr(m: IP2PModels, examples: readonly PretrainExample[], size: number): Promise<number> {
  const images = examples.flatMap((e) => [e.source, e.target]);
  const psnrs: number[] = [];
  for (let i = 0; i < images.length; i += 16) {
    const chunk = images.slice(i, i + 16);
    const out = await scopeAsync(async () => {
      const r = noGrad(() => {
        const x = imageBatch(chunk, size);
        const y = m.vae.decode(m.vae.encode(x).mean);
        return ops.clamp(ops.affine(y, 0.5, 0.5), 0, 1);
      });
      return await r.readF32();
    });
    const n = 3 * size * size;
    chunk.forEach((img, j) => psnrs.push(psnr({ width: size, height: size, data: out.subarray(j * n, (j + 1) * n) }, { width: size, height: size, data: img })));
  }
  return mean(psnrs);
}

/** Standard deviation of the VAE's latent means over `examples` (scaling_factor = 1 / this). */
export async function latentStd(m: IP2PModels, examples: readonly PretrainExample[], size: number): Promise<number> {
  let s = 0, s2 = 0, n = 0;
  for (let i = 0; i < examples.length; i += 16) {
    const chunk = examples.slice(i, i + 16).flatMap((e) => [e.source, e.target]);
    const z = await scopeAsync(async () => await encodeImages(m, imageBatch(chunk, size)).readF32());
    for (const v of z) {
      s += v;
      s2 += v * v;
      n++;
    }
  }
  const mu = s / n;
  return Math.sqrt(Math.max(s2 / n - mu * mu, 1e-12));
}

export const CONTENT_WORDS: readonly string[] = [...Object.keys(SHAPE_COLORS), ...SHAPES];

/**
 * Pairwise cosines of the content words' final hidden states (each word encoded alone, position 1):
 * raw (E11's figure) and centred (each state minus the words' mean state, so a direction all words
 * share does not count; what remains is what tells the words apart).
 */
export async function wordDistinctness(m: IP2PModels): Promise<{ mean: number; max: number; centeredMean: number }> {
  const states = await scopeAsync(async () => {
    const e = encodePrompts(m, CONTENT_WORDS).embeds; // [n, L, D]
    const [n, L, D] = e.shape;
    const all = await e.readF32();
    return Array.from({ length: n }, (_, i) => all.subarray(i * L * D + D, i * L * D + 2 * D));
  });
  const D = states[0].length;
  const centre = new Float32Array(D);
  for (const st of states) for (let k = 0; k < D; k++) centre[k] += st[k] / states.length;
  const centred = states.map((st) => st.map((v, k) => v - centre[k]));
  const cos: number[] = [];
  const cosC: number[] = [];
  for (let i = 0; i < states.length; i++) {
    for (let j = i + 1; j < states.length; j++) {
      cos.push(cosineSimilarity(states[i], states[j]));
      cosC.push(cosineSimilarity(centred[i], centred[j]));
    }
  }
  return { mean: mean(cos), max: Math.max(...cos), centeredMean: mean(cosC) };
}

/** Token positions of `words` inside the encoded `text` (first occurrence), or null. */
export function wordPositions(m: IP2PModels, text: string, words: string): number[] | null {
  const ids = m.tokenizer.encode(text).inputIds;
  const want = m.tokenizer.encodeUntruncated(words).slice(1, -1);
  for (let i = 1; i + want.length <= ids.length; i++) {
    if (want.every((w, k) => ids[i + k] === w)) return want.map((_, k) => i + k);
  }
  return null;
}

/** Records, per (sample, object), the attention of the object's tokens summed over chosen layers. */
export class ObjectMapRecorder implements AttentionCaptureHook {
  readonly sums: { b: number; cols: number[]; out: Tensor }[] = [];
  constructor(private readonly layers: Set<string>, private readonly queries: number) {}
  add(b: number, cols: number[]): number {
    this.sums.push({ b, cols, out: ops.zeros([1, this.queries], "object-map").keep() });
    return this.sums.length - 1;
  }
  request(path: string, _batch: number, queries: number): ops.AttentionCapture[] {
    if (!this.layers.has(path)) return [];
    if (queries !== this.queries) throw new Error(`object map: ${path} has ${queries} queries, expected ${this.queries}`);
    return this.sums.map((s) => ({ rows: [s.b, 1] as [number, number], cols: s.cols, out: s.out, weight: 1 / (this.layers.size * s.cols.length) }));
  }
  dispose(): void {
    for (const s of this.sums) s.out.dispose();
  }
}

export interface Grounding {
  /** Mean over objects of cos(own words' map, own mask) / cos(uniform, own mask). */
  own: number;
  /** The same map against the other objects' masks. */
  other: number;
  objects: number;
}

/**
 * Teacher-forced grounding of the text-to-image model on the targets' captions (t = 300, noise fixed
 * per held-out example). `imageChannels` false feeds zeros as the image latents (text-to-image).
 */
export async function t2iGrounding(m: IP2PModels, examples: readonly PretrainExample[], size: number, t = 300): Promise<Grounding> {
  const layers = resolveLayerSpec(m, "auto");
  const factor = m.vae.scaleFactor * layers[0].factor;
  const side = size / factor;
  const own: number[] = [];
  const other: number[] = [];
  const sf = m.config.vae.scalingFactor;
  const abar = m.scheduler.alphasCumprod[t];
  for (let i = 0; i < examples.length; i += 8) {
    const chunk = examples.slice(i, i + 8);
    const rec = new ObjectMapRecorder(new Set(layers.map((l) => l.path)), side * side);
    const entries: { ex: PretrainExample; obj: number; idx: number }[] = [];
    chunk.forEach((ex, b) => {
      ex.objects.forEach((o, k) => {
        const cols = wordPositions(m, ex.caption, o.words);
        if (cols) entries.push({ ex, obj: k, idx: rec.add(b, cols) });
      });
    });
    try {
      await scopeAsync(async () => {
        noGrad(() => {
          const z0 = ops.scale(encodeImages(m, imageBatch(chunk.map((e) => e.target), size)), sf); // [b, 4, h, w]
          const eps = ops.concat(chunk.map((_, b) => ops.randn([1, ...z0.shape.slice(1)], mixSeeds(0x4e1d, i + b))), 0);
          const zt = ops.add(ops.scale(z0, Math.sqrt(abar)), ops.scale(eps, Math.sqrt(1 - abar)));
          const embeds = encodePrompts(m, chunk.map((e) => e.caption)).embeds;
          setAttentionCaptureHook(rec);
          try {
            m.unet.forward(ops.concat([zt, ops.zerosLike(zt)], 1), chunk.map(() => t), embeds);
          } finally {
            setAttentionCaptureHook(null);
          }
        });
        for (const e of entries) {
          const map = await rec.sums[e.idx].out.readF32();
          const uniform = new Float32Array(map.length).fill(1);
          e.ex.objects.forEach((o, k) => {
            const gt = maskToMap(o.mask, size, side);
            const ratio = cosineSimilarity(map, gt) / Math.max(cosineSimilarity(uniform, gt), 1e-9);
            (k === e.obj ? own : other).push(ratio);
          });
        }
      });
    } finally {
      rec.dispose();
    }
  }
  return { own: mean(own), other: mean(other), objects: own.length };
}

export interface EditMetrics {
  /** L1(edit, target) inside the mask / L1(input, target) inside the mask (mean of per-sample ratios' numerators and denominators). */
  l1InsideRatio: number;
  l1Inside: number;
  l1Outside: number;
  attentionCos: number;
  attentionCosUniform: number;
  n: number;
}

export interface EditSampler {
  steps: number;
  textGuidance: number;
  imageGuidance: number;
}

/** Sampled edits of the held-out examples (seed = the example's index), scored against their targets. */
export async function editMetrics(m: IP2PModels, examples: readonly PretrainExample[], size: number, s: EditSampler): Promise<EditMetrics> {
  let inEdit = 0, inInput = 0, inCount = 0, outEdit = 0, outCount = 0;
  const cos: number[] = [];
  const cosU: number[] = [];
  const n = size * size;
  for (const [i, ex] of examples.entries()) {
    const r = await editImage(m, { width: size, height: size, channels: 3, data: ex.source }, ex.instruction, {
      steps: s.steps,
      guidance: { text: s.textGuidance, image: s.imageGuidance },
      eta: 0,
      seed: i,
      attentionLayers: "auto",
    });
    const out = r.image.data;
    for (let p = 0; p < n; p++) {
      let dE = 0, dI = 0;
      for (let c = 0; c < 3; c++) {
        dE += Math.abs(out[c * n + p] - ex.target[c * n + p]);
        dI += Math.abs(ex.source[c * n + p] - ex.target[c * n + p]);
      }
      if (ex.mask[p]) {
        inEdit += dE / 3;
        inInput += dI / 3;
        inCount++;
      } else {
        outEdit += dE / 3;
        outCount++;
      }
    }
    const att = r.attention!;
    const gt = maskToMap(ex.mask, size, att.width);
    cos.push(cosineSimilarity(att.map, gt));
    cosU.push(cosineSimilarity(new Float32Array(att.map.length).fill(1), gt));
  }
  return {
    l1InsideRatio: inEdit / Math.max(inInput, 1e-9),
    l1Inside: inEdit / Math.max(inCount, 1),
    l1Outside: outEdit / Math.max(outCount, 1),
    attentionCos: mean(cos),
    attentionCosUniform: mean(cosU),
    n: examples.length,
  };
}
