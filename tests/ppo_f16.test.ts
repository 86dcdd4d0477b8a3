// PPO under mixed_precision "fp16": the frozen UNet's forward and backward on f16 activations and f16
// matrices, the LoRA weights, their gradients and AdamW's state in f32, dynamic loss scaling (torch's
// GradScaler) against f16 underflow. On the tiny golden checkpoint, against the f32 path:
// - a chain sampled in f16 is rescored in f16 (with gradients) to the sampling log-probs;
// - one PPO step's LoRA gradients agree with the f32 path's within a tolerance derived from the f16
//   roundings, the guidance's gain and the f16 forward's error in the step's mean (below);
// - without loss scaling, the late steps' gradients underflow in f16 and miss that tolerance;
// - the f32 and f16 gradients match directional finite differences of the loss;
// - a mixed-precision training run records its loss scale and resumes bit-identically.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { disposeModels, disposeTrajectory, encodeImages, encodePrompts, guidedConditioning, type GuidedConditioning, guidedNoise, type IP2PModels, loadIP2P, sampleChain, type Trajectory } from "../src/diffusion/pipeline.ts";
import { stepLogProb } from "../src/diffusion/score.ts";
import { initLora, loraParameters } from "../src/nn/lora.ts";
import { hostRandn } from "../src/nn/load.ts";
import { ppoLoss } from "../src/rl/ppo.ts";
import { GradScaler } from "../src/rl/grad_scaler.ts";
import { train } from "../src/cli/train.ts";
import { verifyCheckpoint } from "../src/rl/checkpoint_check.ts";
import { Tensor, backward, clearTape, noGrad, scope } from "../src/tensor/index.ts";
import * as ops from "../src/tensor/ops/index.ts";
import { gpu } from "../src/gpu/device.ts";
import { useGpu } from "./helpers.ts";
import { SMALL_RUN, metricsWithoutTimes, tmpRunDir } from "./small_run.ts";
import { TINY_IP2P } from "./goldens.ts";
import { countF16Stores, f16Tolerance, relRms } from "./f16_tolerance.ts";

useGpu();

const B = 2;
const STEPS = 10;
const ETA = 1;
const GUIDANCE = { text: 5, image: 1.5 };
const ADV = [1, -0.7];
const CLIP = 0.2;

/** LoRA rank 4 on every attention projection, with non-zero up factors so both factors get gradients. */
function withLora(m: IP2PModels): Tensor[] {
  initLora(m.unet, 4, 7);
  for (const p of loraParameters(m.unet)) {
    const lin = m.unet.attentionModules().flatMap(([, a]) => a.loraTargets().map(([, l]) => l)).find((l) => l.lora!.up === p.up)!;
    lin.lora!.up = Tensor.from(hostRandn(p.up.size, p.up.size + 3).map((v) => 0.1 * v), p.up.shape, "f32", "lora_B").keep().requireGrad();
    p.up.dispose();
  }
  return loraParameters(m.unet).flatMap((p) => [p.down, p.up]);
}

let m32: IP2PModels;
let m16: IP2PModels;
let p32: Tensor[];
let p16: Tensor[];
let cond: GuidedConditioning;
let traj: Trajectory;

beforeAll(() => {
  expect(gpu().hasF16).toBe(true);
  m32 = loadIP2P(TINY_IP2P);
  m16 = loadIP2P(TINY_IP2P, { mixedPrecision: "fp16" });
  p32 = withLora(m32);
  p16 = withLora(m16);
  // one chain sampled by the f32 model; both paths score and train on it with the same conditioning
  ({ cond, traj } = noGrad(() => scope(() => {
    const p = encodePrompts(m32, ["turn the sky purple", "make it look like a watercolor"]);
    const img = encodeImages(m32, ops.affine(ops.rand([B, 3, 32, 32], 3), 2, -1));
    const cond = guidedConditioning(m32, p.embeds, img);
    const traj = sampleChain(m32, cond, [B, 4, 16, 16], { steps: STEPS, guidance: GUIDANCE, eta: ETA, seeds: [21, 22] });
    return { cond, traj };
  })));
});

