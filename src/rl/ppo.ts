// PPO's clipped surrogate on per-sample log-probabilities (ddpo-pytorch, SPEC §4):
//   ratio = exp(logp_new - logp_old)
//   loss  = mean(max(-A * ratio, -A * clip(ratio, 1 - eps, 1 + eps)))
import { Tensor } from "../tensor/tensor.ts";
import * as ops from "../tensor/ops/index.ts";

export interface PpoLoss {
  /** Scalar loss [1] (differentiable through `logProb`). */
  loss: Tensor;
  /** ratio [B] (no grad needed; for statistics). */
  ratio: Tensor;
}

/** `logProb` [B] (current policy), `oldLogProb` and `advantages` host values of the sampled chain. */
export function ppoLoss(logProb: Tensor, oldLogProb: readonly number[], advantages: readonly number[], clipRange: number): PpoLoss {
  const B = logProb.shape[0];
  const old = Tensor.from(oldLogProb, [B], "f32", "old-logp");
  const negAdv = Tensor.from(advantages.map((a) => -a), [B], "f32", "neg-adv");
  const ratio = ops.exp(ops.sub(logProb, old)); // [B]
  const unclipped = ops.mul(negAdv, ratio);
  const clipped = ops.mul(negAdv, ops.clamp(ratio, 1 - clipRange, 1 + clipRange));
  const loss = ops.mean(ops.maximum(unclipped, clipped));
  return { loss, ratio };
}

/** approx_kl = 0.5 mean((logp - logp_old)^2) and clipfrac = mean(|ratio - 1| > eps), on the host. */
export function ppoStats(logProb: ArrayLike<number>, oldLogProb: readonly number[], clipRange: number): { approxKl: number; clipfrac: number } {
  let kl = 0, clipped = 0;
  for (let i = 0; i < oldLogProb.length; i++) {
    const d = logProb[i] - oldLogProb[i];
    kl += d * d;
    if (Math.abs(Math.exp(d) - 1) > clipRange) clipped++;
  }
  return { approxKl: (0.5 * kl) / oldLogProb.length, clipfrac: clipped / oldLogProb.length };
}
