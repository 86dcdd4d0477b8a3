// Dynamic loss scaling (src/rl/grad_scaler.ts) and the optimizer step that uses it
// (src/rl/optimizer_step.ts), against torch.cuda.amp.GradScaler's rules: the scale starts at 2^16,
// halves (and the count restarts) on a step whose gradients hold an inf or NaN, doubles after 2000
// good steps in a row, never grows past f32's range; a skipped step leaves the weights and AdamW's
// state untouched; unscaling by a power of two is exact, so a scaled step equals an unscaled one. And
// on the device: a backward through f16 activations at too large a scale overflows, and the step is
// skipped instead of poisoning the weights.
import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import { GradScaler } from "../src/rl/grad_scaler.ts";
import { optimizerStep } from "../src/rl/optimizer_step.ts";
import { createAdamWState, exportAdamWState } from "../src/tensor/ops/optim.ts";
import { loadPipelineConfig, resolveWeightFiles } from "../src/io/diffusers.ts";
import { UNet2DConditionModel } from "../src/nn/unet.ts";
import { loadWeights } from "../src/nn/load.ts";
import { initLora, loraParameters } from "../src/nn/lora.ts";
import { Tensor, backward, clearTape, scope } from "../src/tensor/index.ts";
import * as ops from "../src/tensor/ops/index.ts";
import { gpu } from "../src/gpu/device.ts";
import { randn, useGpu } from "./helpers.ts";
import { TINY_IP2P, goldenF32, goldenShape } from "./goldens.ts";

useGpu();

describe("the loss scale's updates (torch's update())", () => {
  test("torch's defaults", () => {
    const s = new GradScaler();
    expect(s.scale).toBe(65536);
    expect([s.growthFactor, s.backoffFactor, s.growthInterval]).toEqual([2, 0.5, 2000]);
    expect(s.state()).toEqual({ scale: 65536, growthTracker: 0 });
  });

  test("an overflow halves the scale and restarts the count; growthInterval good steps in a row double it", () => {
    const s = new GradScaler({ initScale: 1024, growthInterval: 3 });
    const trace: [number, number][] = [];
    for (const inf of [false, false, true, false, false, false, false, true, true, false, false, false]) {
      s.update(inf);
      const st = s.state();
      trace.push([st.scale, st.growthTracker]);
    }
    // worked by hand from torch's _amp_update_scale_
    expect(trace).toEqual([
      [1024, 1], [1024, 2], // two good steps
      [512, 0], // overflow: halve, restart the count
      [512, 1], [512, 2], [1024, 0], // the third good step in a row doubles
      [1024, 1],
      [512, 0], [256, 0], // two overflows
      [256, 1], [256, 2], [512, 0],
    ]);
  });

  test("the scale never grows past f32's range; a state round-trips", () => {
    const s = new GradScaler({ initScale: 2 ** 127, growthInterval: 1 });
    s.update(false);
    expect(s.scale).toBe(2 ** 127); // 2^128 is inf in f32: torch keeps the old scale
    expect(s.state().growthTracker).toBe(0);
    const t = new GradScaler({ initScale: 8, growthInterval: 5 });
    t.update(false);
    t.update(true);
    t.update(false);
    const u = new GradScaler({}, t.state());
    expect(u.state()).toEqual({ scale: 4, growthTracker: 1 });
  });
});

