// LoRA on the real UNet tree: an old-format diffusers LoRA file loads and changes the output exactly
// as merging it into the weights does, and gradients with respect to LoRA weights are right.
import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import { loadPipelineConfig, resolveWeightFiles } from "../src/io/diffusers.ts";
import { loraScale, readLoraFile, writeLoraFile, type LoraLayer } from "../src/io/lora_format.ts";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { UNet2DConditionModel } from "../src/nn/unet.ts";
import { loadWeights } from "../src/nn/load.ts";
import { attachLoraLayers, checkLoraLayers, exportLora, initLora, loadLoraFile, loraParameters, loraTargets } from "../src/nn/lora.ts";
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
    // with no targets named, every attention projection (other linears and the convolutions only when named)
    const every = [...loraTargets(unet).keys()].filter((p) => /\.attn[12]\.(to_q|to_k|to_v|to_out\.0)$/.test(p));
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
      /"lora\.target_modules": 'down_blocks\.9\.attentions\.0\.transformer_blocks\.0\.attn2\.to_q' names no linear or convolution of this UNet/,
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
    const back = peftRoundTrip(unet, layers);
    expect([...back.keys()]).toEqual([...layers.keys()]);
    const x = g("unet.sample");
    const ehs = g("unet.encoder_hidden_states");
    await expectEqualToMergedWeights(unet, back, x, ehs, "ff LoRA vs merged weights");
    await expectLoraGradientAlongItself(unet, x, ehs, 78);
    clearTape();
    unet.disposeParameters();
  });

  test("convolution adapters (3x3, strided, 1x1) and other linears: named by target, saved and read as peft files, equal to merged weights, gradients by finite differences", async () => {
    const unet = freshUnet();
    const all = [...loraTargets(unet).keys()];
    const conv3 = "up_blocks.1.resnets.0.conv1";
    const strided = "down_blocks.0.downsamplers.0.conv";
    const shortcut = "up_blocks.1.resnets.0.conv_shortcut";
    const named = [conv3, strided, shortcut, "conv_out", "mid_block.resnets.0.time_emb_proj"];
    for (const p of named) expect(all).toContain(p);
    // the convolutions come after the attention projections and feed-forward linears, in module order
    expect(all.indexOf("conv_in")).toBeGreaterThan(all.findLastIndex((p) => p.includes(".ff.net.")));
    initLora(unet, 2, 9, 4, ["up_blocks.1.resnets.0.conv1", "downsamplers.0.conv", "resnets.0.conv_shortcut", "conv_out", "mid_block.resnets.0.time_emb_proj"]);
    const adapted = loraParameters(unet).map((p) => p.path);
    expect(adapted).toEqual(all.filter((p) => named.includes(p) || p.endsWith(".downsamplers.0.conv") || p.endsWith(".resnets.0.conv_shortcut")));
    const conv = loraParameters(unet).find((p) => p.path === conv3)!;
    expect(conv.down.shape).toEqual([2, 96, 3, 3]);
    expect(conv.up.shape).toEqual([32, 2, 1, 1]);
    // non-zero up factors, through a peft file and back (alpha 4 over rank 2: scale 2, folded into lora_B)
    const layers = new Map([...(await exportLora(unet))].map(([path, l], k) => [path, { ...l, up: Float32Array.from(l.up, (_, j) => Math.sin(2 + j * 0.9 + k) * 0.2) }]));
    expect(layers.get(conv3)).toMatchObject({ rank: 2, inFeatures: 96, outFeatures: 32, kernelSize: 3, alpha: 4 });
    const back = peftRoundTrip(unet, layers);
    expect([...back.keys()]).toEqual([...layers.keys()].sort());
    const x = g("unet.sample");
    const ehs = g("unet.encoder_hidden_states");
    await expectEqualToMergedWeights(unet, back, x, ehs, "conv LoRA vs merged weights");
    await expectLoraGradientAlongItself(unet, x, ehs, 79);
    clearTape();
    unet.disposeParameters();
  });

  test("a file's adapter must fit its module: a convolution's on a linear, or another kernel size, is a user error", () => {
    const unet = freshUnet();
    const conv = { down: new Float32Array(2 * 96 * 9), up: new Float32Array(32 * 2), rank: 2, inFeatures: 96, outFeatures: 32, kernelSize: 3 };
    expect(() => checkLoraLayers(unet, new Map([["up_blocks.1.resnets.0.conv1", { ...conv, kernelSize: 1, down: new Float32Array(2 * 96) }]]), "x.safetensors")).toThrow(
      /x\.safetensors: LoRA layer 'up_blocks\.1\.resnets\.0\.conv1' is for a 1x1 convolution from 96 to 32 channels, the UNet's module is a 3x3 convolution from 96 to 32 channels/,
    );
    expect(() => checkLoraLayers(unet, new Map([["mid_block.resnets.0.time_emb_proj", { ...conv, inFeatures: 128, outFeatures: 64 }]]), "x.safetensors")).toThrow(/is for a 3x3 convolution from 128 to 64 channels, the UNet's module is a 64x128 linear/);
    expect(() => checkLoraLayers(unet, new Map([["up_blocks.1.resnets.0.conv1", conv]]), "x.safetensors")).not.toThrow();
    unet.disposeParameters();
  });

  test("the old attn-procs LoRA file changes the output exactly as merging W + scale * up @ down", async () => {
    const base = freshUnet();
    const x = g("unet.sample");
    const ehs = g("unet.encoder_hidden_states");
    expect(loadLoraFile(base, LORA)).toBe(48);
    await expectEqualToMergedWeights(base, readLoraFile(LORA).layers, x, ehs, "LoRA vs merged weights");
    base.disposeParameters();
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

/** Write `layers` as a peft file, read it back and attach what was read to `unet` (trainable); returns the read layers. */
function peftRoundTrip(unet: UNet2DConditionModel, layers: ReadonlyMap<string, LoraLayer>): Map<string, LoraLayer> {
  const dir = mkdtempSync(join(tmpdir(), "rl4pix-lora-"));
  try {
    writeLoraFile(join(dir, "lora.safetensors"), layers);
    const back = readLoraFile(join(dir, "lora.safetensors")).layers;
    attachLoraLayers(unet, back, "lora.safetensors", true);
    return back;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * `unet` (with `layers` attached) must give what a fresh
 * UNet gives with the layers merged on the host: W += scale * up @ down, over a convolution's
 * flattened [in, k, k] weight. The adapters must also change the output.
 */
async function expectEqualToMergedWeights(unet: UNet2DConditionModel, layers: ReadonlyMap<string, LoraLayer>, x: Tensor, ehs: Tensor, label: string): Promise<void> {
  const adapted = await noGrad(() => unet.forward(x, [500, 500, 500], ehs)).read();
  const merged = freshUnet();
  const plain = await noGrad(() => merged.forward(x, [500, 500, 500], ehs)).read();
  expect(maxAbsDiff(plain, adapted)).toBeGreaterThan(1e-3);
  const targets = loraTargets(merged);
  for (const [path, l] of layers) {
    const m = targets.get(path)!;
    const w = await m.weight.t.readF32();
    const fan = l.down.length / l.rank; // a linear's in; a convolution's in * k * k
    for (let o = 0; o < l.outFeatures; o++) for (let i = 0; i < fan; i++) {
      let s = 0;
      for (let r = 0; r < l.rank; r++) s += l.up[o * l.rank + r] * l.down[r * fan + i];
      w[o * fan + i] += loraScale(l) * s;
    }
    const shape = m.weight.t.shape;
    m.weight.tensor!.dispose();
    m.weight.tensor = Tensor.from(w, shape).keep();
  }
  expectClose(adapted, await noGrad(() => merged.forward(x, [500, 500, 500], ehs)).read(), { atol: 2e-5, rtol: 1e-5 }, label);
  merged.disposeParameters();
}

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
