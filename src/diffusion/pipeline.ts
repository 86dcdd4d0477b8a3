// InstructPix2Pix on our runtime: load a diffusers folder, encode prompts and images, run the guided
// DDIM chain (the DDPO MDP, SPEC §3–§4) and decode. The 3-branch batch is ordered text /
// image-only / unconditional, each of B rows; the unconditional branch has a zero image latent and
// the empty prompt.
import { join } from "node:path";
import { Tensor } from "../tensor/tensor.ts";
import { gpu } from "../gpu/device.ts";
import * as ops from "../tensor/ops/index.ts";
import { noGrad } from "../tensor/autograd.ts";
import { scope } from "../tensor/scope.ts";
import { loadPipelineConfig, type PipelineConfig, resolveWeightFiles } from "../io/diffusers.ts";
import { ClipTokenizer } from "../text/clip_tokenizer.ts";
import { UNet2DConditionModel } from "../nn/unet.ts";
import { AutoencoderKL } from "../nn/vae.ts";
import { CLIPTextModel } from "../nn/clip_text.ts";
import { loadWeights } from "../nn/load.ts";
import { DDIMScheduler } from "./ddim.ts";

export interface IP2PModels {
  config: PipelineConfig;
  unet: UNet2DConditionModel;
  vae: AutoencoderKL;
  textEncoder: CLIPTextModel;
  tokenizer: ClipTokenizer;
  scheduler: DDIMScheduler;
}

export interface LoadModelOptions {
  /**
   * diffusers weight variant, e.g. "fp16": its weights are kept f16 on the GPU, and where the adapter
   * has shader-f16 the UNet, the VAE and the text encoder compute on f16 activations (as
   * torch_dtype=float16); elsewhere in f32.
   */
  variant?: string;
  /**
   * The training config's `mixed_precision`. "fp16" stores the frozen UNet, VAE and text-encoder
   * matrices as f16 whatever the file's dtype and, where the adapter has shader-f16, runs all three
   * on f16 activations (accelerate's fp16 with ddpo-pytorch's f16 inference dtype); trainable LoRA
   * weights stay f32.
   */
  mixedPrecision?: "no" | "fp16";
}

/** Build the module trees from a diffusers folder and load their weights (strict). */
export function loadIP2P(dir: string, opts: LoadModelOptions = {}): IP2PModels {
  const config = loadPipelineConfig(dir);
  const mixed = opts.mixedPrecision === "fp16";
  const keepF16 = opts.variant === "fp16" || mixed;
  const castF16 = mixed;
  const unet = new UNet2DConditionModel(config.unet);
  loadWeights(unet, resolveWeightFiles(join(dir, "unet"), { variant: opts.variant }), { keepF16, castF16 });
  const vae = new AutoencoderKL(config.vae);
  loadWeights(vae, resolveWeightFiles(join(dir, "vae"), { variant: variantIfPresent(join(dir, "vae"), opts.variant) }), { keepF16, castF16 });
  const textEncoder = new CLIPTextModel(config.textEncoder);
  loadWeights(textEncoder, resolveWeightFiles(join(dir, "text_encoder"), { variant: variantIfPresent(join(dir, "text_encoder"), opts.variant) }), {
    keepF16,
    castF16,
    ignore: CLIPTextModel.IGNORED_KEYS,
  });
  const tokenizer = ClipTokenizer.fromDir(config.tokenizer.dir);
  const scheduler = new DDIMScheduler(config.scheduler);
  const models = { config, unet, vae, textEncoder, tokenizer, scheduler };
  if (keepF16 && gpu().hasF16) setActivationDtype(models, "f16");
  return models;
}

/**
 * Run the UNet, the VAE and the text encoder on `dtype` activations ("f16" needs the adapter's
 * shader-f16). What they take and give (latents, images, prompt embeddings, noise predictions,
 * captured attention maps) stays f32 either way.
 */
export function setActivationDtype(m: Pick<IP2PModels, "unet" | "vae" | "textEncoder">, dtype: "f32" | "f16"): void {
  if (dtype === "f16" && !gpu().hasF16) throw new Error("f16 activations need the adapter's shader-f16 feature");
  m.unet.activationDtype = dtype;
  m.vae.activationDtype = dtype;
  m.textEncoder.activationDtype = dtype;
}

/** The variant for a component when its files exist, else the plain weights (as diffusers falls back). */
export function variantIfPresent(componentDir: string, variant?: string): string | undefined {
  if (!variant) return undefined;
  try {
    resolveWeightFiles(componentDir, { variant });
    return variant;
  } catch {
    return undefined;
  }
}

