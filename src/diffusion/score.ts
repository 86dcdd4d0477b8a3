// Recompute the log-probabilities of a sampled chain under the current model: exactly what PPO's
// ratio needs (SPEC §4), and what `rl4pix score-trajectory` prints.
import { Tensor } from "../tensor/tensor.ts";
import { noGrad } from "../tensor/autograd.ts";
import { scope } from "../tensor/scope.ts";
import { type GuidedConditioning, type Guidance, guidedNoise, type IP2PModels } from "./pipeline.ts";

/**
 * log π(x_{t_{i+1}} | x_{t_i}) of one step for B samples (timesteps per sample), differentiable
 * with respect to the model's trainable weights. `latents`/`next` are [B, 4, h, w].
 */
export function stepLogProb(m: IP2PModels, cond: GuidedConditioning, latents: Tensor, next: Tensor, timesteps: number[], g: Guidance, eta: number, cfg = true): Tensor {
  const eps = guidedNoise(m, latents, timesteps, cond, g, cfg);
  const r = m.scheduler.step(eps, timesteps, latents, { eta, prevSample: next });
  if (!r.logProb) throw new Error("log-probs need eta > 0");
  return r.logProb; // [B]
}

/** Every step's log-prob for a whole chain (no gradients): [T][B]. */
export async function scoreChain(m: IP2PModels, cond: GuidedConditioning, latents: Tensor[], timesteps: number[], g: Guidance, eta: number, cfg = true): Promise<number[][]> {
  if (latents.length !== timesteps.length + 1) throw new Error(`score: ${latents.length} latents for ${timesteps.length} steps`);
  m.scheduler.setTimesteps(timesteps.length);
  const out: number[][] = [];
  for (let i = 0; i < timesteps.length; i++) {
    const B = latents[i].shape[0];
    const lp = noGrad(() => scope(() => stepLogProb(m, cond, latents[i], latents[i + 1], new Array(B).fill(timesteps[i]), g, eta, cfg)));
    out.push(Array.from(await lp.readF32()));
    lp.dispose();
  }
  return out;
}
