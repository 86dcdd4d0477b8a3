// The quantity training improves, measured on its own: the mean attention-cosine reward of a fixed
// set of samples under the training sampler (eta, guidance, steps), over a few fixed seeds each.
import type { IP2PModels } from "../diffusion/pipeline.ts";
import { editImage } from "../diffusion/edit.ts";
import type { Config } from "./config.ts";
import type { CrossAttentionLayer } from "../diffusion/attention_store.ts";
import type { PreparedSample } from "./prepare.ts";
import { instructReward } from "./reward.ts";

export interface AttentionEval {
  /** Mean cos(a_pred, a_gt). */
  cos: number;
  /** Mean full reward (cos + alpha * L_clip). */
  reward: number;
  /** Standard error of the mean cosine. */
  cosStderr: number;
  n: number;
  /** cos per (sample, seed), samples outer: paired comparisons use these. */
  values: number[];
  /** The full reward per (sample, seed), in the order of `values`. */
  rewardValues: number[];
  /** MAE(edit, input) per (sample, seed), in the order of `values`. */
  maeValues: number[];
}

export async function evaluateAttention(models: IP2PModels, cfg: Config, layers: readonly CrossAttentionLayer[], samples: readonly PreparedSample[], seeds: readonly number[]): Promise<AttentionEval> {
  const cos: number[] = [];
  const rewards: number[] = [];
  const maes: number[] = [];
  for (const s of samples) {
    for (const seed of seeds) {
      const input = { width: s.size, height: s.size, channels: 3, data: s.source };
      const r = await editImage(models, input, s.instruction, {
        steps: cfg.sample.num_steps,
        guidance: { text: cfg.sample.guidance_scale, image: cfg.sample.image_guidance_scale },
        eta: cfg.sample.eta,
        seed,
        attentionLayers: layers.map((l) => l.path).join(","),
      });
      const p = instructReward(r.attention!.map, s.aGt, s.source, r.image.data, cfg.reward.alpha, cfg.reward.tau);
      cos.push(p.cos);
      rewards.push(p.reward);
      maes.push(p.mae);
    }
  }
  const n = cos.length;
  const mean = cos.reduce((a, b) => a + b, 0) / n;
  const sd = Math.sqrt(cos.reduce((a, b) => a + (b - mean) ** 2, 0) / Math.max(n - 1, 1));
  return { cos: mean, reward: rewards.reduce((a, b) => a + b, 0) / n, cosStderr: sd / Math.sqrt(n), n, values: cos, rewardValues: rewards, maeValues: maes };
}

/** Mean and standard error of after − before over paired values (same samples, same seeds). */
export function pairedDifference(after: readonly number[], before: readonly number[]): { mean: number; stderr: number; n: number } {
  if (after.length !== before.length || after.length < 2) throw new Error(`pairedDifference: ${after.length} vs ${before.length} values`);
  const d = after.map((a, i) => a - before[i]);
  const n = d.length;
  const mean = d.reduce((a, b) => a + b, 0) / n;
  const sd = Math.sqrt(d.reduce((a, b) => a + (b - mean) ** 2, 0) / (n - 1));
  return { mean, stderr: sd / Math.sqrt(n), n };
}
