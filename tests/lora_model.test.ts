// LoRA on the real UNet tree: an old-format diffusers LoRA file loads and changes the output exactly
// as merging it into the weights does, and gradients with respect to LoRA weights are right.
import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import { loadPipelineConfig, resolveWeightFiles } from "../src/io/diffusers.ts";
import { readLoraFile, writeLoraFile } from "../src/io/lora_format.ts";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { UNet2DConditionModel } from "../src/nn/unet.ts";
import { loadWeights } from "../src/nn/load.ts";
import { attachLoraLayers, exportLora, initLora, loadLoraFile, loraParameters, loraTargets } from "../src/nn/lora.ts";
import { Tensor, backward, clearTape, noGrad, scope } from "../src/tensor/index.ts";
import * as ops from "../src/tensor/ops/index.ts";
import { expectClose, maxAbsDiff, useGpu } from "./helpers.ts";
import { gpu } from "../src/gpu/device.ts";
import { GOLDENS, TINY_IP2P, goldenF32, goldenShape } from "./goldens.ts";

useGpu();
const C = "components.safetensors";
const LORA = join(GOLDENS, "tiny-ip2p-lora", "pytorch_lora_weights.safetensors");
const g = (name: string) => Tensor.from(goldenF32(C, name), goldenShape(C, name));

function freshUnet(): UNet2DConditionModel {
  const unet = new UNet2DConditionModel(loadPipelineConfig(TINY_IP2P).unet);
  loadWeights(unet, resolveWeightFiles(join(TINY_IP2P, "unet")));
  return unet;
}

