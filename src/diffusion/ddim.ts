// DDIM scheduler with the log-probability of a step (DDPO, SPEC §4).
//
// Noise tables follow diffusers' DDIMScheduler in float32 (betas from a float32 linspace, cumulative
// product of 1 - beta in float32). A step with eta gives a Gaussian policy
//   x_{t-1} ~ N(mu, sigma_t^2),  sigma_t = eta * sqrt((1 - a_prev)/(1 - a_t) * (1 - a_t/a_prev))
//   x0 = (x_t - sqrt(1 - a_t) eps) / sqrt(a_t),  mu = sqrt(a_prev) x0 + sqrt(1 - a_prev - sigma_t^2) eps
// and log pi = mean over C,H,W of -(x_{t-1} - mu)^2 / (2 sigma_t^2) - ln sigma_t - ln sqrt(2 pi).
// As in ddpo-pytorch, the previous timestep is clamped to [0, T-1] (so the last step of a 50-step
// chain uses a_prev = alphas_cumprod[0]), and timesteps may differ per batch element.
import { Tensor } from "../tensor/tensor.ts";
import * as ops from "../tensor/ops/index.ts";
import { UserError } from "../errors.ts";
import type { SchedulerConfig } from "../io/diffusers_config.ts";

export type { SchedulerConfig };

/** The SD-1.x / InstructPix2Pix noise schedule (what the tiny goldens and IP2P use). */
export const DEFAULT_DDIM_CONFIG: SchedulerConfig = {
  file: "(built-in)",
  className: "DDIMScheduler",
  numTrainTimesteps: 1000,
  betaStart: 0.00085,
  betaEnd: 0.012,
  betaSchedule: "scaled_linear",
  trainedBetas: null,
  clipSample: false,
  clipSampleRange: 1,
  setAlphaToOne: false,
  stepsOffset: 1,
  predictionType: "epsilon",
  timestepSpacing: "leading",
  rescaleBetasZeroSnr: false,
};

const f = Math.fround;

/** torch.linspace in float32: the first half counts up from start, the second half down from end. */
export function linspaceF32(start: number, end: number, steps: number): Float32Array {
  const out = new Float32Array(steps);
  if (steps === 1) {
    out[0] = start;
    return out;
  }
  const step = f((f(end) - f(start)) / (steps - 1));
  const half = Math.floor(steps / 2);
  for (let i = 0; i < steps; i++) {
    out[i] = i < half ? f(f(start) + f(step * i)) : f(f(end) - f(step * (steps - i - 1)));
  }
  return out;
}

function betasFor(cfg: SchedulerConfig): Float32Array {
  const n = cfg.numTrainTimesteps;
  if (cfg.trainedBetas && cfg.trainedBetas.length) return Float32Array.from(cfg.trainedBetas);
  switch (cfg.betaSchedule) {
    case "linear":
      return linspaceF32(cfg.betaStart, cfg.betaEnd, n);
    case "scaled_linear": {
      const s = linspaceF32(Math.sqrt(cfg.betaStart), Math.sqrt(cfg.betaEnd), n);
      return s.map((v) => f(v * v));
    }
    case "squaredcos_cap_v2": {
      const alphaBar = (t: number) => Math.cos(((t + 0.008) / 1.008) * Math.PI / 2) ** 2;
      const out = new Float32Array(n);
      for (let i = 0; i < n; i++) out[i] = Math.min(1 - alphaBar((i + 1) / n) / alphaBar(i / n), 0.999);
      return out;
    }
    default:
      throw new UserError(`${cfg.file}: beta_schedule '${cfg.betaSchedule}' is not supported (linear, scaled_linear, squaredcos_cap_v2)`);
  }
}

/** diffusers' rescale_zero_terminal_snr: shift the schedule so the last step has zero SNR. */
function rescaleZeroTerminalSnr(betas: Float32Array): Float32Array {
  const n = betas.length;
  const sq = new Float64Array(n);
  let acc = 1;
  for (let i = 0; i < n; i++) {
    acc *= 1 - betas[i];
    sq[i] = Math.sqrt(acc);
  }
  const a0 = sq[0], aT = sq[n - 1];
  for (let i = 0; i < n; i++) sq[i] = ((sq[i] - aT) * a0) / (a0 - aT);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = 1 - (i === 0 ? sq[0] ** 2 : sq[i] ** 2 / sq[i - 1] ** 2);
  return out;
}

export interface StepCoefficients {
  timestep: number;
  prevTimestep: number;
  alphaProdT: number;
  alphaProdPrev: number;
  /** sigma_t = eta * sqrt(variance). */
  std: number;
}

export interface StepResult {
  /** x_{t-1} [B,C,H,W]. */
  prevSample: Tensor;
  /** mu [B,C,H,W]. */
  mean: Tensor;
  /** x0 prediction [B,C,H,W]. */
  predOriginal: Tensor;
  /** log pi(x_{t-1} | x_t) per batch element [B] (only when sigma > 0). */
  logProb: Tensor | null;
  coefficients: StepCoefficients[];
}

export class DDIMScheduler {
  readonly betas: Float32Array;
  readonly alphasCumprod: Float32Array;
  readonly finalAlphaCumprod: number;
  timesteps: number[] = [];
  numInferenceSteps = 0;

  constructor(readonly config: SchedulerConfig = DEFAULT_DDIM_CONFIG) {
    if (config.predictionType !== "epsilon") {
      throw new UserError(`${config.file}: prediction_type '${config.predictionType}' is not supported (epsilon only)`);
    }
    this.betas = config.rescaleBetasZeroSnr ? rescaleZeroTerminalSnr(betasFor(config)) : betasFor(config);
    this.alphasCumprod = new Float32Array(this.betas.length);
    let acc = 1;
    for (let i = 0; i < this.betas.length; i++) {
      acc = f(acc * f(1 - this.betas[i]));
      this.alphasCumprod[i] = acc;
    }
    this.finalAlphaCumprod = config.setAlphaToOne ? 1 : this.alphasCumprod[0];
  }

