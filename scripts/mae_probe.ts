// Where MAE(edit, input) comes from under a given sampler: per held-out edit, the VAE's round trip
// alone, the edit's change inside and outside the mask, and the target's own change (learning notes E23);
// with --lora FILE, of the model with that trained LoRA (the same edits and seeds, so two runs pair up: E33).
// Usage: bun scripts/mae_probe.ts --model DIR [--lora FILE] [--n 16] [--seeds 2] [--set key=value ...]
import { existsSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { initGpu, destroyGpu } from "../src/gpu/device.ts";
import { synthDataset } from "../src/data/synth_dataset.ts";
import { loadIP2P, encodeImages, decodeLatents } from "../src/diffusion/pipeline.ts";
import { imageToTensor, tensorToImage } from "../src/diffusion/images.ts";
import * as ops from "../src/tensor/ops/index.ts";
import { editImage } from "../src/diffusion/edit.ts";
import { writePng, resize } from "../src/io/image.ts";
import { openDataset, loadImage } from "../src/io/datasets/index.ts";
import { loadConfig } from "../src/rl/config.ts";
import { loadLoraFile } from "../src/nn/lora.ts";
import { prepareSample } from "../src/rl/prepare.ts";
import { HELDOUT_SEED } from "../src/pretrain/data.ts";
import { EXPERIMENT_SETTINGS } from "./experiment_settings.ts";

const { values } = parseArgs({ options: { model: { type: "string" }, n: { type: "string", default: "16" }, seeds: { type: "string", default: "2" }, data: { type: "string", default: "/tmp/mae_probe_heldout" }, pics: { type: "string" }, lora: { type: "string" }, set: { type: "string", multiple: true, default: [] } } });
await initGpu();
const manifest = join(values.data!, "manifest.jsonl");
if (!existsSync(manifest)) await synthDataset(values.data!, { n: Number(values.n), seed: HELDOUT_SEED, size: 32, grounded: true });
const cfg = loadConfig(undefined, [...EXPERIMENT_SETTINGS, "sample.num_steps=8", ...values.set!]);
const m = loadIP2P(values.model!);
if (values.lora) loadLoraFile(m.unet, values.lora);
const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
const rows: { vae: number; tgt: number; all: number; inside: number; outside: number; frac: number }[] = [];
for await (const s of (await openDataset(manifest)).samples()) {
  const p = await prepareSample(s, 32, 4);
  const hw = p.size * p.size;
  const input = { width: p.size, height: p.size, channels: 3, data: p.source };
  const target = s.target ? (await loadImage(s.target)).data : null;
  const rt = (await tensorToImage(decodeLatents(m, ops.scale(encodeImages(m, imageToTensor(input, p.size, p.size)), m.config.vae.scalingFactor)))).data;
  const mae = (a: ArrayLike<number>, sel: (i: number) => boolean) => {
    let sum = 0, n = 0;
    for (let c = 0; c < 3; c++) for (let i = 0; i < hw; i++) if (sel(i)) { sum += Math.abs(a[c * hw + i] - p.source[c * hw + i]); n++; }
    return { sum: sum / (3 * hw), n };
  };
  const frac = mean(Array.from(p.mask));
  for (let k = 0; k < Number(values.seeds); k++) {
    const r = await editImage(m, input, p.instruction, { steps: cfg.sample.num_steps, guidance: { text: cfg.sample.guidance_scale, image: cfg.sample.image_guidance_scale }, eta: cfg.sample.eta, seed: 1000 + k });
    const e = r.image.data;
    const row = { vae: mae(rt, () => true).sum, tgt: target ? mae(target, () => true).sum : NaN, all: mae(e, () => true).sum, inside: mae(e, (i) => p.mask[i] > 0.5).sum, outside: mae(e, (i) => p.mask[i] <= 0.5).sum, frac };
    rows.push(row);
    if (values.pics && k === 0) {
      // input | target | VAE round trip | edit | 4 x |edit − input|, side by side, 4x nearest
      const S = p.size, strip = new Float32Array(3 * S * S * 5);
      const diff = e.map((v, i) => Math.min(1, 4 * Math.abs(v - p.source[i])));
      [p.source, target ?? p.source, rt, e, diff].forEach((img, j) => {
        for (let c = 0; c < 3; c++) for (let y = 0; y < S; y++) for (let x = 0; x < S; x++) strip[c * S * S * 5 + y * S * 5 + j * S + x] = img[c * S * S + y * S + x];
      });
      await writePng(join(values.pics, `${rows.length.toString().padStart(2, "0")}.png`), resize({ width: 5 * S, height: S, channels: 3, data: strip }, 20 * S, 4 * S, "nearest"));
    }
    console.log(`${p.instruction.padEnd(50)} mask ${frac.toFixed(2)} target ${row.tgt.toFixed(3)} vae ${row.vae.toFixed(3)} edit ${row.all.toFixed(3)} = in ${row.inside.toFixed(3)} + out ${row.outside.toFixed(3)}`);
  }
}
const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const obj = rows.filter((r) => r.frac < 0.5);
console.log(`all ${rows.length}: edit MAE mean ${mean(rows.map((r) => r.all)).toFixed(4)} median ${med(rows.map((r) => r.all)).toFixed(4)}, > tau ${(100 * mean(rows.map((r) => (r.all > cfg.reward.tau ? 1 : 0)))).toFixed(0)} %`);
console.log(`object edits ${obj.length}: edit ${mean(obj.map((r) => r.all)).toFixed(4)} (inside ${mean(obj.map((r) => r.inside)).toFixed(4)}, outside ${mean(obj.map((r) => r.outside)).toFixed(4)}), vae round trip ${mean(obj.map((r) => r.vae)).toFixed(4)}, target ${mean(obj.map((r) => r.tgt)).toFixed(4)}, > tau ${(100 * mean(obj.map((r) => (r.all > cfg.reward.tau ? 1 : 0)))).toFixed(0)} %`);
destroyGpu();
process.exit(0);
