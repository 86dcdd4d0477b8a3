import { describe, expect, test } from "bun:test";
import * as ops from "../src/tensor/ops/index.ts";
import { Tensor } from "../src/tensor/index.ts";
import { gpu } from "../src/gpu/device.ts";
import { expectClose, randn, toGpu, useGpu } from "./helpers.ts";
import { adamWRef, clipRef, type AdamWRefState } from "./ref/optim.ts";

useGpu();

const SHAPES = [[1], [7, 13], [1000]];

/** Parameters on the GPU with a fresh `.grad` per step, and their float64 twins. */
function makeParams(seed: number) {
  const host = SHAPES.map((s, i) => randn(s.reduce((a, b) => a * b, 1), seed + i));
  const gpuParams = host.map((h, i) => toGpu(h, SHAPES[i]).requireGrad().keep());
  return { host, gpuParams };
}

function setGrads(params: Tensor[], grads: Float64Array[]): void {
  params.forEach((p, i) => {
    p.grad?.dispose();
    p.grad = toGpu(grads[i], p.shape).keep();
  });
}

describe("AdamW vs float64 torch-formula reference", () => {
  const configs = [
    { lr: 1e-2, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01 },
    { lr: 3e-4, beta1: 0.8, beta2: 0.95, eps: 1e-6, weightDecay: 0 },
    { lr: 0.1, beta1: 0.5, beta2: 0.9, eps: 1e-3, weightDecay: 0.5 },
  ];
  for (const cfg of configs) {
    test(`6 steps, ${JSON.stringify(cfg)}`, async () => {
      const { host, gpuParams } = makeParams(1);
      const refState: AdamWRefState[] = host.map((h) => ({ m: new Float64Array(h.length), v: new Float64Array(h.length) }));
      const state = ops.createAdamWState();
      for (let step = 1; step <= 6; step++) {
        // Gradients of mixed scales, so that both the eps and the sqrt(v) regime are exercised.
        const grads = host.map((h, i) => randn(h.length, 100 * step + i, step % 2 ? 1 : 1e-3));
        setGrads(gpuParams, grads);
        ops.adamW(gpuParams, state, cfg);
        host.forEach((h, i) => adamWRef(h, grads[i], refState[i], step, cfg.lr, cfg.beta1, cfg.beta2, cfg.eps, cfg.weightDecay));
      }
      expect(state.step).toBe(6);
      // f32 arithmetic over six steps of updates of size ~lr: errors are a few ulp of the parameters.
      for (let i = 0; i < host.length; i++) {
        expectClose(await gpuParams[i].read(), host[i], { atol: 2e-6, rtol: 2e-6 }, `param ${i}`);
        expectClose(await state.m[i]!.read(), refState[i].m, { atol: 1e-7, rtol: 1e-5 }, `m ${i}`);
        expectClose(await state.v[i]!.read(), refState[i].v, { atol: 1e-9, rtol: 1e-5 }, `v ${i}`);
      }
      for (const p of gpuParams) p.dispose();
      ops.disposeAdamWState(state);
    });
  }
  test("parameters without a gradient are skipped; an explicit step sets the bias correction", async () => {
    const { host, gpuParams } = makeParams(2);
    const grads = host.map((h, i) => randn(h.length, 7 + i));
    setGrads(gpuParams, grads);
    gpuParams[1].grad!.dispose();
    gpuParams[1].grad = null;
    const state = ops.createAdamWState();
    ops.adamW(gpuParams, state, { lr: 0.05, step: 4 });
    expect(state.step).toBe(4);
    expect(state.m[1] ?? null).toBeNull();
    expectClose(await gpuParams[1].read(), host[1], { atol: 0 }, "untouched parameter");
    for (const i of [0, 2]) {
      const ref = { m: new Float64Array(host[i].length), v: new Float64Array(host[i].length) };
      adamWRef(host[i], grads[i], ref, 4, 0.05, 0.9, 0.999, 1e-8, 0.01);
      expectClose(await gpuParams[i].read(), host[i], { atol: 1e-6, rtol: 1e-6 }, `param ${i}`);
    }
    for (const p of gpuParams) p.dispose();
    ops.disposeAdamWState(state);
  });
  test("the state survives export and import: resumed steps are bit-identical", async () => {
    const a = makeParams(3).gpuParams;
    const stepGrads = (step: number) => SHAPES.map((s, i) => randn(s.reduce((x, y) => x * y, 1), 50 * step + i));
    const stateA = ops.createAdamWState();
    for (let step = 1; step <= 2; step++) {
      setGrads(a, stepGrads(step));
      ops.adamW(a, stateA, { lr: 1e-2 });
    }
    const saved = await ops.exportAdamWState(stateA);
    expect(saved.step).toBe(2);
    expect(saved.m.map((m) => m!.length)).toEqual([1, 91, 1000]);
    // A second copy of the parameters, resumed from the exported state.
    const b = await Promise.all(a.map(async (p) => Tensor.from(await p.read(), p.shape).requireGrad().keep()));
    const stateB = ops.importAdamWState(saved, b);
    for (let step = 3; step <= 4; step++) {
      const grads = stepGrads(step);
      setGrads(a, grads);
      setGrads(b, grads);
      ops.adamW(a, stateA, { lr: 1e-2 });
      ops.adamW(b, stateB, { lr: 1e-2 });
    }
    expect(stateB.step).toBe(4);
    for (let i = 0; i < a.length; i++) expect(Array.from(await b[i].read())).toEqual(Array.from(await a[i].read()));
    expect(() => ops.importAdamWState(saved, [a[1], a[0], a[2]])).toThrow(/importAdamWState: m\[0\] has 1 values, parameter is \[7,13\]/);
    for (const p of [...a, ...b]) p.dispose();
    ops.disposeAdamWState(stateA);
    ops.disposeAdamWState(stateB);
  });
});