export function disposeModels(m: IP2PModels): void {
  m.unet.disposeParameters();
  m.vae.disposeParameters();
  m.textEncoder.disposeParameters();
}

export interface EncodedPrompts {
  /** prompt_embeds [n, 77, D]. */
  embeds: Tensor;
  /** Token ids, n x 77. */
  ids: Int32Array;
  /** Real instruction tokens per prompt (without BOS/EOS/padding). */
  tokenCounts: number[];
  /** Prompts that were cut to 77 tokens. */
  truncated: boolean[];
}

export function encodePrompts(m: IP2PModels, prompts: readonly string[]): EncodedPrompts {
  const n = prompts.length;
  const L = m.tokenizer.modelMaxLength;
  const ids = new Int32Array(n * L);
  const tokenCounts: number[] = [];
  const truncated: boolean[] = [];
  prompts.forEach((p, i) => {
    const enc = m.tokenizer.encode(p);
    ids.set(enc.inputIds, i * L);
    const real = enc.attentionMask.reduce((a, b) => a + b, 0) - 2; // minus BOS and EOS
    tokenCounts.push(Math.max(real, 0));
    truncated.push(enc.untruncatedLength > L);
  });
  const embeds = noGrad(() => m.textEncoder.forward(ids, n).lastHiddenState);
  return { embeds, ids, tokenCounts, truncated };
}

/** images [B, 3, H, W] in [-1, 1] -> image latents (the distribution's mode, unscaled) [B, 4, h, w]. */
export function encodeImages(m: IP2PModels, images: Tensor): Tensor {
  return noGrad(() => scope(() => m.vae.encode(images).mean));
}

/** latents [B, 4, h, w] -> images [B, 3, H, W] in [0, 1]. */
export function decodeLatents(m: IP2PModels, latents: Tensor): Tensor {
  return noGrad(() =>
    scope(() => {
      const x = m.vae.decode(ops.scale(latents, 1 / m.config.vae.scalingFactor));
      return ops.clamp(ops.affine(x, 0.5, 0.5), 0, 1);
    })
  );
}

/** The conditioning of B samples, expanded to the 3-branch batch. */
export interface GuidedConditioning {
  /** [3B, 77, D]: B instruction embeddings, then 2B empty-prompt embeddings. */
  embeds: Tensor;
  /** [3B, 4, h, w]: B image latents twice, then B zeros. */
  imageLatents: Tensor;
  batch: number;
}

export function guidedConditioning(m: IP2PModels, prompt: Tensor, imageLatents: Tensor): GuidedConditioning {
  const B = prompt.shape[0];
  return scope(() => {
    const empty = encodePrompts(m, [""]).embeds; // [1, 77, D]
    const emptyB = ops.concat(new Array(2 * B).fill(empty), 0); // [2B, 77, D]
    const embeds = ops.concat([prompt, emptyB], 0);
    const zeros = ops.zeros(imageLatents.shape);
    const lat = ops.concat([imageLatents, imageLatents, zeros], 0);
    return { embeds, imageLatents: lat, batch: B };
  });
}

export interface Guidance {
  text: number;
  image: number;
}

/**
 * The guided noise prediction ε̂ = ε_u + s_T (ε_text − ε_img) + s_I (ε_img − ε_u) for latents
 * [B, 4, h, w] at per-sample timesteps; with `cfg` false only the text branch is evaluated.
 */
export function guidedNoise(m: IP2PModels, latents: Tensor, timesteps: number[], cond: GuidedConditioning, g: Guidance, cfg = true): Tensor {
  const B = cond.batch;
  if (!cfg) {
    const emb = ops.slice(cond.embeds, 0, 0, B);
    const img = ops.slice(cond.imageLatents, 0, 0, B);
    return m.unet.forward(ops.concat([latents, img], 1), timesteps, emb);
  }
  const x3 = ops.concat([latents, latents, latents], 0); // [3B, 4, h, w]
  const input = ops.concat([x3, cond.imageLatents], 1); // [3B, 8, h, w]
  const eps = m.unet.forward(input, [...timesteps, ...timesteps, ...timesteps], cond.embeds); // [3B, 4, h, w]
  const [eT, eI, eU] = ops.chunk(eps, 3, 0);
  // eU + sT (eT - eI) + sI (eI - eU)
  return ops.add(ops.add(eU, ops.scale(ops.sub(eT, eI), g.text)), ops.scale(ops.sub(eI, eU), g.image));
}