afterAll(() => {
  disposeTrajectory(traj);
  cond.embeds.dispose();
  cond.imageLatents.dispose();
  disposeModels(m32);
  disposeModels(m16);
});

function clearGrads(params: Tensor[]): void {
  for (const p of params) {
    p.grad?.dispose();
    p.grad = null;
  }
}

async function readGrads(params: Tensor[], scale = 1): Promise<Float64Array> {
  const parts = await Promise.all(params.map((p) => p.grad!.readF32()));
  const out = new Float64Array(parts.reduce((a, g) => a + g.length, 0));
  let o = 0;
  for (const g of parts) for (let i = 0; i < g.length; i++) out[o++] = g[i] / scale;
  return out;
}

function norm(v: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < v.length; i++) s += v[i] * v[i];
  return Math.sqrt(s);
}

interface PpoStep {
  /** The LoRA gradient of the step's PPO loss, unscaled, all parameters in order. */
  grad: Float64Array;
  /** The mean mu of x_{t-1} given x_t [B, 4, h, w], as a host array. */
  mean: Float32Array;
  /** f16 stores (f16_tolerance.ts) of the forward and of the backward. */
  forwardStores: number;
  backwardStores: number;
}

/**
 * One PPO micro-step at chain step `s` on `m`: log-probs of x_{t-1} given x_t, the clipped surrogate
 * with each path's own log-probs as the old ones (ratio 1, as PPO's first pass over fresh samples),
 * backward through `scale` * loss (the loss scaling), gradients divided by `scale` again.
 */
async function ppoStep(m: IP2PModels, params: Tensor[], s: number, scale: number): Promise<PpoStep> {
  clearGrads(params);
  const t = traj.timesteps[s];
  const ts = new Array(B).fill(t);
  const fwd = countF16Stores(() => {
    const eps = guidedNoise(m, traj.latents[s], ts, cond, GUIDANCE);
    const r = m.scheduler.step(eps, ts, traj.latents[s], { eta: ETA, prevSample: traj.latents[s + 1] });
    return { lp: r.logProb!, mean: r.mean };
  });
  const { lp, mean } = fwd.result;
  const old = Array.from(await lp.readF32());
  const { loss } = ppoLoss(lp, old, ADV, CLIP);
  const bwd = countF16Stores(() => backward(ops.scale(loss, scale)));
  const out = { grad: await readGrads(params, scale), mean: await mean.readF32(), forwardStores: fwd.stores, backwardStores: bwd.stores };
  for (const x of [lp, mean, loss]) x.dispose();
  clearGrads(params);
  clearTape();
  return out;
}

/**
 * The f32 path's gradient split by guidance branch: with the step's cotangent w = dL/d eps_hat held
 * fixed, the LoRA gradient is sum_k s_k J_k^T w over the text, image-only and unconditional branches
 * (coefficients s_T, s_I - s_T, 1 - s_I). Returns the gain sqrt(sum_k (s_k |J_k^T w|)^2) / |sum_k s_k J_k^T w|:
 * how much independent relative errors of the branches' gradients (adding in quadrature) are
 * amplified in their sum, which the guidance makes smaller than its terms.
 */
async function guidanceGain(s: number): Promise<number> {
  const t = traj.timesteps[s];
  const ts = new Array(B).fill(t);
  m32.scheduler.setTimesteps(STEPS);
  // the cotangent, through the scheduler and the PPO loss with eps_hat as a leaf
  const eps = noGrad(() => guidedNoise(m32, traj.latents[s], ts, cond, GUIDANCE)).requireGrad();
  const r = m32.scheduler.step(eps, ts, traj.latents[s], { eta: ETA, prevSample: traj.latents[s + 1] });
  const { loss } = ppoLoss(r.logProb!, Array.from(await r.logProb!.readF32()), ADV, CLIP);
  backward(loss);
  const w = eps.grad!.detach().keep(); // [B, 4, h, w]
  const branch = async (g: { text: number; image: number }) => {
    clearGrads(p32);
    scope(() => backward(ops.sum(ops.mul(guidedNoise(m32, traj.latents[s], ts, cond, g), w))));
    const v = await readGrads(p32);
    clearGrads(p32);
    return v;
  };
  // one-hot guidance picks one branch: (1, 1) the text branch, (0, 1) image-only, (0, 0) unconditional
  const [vT, vI, vU] = [await branch({ text: 1, image: 1 }), await branch({ text: 0, image: 1 }), await branch({ text: 0, image: 0 })];
  const c = [GUIDANCE.text, GUIDANCE.image - GUIDANCE.text, 1 - GUIDANCE.image];
  const total = vT.map((x, i) => c[0] * x + c[1] * vI[i] + c[2] * vU[i]);
  for (const x of [eps, w, loss]) x.dispose();
  clearTape();
  return Math.hypot(c[0] * norm(vT), c[1] * norm(vI), c[2] * norm(vU)) / norm(total);
}