  /** Inference timesteps, descending (diffusers' `set_timesteps`). */
  setTimesteps(n: number): number[] {
    const T = this.config.numTrainTimesteps;
    if (!Number.isInteger(n) || n < 1 || n > T) throw new UserError(`steps: expected an integer in [1, ${T}], got ${n}`);
    const spacing = this.config.timestepSpacing;
    let ts: number[];
    if (spacing === "leading") {
      const ratio = Math.floor(T / n);
      ts = Array.from({ length: n }, (_, i) => Math.round(i * ratio) + this.config.stepsOffset).reverse();
    } else if (spacing === "trailing") {
      const ratio = T / n;
      ts = Array.from({ length: n }, (_, i) => Math.round(T - i * ratio) - 1);
    } else if (spacing === "linspace") {
      ts = Array.from({ length: n }, (_, i) => Math.round((i * (T - 1)) / Math.max(n - 1, 1))).reverse();
    } else {
      throw new UserError(`${this.config.file}: timestep_spacing '${spacing}' is not supported`);
    }
    this.timesteps = ts;
    this.numInferenceSteps = n;
    return ts;
  }

  /** The step's coefficients for timestep t (float32 arithmetic, as torch does it). */
  coefficients(t: number, eta: number): StepCoefficients {
    if (!this.numInferenceSteps) throw new Error("DDIMScheduler: call setTimesteps first");
    const T = this.config.numTrainTimesteps;
    const prev = Math.min(Math.max(t - Math.floor(T / this.numInferenceSteps), 0), T - 1);
    const aT = this.alphasCumprod[t];
    const aPrev = prev >= 0 ? this.alphasCumprod[prev] : this.finalAlphaCumprod;
    const bT = f(1 - aT);
    const bPrev = f(1 - aPrev);
    const variance = f(f(bPrev / bT) * f(1 - f(aT / aPrev)));
    const std = f(eta * f(Math.sqrt(variance)));
    return { timestep: t, prevTimestep: prev, alphaProdT: aT, alphaProdPrev: aPrev, std };
  }

  /**
   * One DDIM step for a batch. `timesteps` is one t for all or one per batch element. With
   * `prevSample` given, it is scored instead of sampled; otherwise x_{t-1} = mu + sigma * `noise`
   * (noise required when eta > 0). Differentiable with respect to `modelOutput`.
   */
  step(modelOutput: Tensor, timesteps: number | number[], sample: Tensor, opts: { eta: number; prevSample?: Tensor; noise?: Tensor }): StepResult {
    const B = sample.shape[0];
    const ts = typeof timesteps === "number" ? new Array<number>(B).fill(timesteps) : timesteps;
    if (ts.length !== B) throw new Error(`ddim step: ${ts.length} timesteps for batch ${B}`);
    const co = ts.map((t) => this.coefficients(t, opts.eta));
    const bshape = [B, ...sample.shape.slice(1).map(() => 1)]; // [B,1,1,1]
    const col = (v: (c: StepCoefficients) => number) => Tensor.from(co.map(v), bshape, "f32", "ddim-coef");
    // x0 = (x_t - sqrt(1 - a_t) eps) / sqrt(a_t)
    const sqrtBeta = col((c) => f(Math.sqrt(f(1 - c.alphaProdT))));
    const sqrtAlpha = col((c) => f(Math.sqrt(c.alphaProdT)));
    let predOriginal = ops.div(ops.sub(sample, ops.mul(sqrtBeta, modelOutput)), sqrtAlpha);
    if (this.config.clipSample) predOriginal = ops.clamp(predOriginal, -this.config.clipSampleRange, this.config.clipSampleRange);
    // mu = sqrt(a_prev) x0 + sqrt(1 - a_prev - sigma^2) eps
    const sqrtAlphaPrev = col((c) => f(Math.sqrt(c.alphaProdPrev)));
    const dirCoef = col((c) => f(Math.sqrt(Math.max(f(f(1 - c.alphaProdPrev) - f(c.std * c.std)), 0))));
    const mean = ops.add(ops.mul(sqrtAlphaPrev, predOriginal), ops.mul(dirCoef, modelOutput));
    const anyNoise = co.some((c) => c.std > 0);
    let prevSample: Tensor;
    if (opts.prevSample) {
      prevSample = opts.prevSample;
    } else if (anyNoise) {
      if (!opts.noise) throw new Error("ddim step: eta > 0 needs variance noise");
      prevSample = ops.add(mean, ops.mul(col((c) => c.std), opts.noise));
    } else {
      prevSample = mean;
    }
    let logProb: Tensor | null = null;
    if (co.every((c) => c.std > 0)) {
      const diff = ops.sub(prevSample.requiresGrad ? prevSample.detach() : prevSample, mean);
      const negInv2Var = col((c) => -1 / (2 * c.std * c.std));
      const quad = ops.mul(ops.square(diff), negInv2Var); // [B,C,H,W]
      const perSample = ops.mean(ops.reshape(quad, [B, -1]), 1); // [B]
      const offset = Tensor.from(co.map((c) => -Math.log(c.std) - Math.log(Math.sqrt(2 * Math.PI))), [B], "f32", "ddim-logz");
      logProb = ops.add(perSample, offset);
    }
    return { prevSample, mean, predOriginal, logProb, coefficients: co };
  }
}