describe("an optimizer step with loss scaling", () => {
  const shapes = [[3, 5], [7]];
  const weights = () => shapes.map((sh, i) => Tensor.from(Float32Array.from(randn(sh.reduce((a, b) => a * b), 10 + i)), sh).keep().requireGrad());
  const grads = shapes.map((sh, i) => Float32Array.from(randn(sh.reduce((a, b) => a * b), 20 + i, 0.3)));
  const opts = { maxGradNorm: 1, adamW: { lr: 1e-2, weightDecay: 0.01 } };
  const setGrads = (ps: Tensor[], scale: number, poison?: number) =>
    ps.forEach((p, i) => {
      const g = grads[i].map((v) => v * scale);
      if (poison !== undefined && i === 1) g[3] = poison;
      p.grad = Tensor.from(g, p.shape).keep();
    });

  test("unscaling by the (power-of-two) scale is exact: the step equals the unscaled one, the norm is the unscaled gradient's", async () => {
    const a = weights(), b = weights();
    const sa = createAdamWState(), sb = createAdamWState();
    const scaler = new GradScaler();
    setGrads(a, 1);
    setGrads(b, scaler.scale);
    const ra = await optimizerStep(a, sa, opts, null);
    const rb = await optimizerStep(b, sb, opts, scaler);
    let sq = 0;
    for (const g of grads) for (const v of g) sq += v * v;
    expect(rb.skipped).toBe(false);
    expect(Math.abs(rb.gradNorm - Math.sqrt(sq))).toBeLessThan(1e-6 * Math.sqrt(sq));
    expect(rb.gradNorm).toBe(ra.gradNorm);
    for (let i = 0; i < a.length; i++) expect(Array.from(await b[i].readF32())).toEqual(Array.from(await a[i].readF32()));
    expect(sb.step).toBe(1);
    expect(scaler.state()).toEqual({ scale: 65536, growthTracker: 1 });
    for (const p of b) expect(p.grad).toBeNull();
    for (const p of [...a, ...b]) p.dispose();
  });

  for (const [what, poison] of [["an inf", Infinity], ["a NaN", NaN]] as const) {
    test(`${what} in a gradient skips the step: weights and AdamW state unchanged, the scale halved, gradients cleared`, async () => {
      const ps = weights();
      const state = createAdamWState();
      const scaler = new GradScaler();
      // one good step first, so there are moments that must not move
      setGrads(ps, scaler.scale);
      await optimizerStep(ps, state, opts, scaler);
      const before = await Promise.all(ps.map((p) => p.readF32()));
      const moments = await exportAdamWState(state);
      setGrads(ps, scaler.scale, poison);
      const r = await optimizerStep(ps, state, opts, scaler);
      expect(r.skipped).toBe(true);
      expect(Number.isFinite(r.gradNorm)).toBe(false);
      for (let i = 0; i < ps.length; i++) expect(Array.from(await ps[i].readF32())).toEqual(Array.from(before[i]));
      const after = await exportAdamWState(state);
      expect(after.step).toBe(1);
      for (let i = 0; i < ps.length; i++) {
        expect(Array.from(after.m[i]!)).toEqual(Array.from(moments.m[i]!));
        expect(Array.from(after.v[i]!)).toEqual(Array.from(moments.v[i]!));
      }
      expect(scaler.state()).toEqual({ scale: 32768, growthTracker: 0 });
      for (const p of ps) expect(p.grad).toBeNull();
      for (const p of ps) p.dispose();
    });
  }

  test("without a scaler a non-finite gradient is reported, not stepped (the trainer stops the run)", async () => {
    const ps = weights();
    const state = createAdamWState();
    const before = await Promise.all(ps.map((p) => p.readF32()));
    setGrads(ps, 1, Infinity);
    const r = await optimizerStep(ps, state, opts, null);
    expect(r.skipped).toBe(true);
    expect(state.step).toBe(0);
    for (let i = 0; i < ps.length; i++) expect(Array.from(await ps[i].readF32())).toEqual(Array.from(before[i]));
    for (const p of ps) p.dispose();
  });
});

describe("on f16 activations", () => {
  test("a backward through the f16 UNet at too large a scale overflows f16 and is skipped; at a smaller scale it steps", async () => {
    expect(gpu().hasF16).toBe(true);
    const C = "components.safetensors";
    const g = (name: string) => Tensor.from(goldenF32(C, name), goldenShape(C, name));
    const unet = new UNet2DConditionModel(loadPipelineConfig(TINY_IP2P).unet);
    loadWeights(unet, resolveWeightFiles(join(TINY_IP2P, "unet")), { castF16: true });
    unet.activationDtype = "f16";
    initLora(unet, 4, 7);
    const params = loraParameters(unet).flatMap((p) => [p.down, p.up]);
    const G = Tensor.from(Float32Array.from(randn(3 * 4 * 8 * 8, 77)), [3, 4, 8, 8]).keep(); // upstream gradient
    const x = g("unet.sample"), ehs = g("unet.encoder_hidden_states");
    const state = createAdamWState();
    // 2^40 times a unit gradient is past f16's largest value (65504): the cast of the noise
    // prediction's gradient to f16 overflows, and the inf reaches the LoRA gradients
    const scaler = new GradScaler({ initScale: 2 ** 40 });
    const before = await Promise.all(params.map((p) => p.readF32()));
    const stepAt = async (s: GradScaler) => {
      scope(() => backward(s.scaleLoss(ops.sum(ops.mul(unet.forward(x, [500, 500, 500], ehs), G)))));
      clearTape();
      return await optimizerStep(params, state, { maxGradNorm: 1e9, adamW: { lr: 1e-3 } }, s);
    };
    const first = await stepAt(scaler);
    expect(first.skipped).toBe(true);
    expect(scaler.scale).toBe(2 ** 39);
    for (let i = 0; i < params.length; i++) expect(Array.from(await params[i].readF32())).toEqual(Array.from(before[i]));
    // back off to a scale the f16 range holds (what repeated halving does), and the step is taken
    const second = await stepAt(new GradScaler({ initScale: 2 ** 8 }));
    expect(second.skipped).toBe(false);
    expect(second.gradNorm).toBeGreaterThan(0);
    expect(state.step).toBe(1);
    G.dispose();
    unet.disposeParameters();
  });
});
