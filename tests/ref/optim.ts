// Float64 CPU references for the optimiser family, following torch.optim.AdamW (single-tensor path,
// no amsgrad) and torch.nn.utils.clip_grad_norm_ step by step.

export interface AdamWRefState {
  m: Float64Array;
  v: Float64Array;
}

/** One AdamW step on `p` in place (torch: decay first, then moments, then the bias-corrected update). */
export function adamWRef(
  p: Float64Array,
  grad: Float64Array,
  s: AdamWRefState,
  step: number,
  lr: number,
  beta1: number,
  beta2: number,
  eps: number,
  weightDecay: number,
): void {
  const bc1 = 1 - beta1 ** step;
  const bc2 = 1 - beta2 ** step;
  for (let i = 0; i < p.length; i++) {
    p[i] *= 1 - lr * weightDecay;
    s.m[i] = beta1 * s.m[i] + (1 - beta1) * grad[i];
    s.v[i] = beta2 * s.v[i] + (1 - beta2) * grad[i] * grad[i];
    const denom = Math.sqrt(s.v[i]) / Math.sqrt(bc2) + eps;
    p[i] -= (lr / bc1) * (s.m[i] / denom);
  }
}

/** Global L2 norm of all gradients, and the clip coefficient torch applies. */
export function clipRef(grads: Float64Array[], maxNorm: number): { norm: number; coef: number } {
  let sq = 0;
  for (const g of grads) for (const v of g) sq += v * v;
  const norm = Math.sqrt(sq);
  return { norm, coef: Math.min(maxNorm / (norm + 1e-6), 1) };
}