describe("LoRA on the UNet", () => {
  test("target_modules: only the named projections get adapters, initialised as in a full init", async () => {
    const unet = freshUnet();
    initLora(unet, 4, 11);
    const all = new Map<string, Float32Array>();
    for (const p of loraParameters(unet)) all.set(p.path, await p.down.readF32());
    // with no targets named, every attention projection (the feed-forward linears only when named)
    const every = [...loraTargets(unet).keys()].filter((p) => !p.includes(".ff.net."));
    expect(every.length).toBeLessThan(loraTargets(unet).size);
    expect([...all.keys()]).toEqual(every);
    initLora(unet, 4, 11, 4, ["attn2.to_q", "to_k"]);
    const some = loraParameters(unet);
    const want = every.filter((p) => p.endsWith(".attn2.to_q") || p.endsWith(".to_k"));
    expect(want.length).toBeGreaterThan(0);
    expect(want.length).toBeLessThan(every.length);
    expect(some.map((p) => p.path)).toEqual(want);
    for (const p of some) expect(Array.from(await p.down.readF32())).toEqual(Array.from(all.get(p.path)!));
    expect([...loraTargets(unet)].filter(([, lin]) => lin.lora !== null).length).toBe(want.length);
    unet.disposeParameters();
  });

  test("target_modules: a module path suffix adapts that one projection; a target matching none is a user error", async () => {
    const unet = freshUnet();
    const every = [...loraTargets(unet).keys()];
    const last = every.filter((p) => p.endsWith(".attn2.to_v")).at(-1)!;
    const suffix = last.split(".").slice(-6).join("."); // e.g. attentions.1.transformer_blocks.0.attn2.to_v
    initLora(unet, 4, 11, 4, [suffix]);
    expect(loraParameters(unet).map((p) => p.path)).toEqual([last]);
    expect(() => initLora(unet, 4, 11, 4, ["attn2.to_q", "down_blocks.9.attentions.0.transformer_blocks.0.attn2.to_q"])).toThrow(
      /"lora\.target_modules": 'down_blocks\.9\.attentions\.0\.transformer_blocks\.0\.attn2\.to_q' names no LoRA target of this UNet/,
    );
    unet.disposeParameters();
  });

  test("feed-forward adapters (ff.net.0.proj, ff.net.2): named by target, saved and read as peft files, equal to merged weights, gradients by finite differences", async () => {
    const unet = freshUnet();
    const all = [...loraTargets(unet).keys()];
    const proj = all.filter((p) => p.endsWith(".ff.net.0.proj"));
    const lastOut = all.filter((p) => p.endsWith(".ff.net.2")).at(-1)!;
    expect(proj.length).toBeGreaterThan(1);
    initLora(unet, 2, 5, 2, ["ff.net.0.proj", lastOut]);
    expect(loraParameters(unet).map((p) => p.path)).toEqual(all.filter((p) => proj.includes(p) || p === lastOut));
    // non-zero up factors, through a peft file and back
    const layers = new Map([...(await exportLora(unet))].map(([path, l], k) => [path, { ...l, up: Float32Array.from(l.up, (_, j) => Math.sin(1 + j * 0.7 + k) * 0.3) }]));
    const dir = mkdtempSync(join(tmpdir(), "rl4pix-ff-lora-"));
    try {
      writeLoraFile(join(dir, "ff.safetensors"), layers);
      const back = readLoraFile(join(dir, "ff.safetensors"));
      expect([...back.layers.keys()]).toEqual([...layers.keys()]);
      attachLoraLayers(unet, back.layers, "ff.safetensors", true);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    const x = g("unet.sample");
    const ehs = g("unet.encoder_hidden_states");
    const withLora = await noGrad(() => unet.forward(x, [500, 500, 500], ehs)).read();
    const merged = freshUnet();
    const plain = await noGrad(() => merged.forward(x, [500, 500, 500], ehs)).read();
    expect(maxAbsDiff(plain, withLora)).toBeGreaterThan(1e-3);
    const targets = loraTargets(merged);
    for (const [path, l] of layers) {
      const lin = targets.get(path)!;
      const w = await lin.weight.t.readF32();
      for (let o = 0; o < l.outFeatures; o++) for (let i = 0; i < l.inFeatures; i++) {
        let s = 0;
        for (let r = 0; r < l.rank; r++) s += l.up[o * l.rank + r] * l.down[r * l.inFeatures + i];
        w[o * l.inFeatures + i] += (l.alpha! / l.rank) * s;
      }
      lin.weight.tensor!.dispose();
      lin.weight.tensor = Tensor.from(w, [l.outFeatures, l.inFeatures]).keep();
    }
    expectClose(withLora, await noGrad(() => merged.forward(x, [500, 500, 500], ehs)).read(), { atol: 2e-5, rtol: 1e-5 }, "ff LoRA vs merged weights");
    merged.disposeParameters();
    await expectLoraGradientAlongItself(unet, x, ehs, 78);
    clearTape();
    unet.disposeParameters();
  });

  test("the old attn-procs LoRA file changes the output exactly as merging W + scale * up @ down", async () => {
    const base = freshUnet();
    const x = g("unet.sample");
    const ehs = g("unet.encoder_hidden_states");
    const plain = await noGrad(() => base.forward(x, [500, 500, 500], ehs)).read();
    expect(loadLoraFile(base, LORA)).toBe(48);
    const withLora = await noGrad(() => base.forward(x, [500, 500, 500], ehs)).read();
    expect(maxAbsDiff(plain, withLora)).toBeGreaterThan(1e-3);
    // merge on the host into a second copy of the weights
    const merged = freshUnet();
    const file = readLoraFile(LORA);
    const targets = loraTargets(merged);
    for (const [path, l] of file.layers) {
      const lin = targets.get(path)!;
      const w = await lin.weight.t.readF32();
      const scale = l.alpha === undefined ? 1 : l.alpha / l.rank;
      for (let o = 0; o < l.outFeatures; o++) for (let i = 0; i < l.inFeatures; i++) {
        let s = 0;
        for (let r = 0; r < l.rank; r++) s += l.up[o * l.rank + r] * l.down[r * l.inFeatures + i];
        w[o * l.inFeatures + i] += scale * s;
      }
      lin.weight.tensor!.dispose();
      lin.weight.tensor = Tensor.from(w, [l.outFeatures, l.inFeatures]).keep();
    }
    const mergedOut = await noGrad(() => merged.forward(x, [500, 500, 500], ehs)).read();
    expectClose(withLora, mergedOut, { atol: 2e-5, rtol: 1e-5 }, "LoRA vs merged weights");
    base.disposeParameters();
    merged.disposeParameters();
  });

  test("gradients with respect to LoRA weights match a directional finite difference", async () => {
    const unet = freshUnet();
    const file = readLoraFile(LORA);
    attachLoraLayers(unet, file.layers, LORA, true);
    const x = g("unet.sample");
    const ehs = g("unet.encoder_hidden_states");
    await expectLoraGradientAlongItself(unet, x, ehs, 77);
    clearTape();
    unet.disposeParameters();
  });
});

/**
 * The gradient of <unet(x), G> (G random from `seed`) with respect to every attached adapter weight,
 * checked along its own direction: moving all of them by ±h along d = grad / |grad| must change the
 * loss by 2h|grad| (a central finite difference).
 */
async function expectLoraGradientAlongItself(unet: UNet2DConditionModel, x: Tensor, ehs: Tensor, seed: number): Promise<void> {
  const G = ops.randn([3, 4, 8, 8], seed).keep();
  const loss = () => ops.sum(ops.mul(unet.forward(x, [999, 500, 1], ehs), G));
  scope(() => backward(loss()));
  const params = loraParameters(unet).flatMap((p) => [p.down, p.up]);
  const grads = await Promise.all(params.map((p) => p.grad!.readF32()));
  const norm = Math.sqrt(grads.reduce((a, gr) => a + gr.reduce((s, v) => s + v * v, 0), 0));
  expect(norm).toBeGreaterThan(0);
  const h = 1e-2;
  const originals = await Promise.all(params.map((p) => p.readF32()));
  const evalAt = async (sign: number) => {
    params.forEach((p, i) => {
      const t = Tensor.from(originals[i].map((o, j) => o + (sign * h * grads[i][j]) / norm), p.shape);
      gpuCopy(t, p);
      t.dispose();
    });
    return (await noGrad(() => loss()).readF32())[0];
  };
  const directional = ((await evalAt(1)) - (await evalAt(-1))) / (2 * h);
  expect(Math.abs(directional - norm) / norm).toBeLessThan(2e-2);
}

/** Overwrite `dst`'s data with `src`'s (same shape), keeping `dst`'s identity. */
function gpuCopy(src: Tensor, dst: Tensor): void {
  gpu().copy(src.buffer, 0, dst.buffer, 0, src.byteLength);
}