/** ||mu16 - mu32|| / ||x_{t-1} - mu32||, the worst sample: the f16 forward's relative error in the cotangent. */
async function meanError(s: number, mean16: Float32Array, mean32: Float32Array): Promise<number> {
  const next = await traj.latents[s + 1].readF32();
  const per = next.length / B;
  let worst = 0;
  for (let b = 0; b < B; b++) {
    let num = 0, den = 0;
    for (let i = b * per; i < (b + 1) * per; i++) {
      num += (mean16[i] - mean32[i]) ** 2;
      den += (next[i] - mean32[i]) ** 2;
    }
    worst = Math.max(worst, Math.sqrt(num / den));
  }
  return worst;
}

describe("PPO on f16 activations", () => {
  test("a chain sampled on f16 activations is rescored with gradients to its sampling log-probs", async () => {
    const { c16, t16 } = noGrad(() => scope(() => {
      const p = encodePrompts(m16, ["turn the sky purple", "make it look like a watercolor"]);
      const img = encodeImages(m16, ops.affine(ops.rand([B, 3, 32, 32], 3), 2, -1));
      const c16 = guidedConditioning(m16, p.embeds, img);
      const t16 = sampleChain(m16, c16, [B, 4, 16, 16], { steps: 4, guidance: GUIDANCE, eta: ETA, seeds: [21, 22] });
      return { c16, t16 };
    }));
    for (let s = 0; s < 4; s++) {
      const lp = scope(() => stepLogProb(m16, c16, t16.latents[s], t16.latents[s + 1], new Array(B).fill(t16.timesteps[s]), GUIDANCE, ETA).detach());
      const got = await lp.readF32();
      const want = await t16.logProbs![s].readF32();
      // the same f16 kernels run with and without the tape: equal up to f32 summation order
      for (let b = 0; b < B; b++) expect(Math.abs(got[b] - want[b])).toBeLessThan(1e-5 * Math.max(1, Math.abs(want[b])));
      lp.dispose();
    }
    clearTape();
    disposeTrajectory(t16);
    c16.embeds.dispose();
    c16.imageLatents.dispose();
  });

  // Tolerance of the f16 gradient against the f32 one. The LoRA gradient is a vector-Jacobian product
  // of the guided noise prediction eps_hat with the cotangent w = dL/d eps_hat. Its f16 errors:
  // (1) every f16 store of the forward and the backward (counted) and every f16 matrix (one
  //     rounding-sized error per weighted op) adds a relative 2^-11: together 2^-11 sqrt(L) per branch
  //     (f16_tolerance.ts);
  // (2) w is proportional to x_{t-1} - mu (the log-prob's residual); the f16 forward moves mu, so w
  //     is off by rho = |mu16 - mu32| / |x_{t-1} - mu32| relative (measured per step: it is small where
  //     sigma_t is large and grows as sigma_t shrinks);
  // the three branches enter with coefficients s_k (5, -3.5, -0.5): their independent relative errors
  // add in quadrature to gain * (error of one), gain = sqrt(sum (s_k |J_k^T w|)^2) / |sum s_k J_k^T w|
  // (computed here on the f32 path; 3-4 on this model). So |g16 - g32| / |g32| <= gain * (2^-11
  // sqrt(L) + rho): ~5-6% here against measured errors of 0.7-1.1%. A wrong op or a gradient left
  // scaled is an O(1) error; the underflow of an unscaled f16 backward is over it too (below).
  async function tolerance(s: number, g16: PpoStep, g32: PpoStep): Promise<number> {
    const f16Weights = m16.unet.namedParameters().filter(([, p]) => p.t.dtype === "f16").length;
    const L = g16.forwardStores + g16.backwardStores + f16Weights;
    const rho = await meanError(s, g16.mean, g32.mean);
    const gain = await guidanceGain(s);
    const tol = gain * (f16Tolerance(L) + rho);
    console.log(`step ${s} (t ${traj.timesteps[s]}): |g| ${norm(g32.grad).toExponential(2)}, stores ${g16.forwardStores}+${g16.backwardStores}+${f16Weights} f16 matrices, rho ${rho.toExponential(2)}, gain ${gain.toFixed(2)}: tolerance ${tol.toExponential(2)}`);
    return tol;
  }

  for (const s of [0, 5, 9]) {
    test(`step ${s}: one PPO step's LoRA gradients (loss-scaled) agree with the f32 path's within the f16 tolerance`, async () => {
      m32.scheduler.setTimesteps(STEPS);
      m16.scheduler.setTimesteps(STEPS);
      const g32 = await ppoStep(m32, p32, s, 1);
      const g16 = await ppoStep(m16, p16, s, new GradScaler().scale); // torch's initial scale, 2^16
      const tol = await tolerance(s, g16, g32);
      const err = relRms(g16.grad, g32.grad);
      console.log(`  relative error ${err.toExponential(2)}`);
      expect(norm(g32.grad)).toBeGreaterThan(0);
      expect(err).toBeLessThanOrEqual(tol);
    });
  }

  test("without loss scaling the last step's gradients underflow in f16 and miss the tolerance", async () => {
    // The last step's cotangent is small (|g| ~1e-3 here, and real runs divide the loss by the
    // accumulated micro-steps too): many of its f16 activation gradients fall below 2^-14, where f16
    // keeps fewer bits, or below 2^-24, where they vanish. Scaled by 2^16 they stay normal.
    const s = STEPS - 1;
    m32.scheduler.setTimesteps(STEPS);
    m16.scheduler.setTimesteps(STEPS);
    const g32 = await ppoStep(m32, p32, s, 1);
    const scaled = await ppoStep(m16, p16, s, new GradScaler().scale);
    const unscaled = await ppoStep(m16, p16, s, 1);
    const tol = await tolerance(s, scaled, g32);
    const errs = [relRms(scaled.grad, g32.grad), relRms(unscaled.grad, g32.grad)];
    console.log(`  relative error scaled ${errs[0].toExponential(2)}, unscaled ${errs[1].toExponential(2)}`);
    expect(errs[0]).toBeLessThanOrEqual(tol);
    expect(errs[1]).toBeGreaterThan(tol);
  });

  // Finite differences of the f16 loss are dominated by its rounding noise (here up to 100% of the
  // derivative at h = 1e-2 and still ~2% at h = 0.1), so they are taken of the f32 loss, where
  // central differences at h = 1e-2 along a unit direction are accurate to ~1e-3 of the derivative:
  // the f32 gradient must match them within 1e-2, and the f16 gradient within that plus its f16
  // tolerance. The direction is each gradient's own, so its derivative there is the gradient's norm.
  for (const s of [0, 5]) {
    test(`step ${s}: the f32 and the loss-scaled f16 gradients are the derivative of the loss (directional finite differences)`, async () => {
      m32.scheduler.setTimesteps(STEPS);
      m16.scheduler.setTimesteps(STEPS);
      const g32 = await ppoStep(m32, p32, s, 1);
      const g16 = await ppoStep(m16, p16, s, new GradScaler().scale);
      const tol = await tolerance(s, g16, g32);
      const ts = new Array(B).fill(traj.timesteps[s]);
      const old = Array.from(await noGrad(() => stepLogProb(m32, cond, traj.latents[s], traj.latents[s + 1], ts, GUIDANCE, ETA)).readF32());
      const originals = await Promise.all(p32.map((p) => p.readF32()));
      /** The f32 loss with the LoRA moved by h along `dir` (unit norm over all parameters). */
      const lossAt = async (dir: Float64Array, h: number): Promise<number> => {
        let o = 0;
        p32.forEach((p, i) => {
          const moved = originals[i].map((x, j) => x + h * dir[o + j]);
          o += moved.length;
          const t = Tensor.from(moved, p.shape);
          gpu().copy(t.buffer, 0, p.buffer, 0, t.byteLength);
          t.dispose();
        });
        const l = noGrad(() => scope(() => ppoLoss(stepLogProb(m32, cond, traj.latents[s], traj.latents[s + 1], ts, GUIDANCE, ETA), old, ADV, CLIP).loss));
        const v = await l.item();
        l.dispose();
        return v;
      };
      const h = 1e-2;
      const derivative = async (g: Float64Array): Promise<number> => {
        const dir = g.map((x) => x / norm(g));
        const d = ((await lossAt(dir, h)) - (await lossAt(dir, -h))) / (2 * h);
        await lossAt(dir, 0); // restore the LoRA
        return d;
      };
      const fd32 = await derivative(g32.grad);
      const fd16 = await derivative(g16.grad);
      console.log(`  f32: |g| ${norm(g32.grad).toExponential(4)} vs fd ${fd32.toExponential(4)}; f16: |g| ${norm(g16.grad).toExponential(4)} vs fd ${fd16.toExponential(4)}`);
      expect(Math.abs(norm(g32.grad) - fd32)).toBeLessThanOrEqual(1e-2 * norm(g32.grad));
      expect(Math.abs(norm(g16.grad) - fd16)).toBeLessThanOrEqual((1e-2 + tol) * norm(g32.grad));
    });
  }
});