export interface SampleOptions {
  steps: number;
  guidance: Guidance;
  eta: number;
  /** One seed per sample: initial noise and step noise come from (seed, position) streams. */
  seeds: readonly (number | bigint)[];
  /** Seeds of the initial noise x_T only (default `seeds`): equal entries start samples from the same x_T. */
  initialSeeds?: readonly (number | bigint)[];
  /**
   * ±1 per sample, multiplying its drawn x_T / its noise at step i (0 = the first step): two samples
   * with equal seeds and opposite signs are antithetic, each still an exact draw of the chain.
   */
  initialSigns?: readonly number[];
  stepSigns?: (i: number) => readonly number[];
  /** Initial noise [B, 4, h, w] instead of drawing it. */
  initialLatents?: Tensor;
  /** Called after every step (progress, attention bookkeeping). */
  onStep?: (i: number, total: number) => void;
}

export interface Trajectory {
  /** x_T … x_0: steps + 1 tensors [B, 4, h, w]. */
  latents: Tensor[];
  timesteps: number[];
  /** log π(x_{t-1} | x_t) per step, [B] each (only when eta > 0). */
  logProbs: Tensor[] | null;
}

function perSampleNoise(shape: readonly number[], seeds: readonly (number | bigint)[], offset: number, signs?: readonly number[]): Tensor {
  const one = [1, ...shape.slice(1)];
  const n = one.reduce((a, b) => a * b, 1);
  const parts = seeds.map((s, i) => {
    const z = ops.randn(one, s, BigInt(offset) * BigInt(n));
    return signs && signs[i] !== 1 ? ops.scale(z, signs[i]) : z;
  });
  return parts.length === 1 ? parts[0] : ops.concat(parts, 0);
}

/** Run the guided DDIM chain without gradients. `shape` is the latent shape [B, 4, h, w]. */
export function sampleChain(m: IP2PModels, cond: GuidedConditioning, shape: readonly number[], o: SampleOptions): Trajectory {
  if (o.seeds.length !== shape[0]) throw new Error(`sample: ${o.seeds.length} seeds for batch ${shape[0]}`);
  if (o.initialSeeds && o.initialSeeds.length !== shape[0]) throw new Error(`sample: ${o.initialSeeds.length} initial seeds for batch ${shape[0]}`);
  const checkSigns = (signs: readonly number[] | undefined) => {
    if (signs && (signs.length !== shape[0] || signs.some((v) => v !== 1 && v !== -1))) throw new Error(`sample: noise signs must be ±1, one per sample`);
    return signs;
  };
  const ts = m.scheduler.setTimesteps(o.steps);
  return noGrad(() => {
    let x = o.initialLatents ? o.initialLatents.detach() : perSampleNoise(shape, o.initialSeeds ?? o.seeds, 0, checkSigns(o.initialSigns));
    x.keep();
    const latents: Tensor[] = [x];
    const logProbs: Tensor[] = [];
    ts.forEach((t, i) => {
      const next = scope(() => {
        const eps = guidedNoise(m, x, new Array(shape[0]).fill(t), cond, o.guidance);
        const noise = o.eta > 0 ? perSampleNoise(shape, o.seeds, i + 1, checkSigns(o.stepSigns?.(i))) : undefined;
        const r = m.scheduler.step(eps, t, x, { eta: o.eta, noise });
        return { prev: r.prevSample, lp: r.logProb };
      });
      x = next.prev.keep();
      latents.push(x);
      if (next.lp) logProbs.push(next.lp.keep());
      o.onStep?.(i, ts.length);
    });
    return { latents, timesteps: ts, logProbs: o.eta > 0 ? logProbs : null };
  });
}

export function disposeTrajectory(t: Trajectory): void {
  for (const x of t.latents) x.dispose();
  for (const l of t.logProbs ?? []) l.dispose();
}

/**
 * Explicit warm-up: run one guided UNet step, a VAE encode and a decode on zeros so every kernel the
 * sampling loop uses is compiled before the first real (timed) call.
 */
export async function warmup(m: IP2PModels, latentShape: readonly number[]): Promise<void> {
  const [B, , h, w] = latentShape;
  const f = m.vae.scaleFactor;
  noGrad(() =>
    scope(() => {
      const prompts = encodePrompts(m, new Array(B).fill(""));
      const lat = encodeImages(m, ops.zeros([B, 3, h * f, w * f]));
      const cond = guidedConditioning(m, prompts.embeds, lat);
      guidedNoise(m, ops.zeros(latentShape), new Array(B).fill(1), cond, { text: 1, image: 1 });
      decodeLatents(m, ops.zeros(latentShape));
    })
  );
  await gpu().sync();
}