describe("gradient norm clipping (torch.nn.utils.clip_grad_norm_)", () => {
  for (const [maxNorm, label] of [[1, "clips"], [1e6, "leaves small gradients alone"]] as const) {
    test(`global norm over several gradients: ${label}`, async () => {
      const { gpuParams } = makeParams(4);
      const grads = gpuParams.map((p, i) => randn(p.size, 30 + i, 2));
      setGrads(gpuParams, grads);
      const noGradParam = toGpu([1, 2], [2]).requireGrad(); // no .grad: ignored
      const norm = ops.clipGradNorm([...gpuParams, noGradParam], maxNorm);
      const ref = clipRef(grads, maxNorm);
      expect(Math.abs((await norm.item()) - ref.norm)).toBeLessThan(1e-6 * ref.norm);
      expect(ref.coef < 1).toBe(maxNorm === 1);
      for (let i = 0; i < grads.length; i++) {
        expectClose(await gpuParams[i].grad!.read(), grads[i].map((g) => g * ref.coef), { atol: 1e-7, rtol: 2e-6 }, `grad ${i}`);
      }
      expect(noGradParam.grad).toBeNull();
      for (const t of [...gpuParams, noGradParam, norm]) t.dispose();
    });
  }
  test("no gradients at all give a zero norm", async () => {
    const p = toGpu([1, 2, 3], [3]).requireGrad();
    const norm = ops.clipGradNorm([p], 1);
    expect(await norm.item()).toBe(0);
    p.dispose();
    norm.dispose();
  });
  test("a gradient over the storage binding limit is reduced and scaled window by window", async () => {
    const g = gpu();
    const n = g.maxBinding / 4 + 3 * 1024; // two windows
    const p = ops.zeros([n]).requireGrad();
    p.grad = ops.full([n], 0.5);
    const small = toGpu([3, 4], [2]).requireGrad();
    small.grad = toGpu([3, 4], [2]);
    const norm = ops.clipGradNorm([p, small], 2);
    const expected = Math.sqrt(0.25 * n + 25);
    expect(Math.abs((await norm.item()) - expected) / expected).toBeLessThan(1e-5);
    const coef = 2 / (expected + 1e-6);
    for (const at of [0, g.maxBinding / 4 - 1, g.maxBinding / 4, n - 1]) {
      const v = new Float32Array(await g.read(p.grad.buffer, at * 4, 4))[0];
      expect(Math.abs(v - 0.5 * coef)).toBeLessThan(1e-5 * 0.5 * coef);
    }
    for (const t of [p, small, norm]) t.dispose();
    g.pool.trim();
  });
});

describe("against torch 1.13 itself (tests/fixtures/adamw_torch.py)", () => {
  test("clip_grad_norm_ then AdamW.step, three steps", async () => {
    const fx = (await import("./fixtures/adamw_torch.json", { with: { type: "json" } })).default as {
      lr: number; beta1: number; beta2: number; eps: number; weight_decay: number; max_norm: number;
      shapes: number[][]; init: number[][];
      steps: { grads: number[][]; norm: number; clipped_grads: number[][]; params: number[][]; exp_avg: number[][]; exp_avg_sq: number[][] }[];
    };
    const params = fx.init.map((v, i) => Tensor.from(v, fx.shapes[i]).requireGrad().keep());
    const state = ops.createAdamWState();
    for (const [k, s] of fx.steps.entries()) {
      setGrads(params, s.grads.map((g) => Float64Array.from(g)));
      const norm = ops.clipGradNorm(params, fx.max_norm);
      expect(Math.abs((await norm.item()) - s.norm)).toBeLessThan(2e-6 * s.norm);
      norm.dispose();
      ops.adamW(params, state, { lr: fx.lr, beta1: fx.beta1, beta2: fx.beta2, eps: fx.eps, weightDecay: fx.weight_decay });
      for (let i = 0; i < params.length; i++) {
        expectClose(await params[i].grad!.read(), s.clipped_grads[i], { atol: 1e-7, rtol: 1e-6 }, `step ${k} clipped grad ${i}`);
        expectClose(await params[i].read(), s.params[i], { atol: 1e-6, rtol: 1e-6 }, `step ${k} param ${i}`);
        expectClose(await state.m[i]!.read(), s.exp_avg[i], { atol: 1e-8, rtol: 1e-5 }, `step ${k} exp_avg ${i}`);
        expectClose(await state.v[i]!.read(), s.exp_avg_sq[i], { atol: 1e-10, rtol: 1e-5 }, `step ${k} exp_avg_sq ${i}`);
      }
    }
    for (const p of params) p.dispose();
    ops.disposeAdamWState(state);
  });
});