describe("a mixed-precision training run", () => {
  const RUN = ["mixed_precision=fp16", ...SMALL_RUN];

  test("records its loss scale, checkpoints the scaler (checked on resume) and resumes bit-identically", async () => {
    const a = tmpRunDir("fp16A");
    const b = tmpRunDir("fp16B");
    try {
      await train({ out: a, set: [...RUN, "num_epochs=2"], quiet: true });
      await train({ out: b, set: [...RUN, "num_epochs=1"], quiet: true });
      await train({ out: b, set: [...RUN, "num_epochs=2"], quiet: true });
      const metrics = metricsWithoutTimes;
      const ma = metrics(a);
      expect(ma.length).toBe(2);
      // torch's initial scale, no overflow on this model, far from 2000 good steps: unchanged
      for (const r of ma) {
        expect(r.loss_scale).toBe(2 ** 16);
        expect(r.skipped_steps).toBe(0);
        expect(r.grad_norm as number).toBeGreaterThan(0);
      }
      // one optimizer step per epoch here: the growth tracker counts them and survives the resume
      const scalerOf = (dir: string, e: number) => JSON.parse(readFileSync(join(dir, "checkpoints", `checkpoint_${e}`, "state.json"), "utf8")).gradScaler;
      expect(scalerOf(a, 0)).toEqual({ scale: 2 ** 16, growthTracker: 1 });
      expect(scalerOf(a, 1)).toEqual({ scale: 2 ** 16, growthTracker: 2 });
      expect(scalerOf(b, 1)).toEqual(scalerOf(a, 1));
      expect(metrics(b)).toEqual(ma);
      const trainer = (dir: string) => readFileSync(join(dir, "checkpoints", "checkpoint_1", "trainer.safetensors"));
      expect(Buffer.compare(trainer(a), trainer(b))).toBe(0);
      // a damaged scaler state is refused when the checkpoint is checked (before a resume starts the GPU)
      const ck = join(a, "checkpoints", "checkpoint_1");
      rmSync(join(ck, "SHA256SUMS"));
      const sp = join(ck, "state.json");
      writeFileSync(sp, readFileSync(sp, "utf8").replace(`"scale":${2 ** 16}`, `"scale":-1`));
      expect(() => verifyCheckpoint(ck)).toThrow(/"gradScaler" must be \{scale > 0, growthTracker >= 0\}/);
    } finally {
      rmSync(a, { recursive: true, force: true });
      rmSync(b, { recursive: true, force: true });
    }
  });
});
