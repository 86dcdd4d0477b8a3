// PPO's clipped surrogate (SPEC §4, ddpo-pytorch): the loss and its gradient against a float64 CPU
// reference and central finite differences, the statistics, and the direction of a whole update: one
// AdamW step on the PPO loss of a sampled chain must make the positive-advantage trajectories more
// likely and the negative ones less likely under the tiny model (sampling, log-prob recomputation,
// backward through the UNet into the LoRA and the optimizer all have to agree on the sign).
import { describe, expect, test } from "bun:test";
import { ppoLoss, ppoStats } from "../src/rl/ppo.ts";
import { Tensor, backward, noGrad, scope } from "../src/tensor/index.ts";
import * as ops from "../src/tensor/ops/index.ts";
import { adamW, createAdamWState } from "../src/tensor/ops/optim.ts";
import { tinyModelDir } from "../src/models/tiny.ts";
import { disposeModels, disposeTrajectory, encodeImages, encodePrompts, guidedConditioning, loadIP2P, sampleChain } from "../src/diffusion/pipeline.ts";
import { stepLogProb } from "../src/diffusion/score.ts";
import { initLora, loraParameters } from "../src/nn/lora.ts";
import { expectClose, randn, useGpu } from "./helpers.ts";

useGpu();

/** float64 reference: mean over samples of max(-A r, -A clip(r, 1-e, 1+e)), r = exp(lp - old). */
function refLoss(lp: ArrayLike<number>, old: ArrayLike<number>, adv: ArrayLike<number>, eps: number): number {
  let s = 0;
  for (let i = 0; i < lp.length; i++) {
    const r = Math.exp(lp[i] - old[i]);
    const rc = Math.min(Math.max(r, 1 - eps), 1 + eps);
    s += Math.max(-adv[i] * r, -adv[i] * rc);
  }
  return s / lp.length;
}

describe("clipped surrogate", () => {
  // log-prob differences on both sides of the clip range (eps 0.2: |lp - old| > ~0.18 clips), with
  // advantages of both signs, so every branch of the max/clip is taken by some sample
  const old = [-1.3, 0.4, 2.0, -0.7, 0.1, 1.1, -2.2, 0.9];
  const delta = [0.05, -0.05, 0.4, -0.4, 0.4, -0.4, 0.0, 0.15];
  const lp = old.map((o, i) => o + delta[i]);
  const adv = [1.5, -0.8, 2.0, 1.0, -1.2, -0.5, 0.7, -2.0];
  const eps = 0.2;

  test("loss equals the float64 reference, ratio is exp(lp - old)", async () => {
    const t = Tensor.from(lp, [8]);
    const { loss, ratio } = ppoLoss(t, old, adv, eps);
    expect(Math.abs((await loss.item()) - refLoss(lp, old, adv, eps))).toBeLessThan(1e-6);
    expectClose(await ratio.readF32(), delta.map(Math.exp), { atol: 1e-6, rtol: 1e-6 });
    for (const x of [t, loss, ratio]) x.dispose();
  });

  test("gradient with respect to the log-probs matches central finite differences (float64)", async () => {
    const t = Tensor.from(lp, [8]).requireGrad();
    const { loss, ratio } = ppoLoss(t, old, adv, eps);
    backward(loss);
    const got = await t.grad!.readF32();
    const h = 1e-6;
    const fd = lp.map((_, i) => {
      const p = [...lp], m = [...lp];
      p[i] += h;
      m[i] -= h;
      return (refLoss(p, old, adv, eps) - refLoss(m, old, adv, eps)) / (2 * h);
    });
    expectClose(got, fd, { atol: 1e-5, rtol: 1e-4 });
    // clipped samples (ratio outside the range on the side the advantage pushes) get no gradient;
    // the others get -A r / B
    for (let i = 0; i < 8; i++) {
      const r = Math.exp(delta[i]);
      const clipped = (adv[i] > 0 && r > 1 + eps) || (adv[i] < 0 && r < 1 - eps);
      if (clipped) expect(got[i]).toBe(0);
      else expect(Math.abs(got[i] + (adv[i] * r) / 8)).toBeLessThan(1e-6);
    }
    for (const x of [t, loss, ratio]) x.dispose();
  });

  test("approx_kl and clipfrac as ddpo-pytorch logs them", () => {
    const st = ppoStats(lp, old, eps);
    expect(st.approxKl).toBeCloseTo(0.5 * delta.reduce((a, d) => a + d * d, 0) / 8, 10);
    expect(st.clipfrac).toBe(delta.filter((d) => Math.abs(Math.exp(d) - 1) > eps).length / 8);
  });
});

