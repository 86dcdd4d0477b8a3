// Dynamic loss scaling for backward passes through f16 activations, as torch.cuda.amp.GradScaler
// (what accelerate's mixed_precision "fp16" uses): the loss is multiplied by `scale` before the
// backward so small gradients stay above f16's underflow (2^-24; normal numbers from 2^-14); the f32
// gradients of the trainable weights are divided by it again before clipping and the step. A step
// whose gradients hold an inf or NaN (an f16 overflow at this scale) is skipped and the scale halved;
// after `growthInterval` steps in a row without one, the scale doubles.
import { Tensor } from "../tensor/tensor.ts";
import * as ops from "../tensor/ops/index.ts";
import { noGrad } from "../tensor/autograd.ts";

export interface GradScalerOptions {
  /** torch's init_scale, 2^16. */
  initScale?: number;
  /** torch's growth_factor, 2. */
  growthFactor?: number;
  /** torch's backoff_factor, 0.5. */
  backoffFactor?: number;
  /** torch's growth_interval, 2000 steps. */
  growthInterval?: number;
}

/** What a checkpoint keeps (torch's scaler state_dict: scale and _growth_tracker). */
export interface GradScalerState {
  scale: number;
  growthTracker: number;
}

/** Below this scale even the largest f16 gradient would underflow: the run has diverged. */
export const MIN_LOSS_SCALE = 2 ** -24;

export class GradScaler {
  readonly growthFactor: number;
  readonly backoffFactor: number;
  readonly growthInterval: number;
  private current: number;
  private tracker = 0;

  constructor(opts: GradScalerOptions = {}, state?: GradScalerState) {
    this.growthFactor = opts.growthFactor ?? 2;
    this.backoffFactor = opts.backoffFactor ?? 0.5;
    this.growthInterval = opts.growthInterval ?? 2000;
    this.current = opts.initScale ?? 2 ** 16;
    if (state) {
      this.current = state.scale;
      this.tracker = state.growthTracker;
    }
  }

  /** The current loss scale. */
  get scale(): number {
    return this.current;
  }

  /** loss * scale, differentiable (the backward then gives scale times every gradient). */
  scaleLoss(loss: Tensor): Tensor {
    return ops.scale(loss, this.current);
  }

  /** Divide every parameter's gradient by the scale (torch's unscale_), replacing the gradient tensors. */
  unscale(params: readonly Tensor[]): void {
    const inv = 1 / this.current;
    noGrad(() => {
      for (const p of params) {
        if (!p.grad) continue;
        const g = ops.scale(p.grad, inv).keep();
        p.grad.dispose();
        p.grad = g;
      }
    });
  }

  /**
   * After each optimizer step (taken or skipped): an inf/NaN in the gradients multiplies the scale by
   * the backoff factor and restarts the count; otherwise the `growthInterval`-th step in a row
   * multiplies it by the growth factor (torch's update(), _amp_update_scale_).
   */
  update(foundInf: boolean): void {
    if (foundInf) {
      this.current *= this.backoffFactor;
      this.tracker = 0;
      return;
    }
    this.tracker++;
    if (this.tracker === this.growthInterval) {
      // torch keeps the scale in an f32 tensor and does not grow it past f32's range
      const grown = Math.fround(this.current * this.growthFactor);
      if (Number.isFinite(grown)) this.current = grown;
      this.tracker = 0;
    }
  }

  state(): GradScalerState {
    return { scale: this.current, growthTracker: this.tracker };
  }
}
