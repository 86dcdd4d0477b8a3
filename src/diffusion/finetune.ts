// Supervised InstructPix2Pix fine-tuning of every UNet weight (the objective IP2P itself was trained
// with): for an edit (source, instruction, target), noise the target's latents at a random timestep
// and regress the noise from [noisy target latents | source image latents] and the instruction.
//   z0 = vae.encode(target).mode * scaling_factor      c_I = vae.encode(source).mode (unscaled)
//   z_t = sqrt(abar_t) z0 + sqrt(1 - abar_t) eps         loss = mean((unet([z_t, c_I], t, c_T) - eps)^2)
// With probability `dropText` the instruction is replaced by the empty prompt and with `dropImage`
// the image latents by zeros (IP2P's conditioning dropout, so classifier-free guidance works).
// Used by `rl4pix pretrain` to give the embedded tiny model a trained starting point on synthetic
// edits: PPO with the attention reward needs a model whose instruction tokens already attend to
// the pixels they name (docs/learning-notes.md).
import type { IP2PModels } from "./pipeline.ts";
import { encodeImages, encodePrompts } from "./pipeline.ts";
import { Tensor, backward, clearTape, noGrad, scope } from "../tensor/index.ts";
import { scopeAsync } from "../tensor/scope.ts";
import * as ops from "../tensor/ops/index.ts";
import { adamW, clipGradNorm, createAdamWState, type AdamWState } from "../tensor/ops/optim.ts";
import { Prng } from "../data/prng.ts";

/** One training example: planar RGB images in [0, 1] of `size` x `size`, and the instruction. */
export interface FinetuneExample {
  source: Float32Array;
  target: Float32Array;
  instruction: string;
}

export interface FinetuneOptions {
  steps: number;
  batch: number;
  /** Image side in pixels. */
  size: number;
  learningRate: number;
  seed: number;
  /** Example `i` of the stream (called with 0, 1, 2, …; e.g. synthSample of index i). */
  example: (i: number) => FinetuneExample;
  dropText?: number;
  dropImage?: number;
  /** Train the text encoder too (IP2P keeps it frozen; a random tiny encoder keeps words too alike). */
  trainTextEncoder?: boolean;
  maxGradNorm?: number;
  /** Polled after every step: true ends the run early. */
  stop?: () => boolean;
  /** Called after every step with the step's loss. */
  onStep?: (step: number, loss: number) => void;
}

/** Make every UNet weight trainable; returns them (declaration order). */
export function trainableUnet(m: IP2PModels): Tensor[] {
  return m.unet.namedParameters().map(([, p]) => {
    if (p.t.dtype !== "f32") throw new Error(`finetune: ${p.path} is ${p.t.dtype}; full fine-tuning needs f32 weights`);
    return p.t.requireGrad();
  });
}

/** images [B, 3, S, S] in [-1, 1] from planar RGB in [0, 1]. */
function imageBatch(images: readonly Float32Array[], size: number): Tensor {
  const data = new Float32Array(images.length * 3 * size * size);
  images.forEach((img, i) => data.set(img, i * img.length));
  return ops.affine(Tensor.from(data, [images.length, 3, size, size], "f32", "finetune_images"), 2, -1);
}

/** Make every text-encoder weight trainable; returns them. */
export function trainableTextEncoder(m: IP2PModels): Tensor[] {
  return m.textEncoder.namedParameters().map(([, p]) => p.t.requireGrad());
}

/** Prompt embeddings [n, 77, D] recorded for backward (encodePrompts runs without gradients). */
function promptEmbedsWithGrad(m: IP2PModels, prompts: readonly string[]): Tensor {
  const L = m.tokenizer.modelMaxLength;
  const ids = new Int32Array(prompts.length * L);
  prompts.forEach((p, i) => ids.set(m.tokenizer.encode(p).inputIds, i * L));
  return m.textEncoder.forward(ids, prompts.length).lastHiddenState;
}

/** The loss of one batch (recorded for backward). */
export function finetuneLoss(m: IP2PModels, batch: readonly FinetuneExample[], size: number, rng: Prng, noiseSeed: number, drop: { text: number; image: number }, textGrad = false): Tensor {
  const B = batch.length;
  const sf = m.config.vae.scalingFactor;
  const abar = m.scheduler.alphasCumprod;
  const z0 = noGrad(() => ops.scale(encodeImages(m, imageBatch(batch.map((e) => e.target), size)), sf)); // [B, 4, h, w]
  const srcLat = noGrad(() => encodeImages(m, imageBatch(batch.map((e) => e.source), size))); // [B, 4, h, w]
  const keepImage = batch.map(() => (rng.next() < drop.image ? 0 : 1));
  const prompts = batch.map((e) => (rng.next() < drop.text ? "" : e.instruction));
  const embeds = textGrad ? promptEmbedsWithGrad(m, prompts) : encodePrompts(m, prompts).embeds; // [B, 77, D]
  const ts = batch.map(() => Math.min(abar.length - 1, Math.floor(rng.next() * abar.length)));
  const perSample = (f: (t: number, i: number) => number) => Tensor.from(ts.map(f), [B, 1, 1, 1], "f32");
  const eps = ops.randn(z0.shape, noiseSeed); // [B, 4, h, w]
  const zt = ops.add(ops.mul(z0, perSample((t) => Math.sqrt(abar[t]))), ops.mul(eps, perSample((t) => Math.sqrt(1 - abar[t]))));
  const cond = ops.mul(srcLat, perSample((_, i) => keepImage[i]));
  const pred = m.unet.forward(ops.concat([zt, cond], 1), ts, embeds); // [B, 4, h, w]
  const diff = ops.sub(pred, eps);
  return ops.mean(ops.mul(diff, diff));
}

/** Run the fine-tuning; returns the per-step losses. The UNet's weights are updated in place. */
export async function finetuneUnet(m: IP2PModels, o: FinetuneOptions): Promise<number[]> {
  const params = [...trainableUnet(m), ...(o.trainTextEncoder ? trainableTextEncoder(m) : [])];
  const state: AdamWState = createAdamWState();
  const rng = new Prng(o.seed);
  const drop = { text: o.dropText ?? 0.05, image: o.dropImage ?? 0.05 };
  const losses: number[] = [];
  let next = 0;
  for (let step = 0; step < o.steps; step++) {
    const batch = Array.from({ length: o.batch }, () => o.example(next++));
    const loss = await scopeAsync(async () => {
      const l = finetuneLoss(m, batch, o.size, rng, o.seed * 1_000_003 + step, drop, o.trainTextEncoder);
      backward(l);
      const v = await l.item();
      scope(() => {
        clipGradNorm(params, o.maxGradNorm ?? 1);
        adamW(params, state, { lr: o.learningRate, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 1e-2 });
      });
      for (const p of params) {
        p.grad?.dispose();
        p.grad = null;
      }
      return v;
    });
    clearTape();
    if (!Number.isFinite(loss)) throw new Error(`finetune: the loss is ${loss} at step ${step}`);
    losses.push(loss);
    o.onStep?.(step, loss);
    if (o.stop?.()) break;
  }
  for (const p of params) p.requireGrad(false);
  return losses;
}
