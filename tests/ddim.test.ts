// DDIM scheduler and its log-probability against ddpo-pytorch's ddim_step_with_logprob goldens.
import { describe, expect, test } from "bun:test";
import { DDIMScheduler, DEFAULT_DDIM_CONFIG } from "../src/diffusion/ddim.ts";
import { loadPipelineConfig } from "../src/io/diffusers.ts";
import { Tensor, backward, clearTape } from "../src/tensor/index.ts";
import { expectClose, useGpu } from "./helpers.ts";
import { TINY_IP2P, goldenF32, goldenInts, goldenShape } from "./goldens.ts";

useGpu();
const F = "ddim_logprob.safetensors";

function sched(steps = 50): DDIMScheduler {
  const s = new DDIMScheduler(loadPipelineConfig(TINY_IP2P).scheduler);
  s.setTimesteps(steps);
  return s;
}

const t = (name: string) => Tensor.from(goldenF32(F, name), goldenShape(F, name));

describe("DDIM tables", () => {
  test("betas and alphas_cumprod equal torch's float32 values", () => {
    const s = sched();
    // torch's float32 linspace rounds a few entries differently: allow 2 ulp.
    expectClose(s.betas, goldenF32(F, "scheduler.betas"), { atol: 0, rtol: 4.8e-7 }, "betas");
    expectClose(s.alphasCumprod, goldenF32(F, "scheduler.alphas_cumprod"), { atol: 0, rtol: 2e-6 }, "alphas_cumprod");
    expect(s.finalAlphaCumprod).toBe(goldenF32(F, "scheduler.final_alpha_cumprod")[0]);
  });
  test("leading timesteps with steps_offset", () => {
    expect(sched(50).timesteps).toEqual(goldenInts(F, "scheduler.timesteps_50"));
    expect(sched(10).timesteps).toEqual(goldenInts(F, "scheduler.timesteps_10"));
  });
  test("the built-in default schedule is the tiny checkpoint's", () => {
    const a = new DDIMScheduler(DEFAULT_DDIM_CONFIG);
    expect(Array.from(a.alphasCumprod)).toEqual(Array.from(sched().alphasCumprod));
  });
});

describe("DDIM step with log-prob (eta = 1)", () => {
  for (let k = 0; k < 6; k++) {
    test(`case ${k}`, async () => {
      const s = sched();
      const ts = goldenInts(F, `case${k}.timestep`)[0];
      const eps = t(`case${k}.model_output`);
      const x = t(`case${k}.sample`);
      const c = s.coefficients(ts, 1);
      expect(c.prevTimestep).toBe(goldenInts(F, `case${k}.prev_timestep_clamped`)[0]);
      // scoring a given x_{t-1}
      const given = s.step(eps, ts, x, { eta: 1, prevSample: t(`case${k}.given.prev_sample`) });
      expectClose(await given.mean.read(), goldenF32(F, `case${k}.prev_sample_mean`), { atol: 1e-5, rtol: 1e-5 }, "mean");
      expectClose(await given.predOriginal.read(), goldenF32(F, `case${k}.pred_original_sample`), { atol: 1e-4, rtol: 1e-5 }, "x0");
      expectClose([c.std, c.std], goldenF32(F, `case${k}.std_dev_t`), { atol: 0, rtol: 1e-6 }, "std");
      expectClose(await given.logProb!.read(), goldenF32(F, `case${k}.given.log_prob`), { atol: 1e-5, rtol: 1e-6 }, "log_prob (given)");
      // sampling with the stored noise
      const sampled = s.step(eps, ts, x, { eta: 1, noise: t(`case${k}.sampled.variance_noise`) });
      expectClose(await sampled.prevSample.read(), goldenF32(F, `case${k}.sampled.prev_sample`), { atol: 1e-5, rtol: 1e-5 }, "prev_sample");
      expectClose(await sampled.logProb!.read(), goldenF32(F, `case${k}.sampled.log_prob`), { atol: 1e-5, rtol: 1e-6 }, "log_prob (sampled)");
    });
  }
  test("per-element timesteps", async () => {
    const s = sched();
    const ts = goldenInts(F, "batched.timesteps");
    const r = s.step(t("batched.model_output"), ts, t("batched.sample"), { eta: 1, prevSample: t("batched.prev_sample") });
    expectClose(await r.mean.read(), goldenF32(F, "batched.prev_sample_mean"), { atol: 1e-5, rtol: 1e-5 }, "mean");
    expectClose(ts.map((x) => s.coefficients(x, 1).std), goldenF32(F, "batched.std_dev_t"), { atol: 0, rtol: 1e-6 }, "std");
    expectClose(await r.logProb!.read(), goldenF32(F, "batched.log_prob"), { atol: 1e-5, rtol: 1e-6 }, "log_prob");
  });
  test("log-prob gradient with respect to the model output matches finite differences", async () => {
    const s = sched();
    const ts = goldenInts(F, "batched.timesteps");
    const eps0 = goldenF32(F, "batched.model_output");
    const shape = goldenShape(F, "batched.model_output");
    const eps = Tensor.from(eps0, shape).requireGrad();
    const x = t("batched.sample");
    const prev = t("batched.prev_sample");
    const lp = s.step(eps, ts, x, { eta: 1, prevSample: prev }).logProb!;
    const total = (await lp.readF32()).reduce((a, b) => a + b, 0);
    expect(Number.isFinite(total)).toBe(true);
    backward(lp, Tensor.from([1, 1, 1], [3]));
    const grad = await eps.grad!.read();
    // float64 host re-implementation of the log-prob for central differences
    const xs = goldenF32(F, "batched.sample"), ps = goldenF32(F, "batched.prev_sample");
    const per = eps0.length / 3;
    const logp = (e: Float64Array, b: number) => {
      const c = s.coefficients(ts[b], 1);
      let acc = 0;
      for (let i = b * per; i < (b + 1) * per; i++) {
        const x0 = (xs[i] - Math.sqrt(1 - c.alphaProdT) * e[i]) / Math.sqrt(c.alphaProdT);
        const mu = Math.sqrt(c.alphaProdPrev) * x0 + Math.sqrt(1 - c.alphaProdPrev - c.std ** 2) * e[i];
        acc += -((ps[i] - mu) ** 2) / (2 * c.std ** 2);
      }
      return acc / per - Math.log(c.std) - Math.log(Math.sqrt(2 * Math.PI));
    };
    const e = Float64Array.from(eps0);
    for (const i of [0, 5, per + 7, 2 * per + 100]) {
      const b = Math.floor(i / per);
      const h = 1e-3;
      e[i] += h;
      const up = logp(e, b);
      e[i] -= 2 * h;
      const dn = logp(e, b);
      e[i] += h;
      const numeric = (up - dn) / (2 * h);
      expect(Math.abs(grad[i] - numeric)).toBeLessThan(1e-4 * Math.max(1, Math.abs(numeric)));
    }
    clearTape();
  });
});