describe("a whole update", () => {
  test("one AdamW step on the PPO loss of a sampled chain raises the advantage-weighted log-probs", async () => {
    const m = loadIP2P(await tinyModelDir());
    initLora(m.unet, 4, 7);
    const B = 4;
    const steps = 4;
    const guidance = { text: 5, image: 1.5 };
    const { cond, traj } = noGrad(() => scope(() => {
      const p = encodePrompts(m, ["add a red circle", "remove the blue square", "make the sky green", "replace the star with a cat"]);
      const img = encodeImages(m, ops.affine(Tensor.from(Float32Array.from(randn(B * 3 * 32 * 32, 3, 0.3, 0.5)), [B, 3, 32, 32]), 2, -1));
      const cond = guidedConditioning(m, p.embeds, img);
      const traj = sampleChain(m, cond, [B, 4, 16, 16], { steps, guidance, eta: 1, seeds: [21, 22, 23, 24] });
      return { cond, traj };
    }));
    const adv = [1, -1, 1, -1];
    const ts = traj.timesteps;
    const oldLp = await Promise.all(traj.logProbs!.map((l) => l.readF32())); // [steps][B]
    /** Sum over steps of the chain's log-probs under the current model, per sample. */
    const chainLogProb = async (withGrad: boolean): Promise<number[]> => {
      const total = new Array(B).fill(0);
      for (let s = 0; s < steps; s++) {
        const run = () => scope(() => {
          const lp = stepLogProb(m, cond, traj.latents[s], traj.latents[s + 1], new Array(B).fill(ts[s]), guidance, 1); // [B]
          if (withGrad) backward(ops.scale(ppoLoss(lp, Array.from(oldLp[s]), adv, 0.2).loss, 1 / steps));
          return lp.detach();
        });
        const lp = withGrad ? run() : noGrad(run);
        const v = await lp.readF32();
        lp.dispose();
        v.forEach((x, i) => (total[i] += x));
      }
      return total;
    };
    const before = await chainLogProb(true);
    // the unchanged policy reproduces the sampling log-probs
    for (let i = 0; i < B; i++) expect(Math.abs(before[i] - oldLp.reduce((a, l) => a + l[i], 0))).toBeLessThan(1e-4);
    const params = loraParameters(m.unet).flatMap((p) => [p.down, p.up]);
    expect(params.some((p) => p.grad !== null)).toBe(true);
    adamW(params, createAdamWState(), { lr: 1e-3, weightDecay: 0 });
    const after = await chainLogProb(false);
    // the step lowers the loss to first order, i.e. raises sum_i A_i log pi(chain_i): the
    // positive-advantage chains gain likelihood relative to the negative ones
    const gain = after.reduce((a, x, i) => a + adv[i] * (x - before[i]), 0);
    expect(gain).toBeGreaterThan(0);
    // and the step is not a no-op (the LoRA moved the policy measurably)
    expect(Math.max(...after.map((x, i) => Math.abs(x - before[i])))).toBeGreaterThan(1e-4);
    disposeTrajectory(traj);
    cond.embeds.dispose();
    cond.imageLatents.dispose();
    disposeModels(m);
  }, 120_000);
});
