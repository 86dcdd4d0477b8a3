// The three pretraining objectives, each a pure function of (seed, step): the batch is examples
// step*B … step*B+B-1 of the training stream, and noise and dropout come from streams keyed by
// (seed, stage, step).
//   vae     autoencoder: z = mean + exp(logvar/2) ε, loss = |x − D(z)| + (x − D(z))² + β KL(q(z|x) ‖ N(0, 1))
//   decoder the decoder alone (and post_quant_conv) on the frozen encoder's mode, loss = (x − D(μ))²:
//           as Stable Diffusion's VAE decoder was fine-tuned (ft-MSE) after its diffusion models
//           were trained, since the latents the UNet learns do not change
//   t2i     text-to-image on the target scene's caption (caption dropout), the image channels of the
//           UNet input held at zero: exactly a text-to-image UNet whose conv_in has only 4 input
//           channels (their weights are zeroed before this stage and get no gradient)
//   editor  InstructPix2Pix: noise the target's latents, condition on the source's latents and the
//           instruction; with 5 % each drop the instruction only, the image only, or both
import type { IP2PModels } from "../diffusion/pipeline.ts";
import { encodeImages, encodePrompts } from "../diffusion/pipeline.ts";
import { Tensor, noGrad } from "../tensor/index.ts";
import * as ops from "../tensor/ops/index.ts";
import { mixSeeds, Prng } from "../data/prng.ts";
import { type PretrainExample, trainExample } from "./data.ts";

export type StageName = "vae" | "decoder" | "t2i" | "editor";
const STAGE_NO: Record<StageName, number> = { vae: 1, t2i: 2, editor: 3, decoder: 4 };

/** Host RNG and GPU noise seed of one step of one stage. */
export function stepStreams(seed: number, stage: StageName, step: number): { rng: Prng; noiseSeed: number } {
  const base = mixSeeds(mixSeeds(seed, STAGE_NO[stage]), step);
  return { rng: new Prng(base), noiseSeed: mixSeeds(base, 0x6e6f6973) };
}

export function batchOf(step: number, batch: number, size: number): PretrainExample[] {
  return Array.from({ length: batch }, (_, j) => trainExample(step * batch + j, size));
}

/** images [B, 3, S, S] in [-1, 1] from planar RGB in [0, 1]. */
export function imageBatch(images: readonly Float32Array[], size: number): Tensor {
  const data = new Float32Array(images.length * 3 * size * size);
  images.forEach((img, i) => data.set(img, i * img.length));
  return ops.affine(Tensor.from(data, [images.length, 3, size, size], "f32", "pretrain_images"), 2, -1);
}

/** Prompt embeddings [n, L, D] recorded for backward into the text encoder. */
export function promptEmbedsWithGrad(m: IP2PModels, prompts: readonly string[]): Tensor {
  const L = m.tokenizer.modelMaxLength;
  const ids = new Int32Array(prompts.length * L);
  prompts.forEach((p, i) => ids.set(m.tokenizer.encode(p).inputIds, i * L));
  return m.textEncoder.forward(ids, prompts.length).lastHiddenState;
}

export interface VaeObjective {
  /** Weight of the KL term (on per-element means). */
  klWeight: number;
}

/** The VAE loss of one step: even batch rows are targets, odd rows sources. */
export function vaeLoss(m: IP2PModels, seed: number, step: number, batch: number, size: number, o: VaeObjective): Tensor {
  const { noiseSeed } = stepStreams(seed, "vae", step);
  const examples = batchOf(step, batch, size);
  const x = imageBatch(examples.map((e, j) => (j % 2 === 0 ? e.target : e.source)), size); // [B, 3, S, S]
  const post = m.vae.encode(x);
  const eps = ops.randn(post.mean.shape, noiseSeed); // [B, 4, h, w]
  const z = ops.add(post.mean, ops.mul(ops.exp(ops.scale(post.logvar, 0.5)), eps));
  const recon = m.vae.decode(z); // [B, 3, S, S]
  const diff = ops.sub(recon, x);
  const rec = ops.add(ops.mean(ops.abs(diff)), ops.mean(ops.square(diff)));
  // KL(N(mu, s^2) || N(0, 1)) per element = (mu^2 + s^2 - 1 - log s^2) / 2
  const kl = ops.scale(ops.mean(ops.sub(ops.add(ops.square(post.mean), ops.exp(post.logvar)), ops.addScalar(post.logvar, 1))), 0.5);
  return ops.add(rec, ops.scale(kl, o.klWeight));
}

/** The decoder fine-tuning loss of one step: mean squared error of D(μ(x)), the encoder frozen. */
export function decoderLoss(m: IP2PModels, step: number, batch: number, size: number): Tensor {
  // the training stream as every stage reads it (even rows targets, odd rows sources); no noise:
  // the UNet learns the encoder's mode, and the decoder is asked to invert exactly that
  const examples = batchOf(step, batch, size);
  const x = imageBatch(examples.map((e, j) => (j % 2 === 0 ? e.target : e.source)), size); // [B, 3, S, S]
  const z = encodeImages(m, x); // [B, 4, h, w], no grad
  const recon = m.vae.decode(z); // [B, 3, S, S]
  return mse(recon, x);
}

