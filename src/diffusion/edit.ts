// One instruction edit of one image, end to end (what `rl4pix edit` and the evaluation runner call).
import { Tensor } from "../tensor/tensor.ts";
import { keep, scopeAsync } from "../tensor/scope.ts";
import type { PlanarImage, RgbImage } from "../io/image.ts";
import { writeSafetensors } from "../io/safetensors.ts";
import { UserError } from "../errors.ts";
import {
  decodeLatents,
  disposeTrajectory,
  encodeImages,
  encodePrompts,
  type Guidance,
  guidedConditioning,
  type IP2PModels,
  sampleChain,
  type Trajectory,
} from "./pipeline.ts";
import { editSize, imageToTensor, tensorToImage } from "./images.ts";
import { AttentionMapRecorder, type CrossAttentionLayer, selectCrossAttentionLayers, crossAttentionLayers, defaultLayerFactor } from "./attention_store.ts";

export interface EditOptions {
  steps: number;
  guidance: Guidance;
  eta: number;
  seed: number;
  /** Scale so the longer side is this many pixels before rounding to the VAE factor. */
  resolution?: number;
  /** Initial noise [1, 4, h, w] (overrides the seed's draw). */
  latents?: Tensor;
  /** Record the instruction's attention map with these layers ("auto": `defaultLayerFactor`'s, as the reward's default). */
  attentionLayers?: string;
  onStep?: (i: number, total: number) => void;
}

export interface EditResult {
  image: PlanarImage;
  /** The sampled chain (caller disposes with disposeTrajectory) when kept. */
  trajectory: Trajectory | null;
  attention: { map: Float32Array; width: number; height: number; layers: string[] } | null;
  /** The instruction was longer than 77 tokens and was cut. */
  truncated: boolean;
  latentShape: number[];
}

/** "auto" → the default map layers (`defaultLayerFactor`: latent/4, else the closest size), as the reward's default. */
export function resolveLayerSpec(models: IP2PModels, spec: string): CrossAttentionLayer[] {
  if (spec !== "auto") return selectCrossAttentionLayers(models.unet, spec);
  const target = defaultLayerFactor(models.unet);
  return crossAttentionLayers(models.unet).filter((l) => l.factor === target);
}

export async function editImage(models: IP2PModels, input: RgbImage | PlanarImage, instruction: string, o: EditOptions, keepTrajectory = false): Promise<EditResult> {
  const factor = models.vae.scaleFactor;
  const [W, H] = editSize(input.width, input.height, factor, o.resolution);
  const shape = [1, models.config.unet.outChannels, H / factor, W / factor];
  if (o.latents && o.latents.shape.join(",") !== shape.join(",")) {
    throw new UserError(`--latents: tensor 'latents' has shape [${o.latents.shape.join(",")}], this image needs [${shape.join(",")}]`);
  }
  return await scopeAsync(async () => {
    const prompts = encodePrompts(models, [instruction]);
    const imageLatents = encodeImages(models, imageToTensor(input, W, H));
    const cond = guidedConditioning(models, prompts.embeds, imageLatents);
    let recorder: AttentionMapRecorder | null = null;
    let layers: CrossAttentionLayer[] = [];
    if (o.attentionLayers) {
      layers = resolveLayerSpec(models, o.attentionLayers);
      const f = layers[0].factor;
      recorder = new AttentionMapRecorder(layers, prompts.tokenCounts, Math.ceil(shape[2] / f), Math.ceil(shape[3] / f)).attach();
    }
    try {
      const traj = sampleChain(models, cond, shape, {
        steps: o.steps,
        guidance: o.guidance,
        eta: o.eta,
        seeds: [o.seed],
        initialLatents: o.latents,
        onStep: (i, n) => {
          recorder?.step();
          o.onStep?.(i, n);
        },
      });
      const decoded = decodeLatents(models, traj.latents[traj.latents.length - 1]);
      const image = await tensorToImage(decoded);
      let attention: EditResult["attention"] = null;
      if (recorder) {
        const [map] = await recorder.maps();
        attention = { map, width: recorder.mapW, height: recorder.mapH, layers: layers.map((l) => l.path) };
      }
      if (keepTrajectory) {
        for (const t of traj.latents) keep(t);
        for (const t of traj.logProbs ?? []) keep(t);
      } else {
        disposeTrajectory(traj);
      }
      return { image, trajectory: keepTrajectory ? traj : null, attention, truncated: prompts.truncated[0], latentShape: shape };
    } finally {
      recorder?.dispose();
    }
  });
}

/**
 * Write a sampled chain as safetensors: `latents` [T+1, B, 4, h, w] f32, `timesteps` [T] i64,
 * `log_probs` [T, B] f32 (when sampled with eta > 0).
 */
export async function writeTrajectory(path: string, traj: Trajectory, meta: Record<string, string> = {}): Promise<void> {
  const T = traj.timesteps.length;
  const shape = traj.latents[0].shape;
  const per = traj.latents[0].size;
  const lat = new Float32Array((T + 1) * per);
  for (let i = 0; i <= T; i++) lat.set(await traj.latents[i].readF32(), i * per);
  const tensors: Record<string, { dtype: "F32" | "I64"; shape: number[]; data: Float32Array | Int32Array }> = {
    latents: { dtype: "F32", shape: [T + 1, ...shape], data: lat },
    timesteps: { dtype: "I64", shape: [T], data: Int32Array.from(traj.timesteps) },
  };
  if (traj.logProbs) {
    const B = shape[0];
    const lp = new Float32Array(T * B);
    for (let i = 0; i < T; i++) lp.set(await traj.logProbs[i].readF32(), i * B);
    tensors.log_probs = { dtype: "F32", shape: [T, B], data: lp };
  }
  writeSafetensors(path, tensors, { format: "pt", ...meta });
}
