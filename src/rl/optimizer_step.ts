// One optimizer step on accumulated gradients, as ddpo-pytorch does it through accelerate: unscale
// (with fp16 loss scaling), clip the global gradient norm, AdamW, clear the gradients. A step whose
// gradients are not finite is skipped (the weights and the AdamW state stay as they were), as
// GradScaler.step skips it; with a scaler the scale is then updated.
import type { Tensor } from "../tensor/tensor.ts";
import { adamW, type AdamWOptions, type AdamWState, clipGradNorm } from "../tensor/ops/optim.ts";
import type { GradScaler } from "./grad_scaler.ts";

export interface StepOptions {
  maxGradNorm: number;
  adamW: AdamWOptions;
}

export interface StepResult {
  /** The gradient norm before clipping (unscaled); inf or NaN when the step was skipped. */
  gradNorm: number;
  /** Not taken: a gradient held an inf or NaN. */
  skipped: boolean;
}

export async function optimizerStep(params: readonly Tensor[], optimizer: AdamWState, o: StepOptions, scaler: GradScaler | null): Promise<StepResult> {
  scaler?.unscale(params);
  // A NaN or inf in any gradient makes the norm NaN or inf (the sum of squares is f32; finite f32
  // gradients of magnitude below ~1e19 cannot overflow it), which is torch's found_inf.
  const norm = clipGradNorm(params, o.maxGradNorm);
  const gradNorm = await norm.item();
  norm.dispose();
  const skipped = !Number.isFinite(gradNorm);
  if (!skipped) adamW(params, optimizer, o.adamW);
  scaler?.update(skipped);
  for (const p of params) {
    p.grad?.dispose();
    p.grad = null;
  }
  return { gradNorm, skipped };
}