function noisedLatents(m: IP2PModels, z0: Tensor, rng: Prng, noiseSeed: number): { zt: Tensor; eps: Tensor; ts: number[] } {
  const B = z0.shape[0];
  const abar = m.scheduler.alphasCumprod;
  const ts = Array.from({ length: B }, () => Math.min(abar.length - 1, Math.floor(rng.next() * abar.length)));
  const perSample = (f: (t: number) => number) => Tensor.from(ts.map(f), [B, 1, 1, 1], "f32");
  const eps = ops.randn(z0.shape, noiseSeed); // [B, 4, h, w]
  const zt = ops.add(ops.mul(z0, perSample((t) => Math.sqrt(abar[t]))), ops.mul(eps, perSample((t) => Math.sqrt(1 - abar[t]))));
  return { zt, eps, ts };
}

/** The targets' latents as the UNet learns them: the VAE's mode times the scaling factor, [B, 4, h, w]. */
function targetLatents(m: IP2PModels, examples: readonly PretrainExample[], size: number): Tensor {
  return noGrad(() => ops.scale(encodeImages(m, imageBatch(examples.map((e) => e.target), size)), m.config.vae.scalingFactor));
}

function mse(a: Tensor, b: Tensor): Tensor {
  const d = ops.sub(a, b);
  return ops.mean(ops.mul(d, d));
}

/** mean_b w_b · mean((a_b − b_b)²) for per-sample weights w [B]. */
function weightedMse(a: Tensor, b: Tensor, w: readonly number[]): Tensor {
  const d = ops.sub(a, b);
  const wt = Tensor.from(w, [w.length, 1, 1, 1], "f32"); // [B, 1, 1, 1]
  return ops.mean(ops.mul(ops.mul(d, d), wt));
}

export interface T2IObjective {
  /** Probability of training a caption as the empty prompt (classifier-free guidance). */
  captionDropout: number;
}

/** Text-to-image loss on the targets' captions; the text encoder trains with the UNet. */
export function t2iLoss(m: IP2PModels, seed: number, step: number, batch: number, size: number, o: T2IObjective): Tensor {
  const { rng, noiseSeed } = stepStreams(seed, "t2i", step);
  const examples = batchOf(step, batch, size);
  const z0 = targetLatents(m, examples, size); // [B, 4, h, w]
  const prompts = examples.map((e) => (rng.next() < o.captionDropout ? "" : e.caption));
  const { zt, eps, ts } = noisedLatents(m, z0, rng, noiseSeed);
  const embeds = promptEmbedsWithGrad(m, prompts); // [B, L, D]
  const pred = m.unet.forward(ops.concat([zt, ops.zerosLike(zt)], 1), ts, embeds); // [B, 4, h, w]
  return mse(pred, eps);
}

export interface EditorObjective {
  /** Probability of each of: instruction dropped, image dropped, both dropped (IP2P: 0.05). */
  dropout: number;
  /**
   * Timestep weighting of the noise-prediction loss: "eps" (plain, uniform) or "v" (the
   * v-prediction loss written on the noise: weight 1/ᾱ_t, divided by its mean over t so the loss
   * keeps its scale). "v" makes the noisiest steps, where the noise loss hardly depends on z0 but
   * sampling decides the layout, count as much as x0's error there.
   */
  weighting?: "eps" | "v";
}

/** Per-timestep loss weights of `weighting` over t = 0 … T-1 (mean 1). */
export function timestepWeights(alphasCumprod: Float64Array | Float32Array | readonly number[], weighting: "eps" | "v"): Float64Array {
  const T = alphasCumprod.length;
  const w = new Float64Array(T);
  for (let t = 0; t < T; t++) w[t] = weighting === "v" ? 1 / alphasCumprod[t] : 1;
  const mean = w.reduce((a, b) => a + b, 0) / T;
  return w.map((x) => x / mean);
}

/** InstructPix2Pix loss; the text encoder is frozen (as IP2P keeps CLIP frozen). */
export function editorLoss(m: IP2PModels, seed: number, step: number, batch: number, size: number, o: EditorObjective): Tensor {
  const { rng, noiseSeed } = stepStreams(seed, "editor", step);
  const examples = batchOf(step, batch, size);
  const z0 = targetLatents(m, examples, size); // [B, 4, h, w]
  const src = noGrad(() => encodeImages(m, imageBatch(examples.map((e) => e.source), size))); // [B, 4, h, w], unscaled
  const drops = examples.map(() => {
    const r = rng.next();
    return { text: r < o.dropout || (r >= 2 * o.dropout && r < 3 * o.dropout), image: r >= o.dropout && r < 3 * o.dropout };
  });
  const prompts = examples.map((e, i) => (drops[i].text ? "" : e.instruction));
  const { zt, eps, ts } = noisedLatents(m, z0, rng, noiseSeed);
  const embeds = encodePrompts(m, prompts).embeds; // [B, L, D]
  const keep = Tensor.from(drops.map((d) => (d.image ? 0 : 1)), [examples.length, 1, 1, 1], "f32");
  const pred = m.unet.forward(ops.concat([zt, ops.mul(src, keep)], 1), ts, embeds); // [B, 4, h, w]
  if ((o.weighting ?? "eps") === "eps") return mse(pred, eps);
  const w = timestepWeights(m.scheduler.alphasCumprod, o.weighting!);
  return weightedMse(pred, eps, ts.map((t) => w[t]));
}
