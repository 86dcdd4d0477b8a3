// Diagnostics for "does the attention-cosine reward respond to the policy?" (docs/learning-notes.md).
// Runs the demo's sampler (32 px, 6 DDIM steps, eta 1, s_T 5, s_I 1.5) on the demo's synthetic set
// and prints, per sample:
//   flat    how flat a_pred is: cos(a_pred, uniform map), max/mean of a_pred, cos(uniform, a_gt)
//   shift   an oracle for the policy's lever: after every DDIM step add `delta` along one latent
//           channel (+/-) inside the mask (or everywhere with --global) and report the change of
//           the mean cosine over the seeds (same seeds with and without the shift: paired).
// Usage: bun scripts/attention_probe.ts [--model DIR] [--layers SPEC] [--qscale K] [--delta D]
//        [--global] [--seeds N]
// --qscale multiplies every attn2.to_q weight in memory (attention logits x K).
import { existsSync } from "node:fs";
import { join } from "node:path";
import { tmpdir } from "node:os";
import { initGpu } from "../src/gpu/device.ts";
import { synthDataset } from "../src/data/synth_dataset.ts";
import { defaultModelDir } from "../src/models/default_model.ts";
import { encodeImages, encodePrompts, guidedConditioning, guidedNoise, loadIP2P } from "../src/diffusion/pipeline.ts";
import { openDataset } from "../src/io/datasets/index.ts";
import { type PreparedSample, prepareSample } from "../src/rl/prepare.ts";
import { cosineSimilarity } from "../src/rl/reward.ts";
import { AttentionMapRecorder, selectCrossAttentionLayers } from "../src/diffusion/attention_store.ts";
import { areaAverage } from "../src/io/mask.ts";
import { Tensor } from "../src/tensor/tensor.ts";
import { noGrad } from "../src/tensor/autograd.ts";
import { scope } from "../src/tensor/scope.ts";
import * as ops from "../src/tensor/ops/index.ts";

const args = process.argv.slice(2);
const opt = (name: string, def: string) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : def;
};
const layerSpec = opt("--layers", "res:2");
const qscale = Number(opt("--qscale", "1"));
const delta = Number(opt("--delta", "1"));
const nSeeds = Number(opt("--seeds", "4"));
const global = args.includes("--global");

const data = join(tmpdir(), "rl4pix-attention-probe-data");
if (!existsSync(join(data, "manifest.jsonl"))) await synthDataset(data, { n: 4, seed: 5, size: 32 }); // the demo's set
await initGpu();
const m = loadIP2P(opt("--model", "") || (await defaultModelDir()));
const layers = selectCrossAttentionLayers(m.unet, layerSpec);
if (qscale !== 1) {
  for (const [path, attn] of m.unet.attentionModules()) if (path.endsWith(".attn2")) attn.to_q.weight.tensor = ops.scale(attn.to_q.weight.t, qscale).keep();
}
const samples: PreparedSample[] = [];
for await (const s of (await openDataset(join(data, "manifest.jsonl"))).samples()) samples.push(await prepareSample(s, 32, 8));
const seeds = [...Array(nSeeds).keys()].map((i) => 101 + i);

/** a_pred of one edit; `shift` [4*16*16] is added to the latents after every step. */
async function attentionMap(s: PreparedSample, seed: number, shift: Float32Array | null): Promise<Float32Array> {
  const prompts = encodePrompts(m, [s.instruction]);
  const lat = encodeImages(m, ops.affine(Tensor.from(s.source, [1, 3, 32, 32], "f32"), 2, -1));
  const cond = guidedConditioning(m, prompts.embeds, lat);
  const rec = new AttentionMapRecorder(layers, prompts.tokenCounts, 8, 8).attach();
  const sh = shift ? Tensor.from(shift, [1, 4, 16, 16], "f32").keep() : null;
  let x = ops.randn([1, 4, 16, 16], seed, 0n).keep();
  noGrad(() => {
    m.scheduler.setTimesteps(6).forEach((t, i) => {
      const next = scope(() => {
        const eps = guidedNoise(m, x, [t], cond, { text: 5, image: 1.5 });
        const noise = ops.randn([1, 4, 16, 16], seed, BigInt(i + 1) * 1024n);
        const p = m.scheduler.step(eps, t, x, { eta: 1, noise }).prevSample;
        return sh ? ops.add(p, sh) : p;
      });
      x.dispose();
      x = next.keep();
      rec.step();
    });
  });
  const [a] = await rec.maps();
  rec.dispose();
  x.dispose();
  sh?.dispose();
  return a;
}

const mean = (v: number[]) => v.reduce((a, b) => a + b, 0) / v.length;
const uniform = new Float32Array(64).fill(1);
console.log(`layers ${layerSpec} (${layers.length}), attn2 logits x${qscale}, shift ${delta}${global ? " everywhere" : " inside the mask"}, ${nSeeds} seeds`);
for (const s of samples) {
  const maps = await Promise.all(seeds.map((sd) => attentionMap(s, sd, null)));
  const base = maps.map((a) => cosineSimilarity(a, s.aGt));
  const flat = mean(maps.map((a) => cosineSimilarity(a, uniform)));
  const spread = mean(maps.map((a) => Math.max(...a) / mean([...a])));
  const m16 = areaAverage({ width: 32, height: 32, data: s.mask }, 16, 16).data;
  const moves: string[] = [];
  for (let c = 0; c < 4; c++) {
    for (const sign of [1, -1]) {
      const shift = new Float32Array(4 * 256);
      for (let i = 0; i < 256; i++) shift[c * 256 + i] = sign * delta * (global ? 1 : m16[i]);
      const cs: number[] = [];
      for (const sd of seeds) cs.push(cosineSimilarity(await attentionMap(s, sd, shift), s.aGt));
      moves.push(`${sign > 0 ? "+" : "-"}c${c} ${(mean(cs) - mean(base)).toFixed(4)}`);
    }
  }
  console.log(`"${s.instruction}": cos ${mean(base).toFixed(4)} (uniform map ${cosineSimilarity(uniform, s.aGt).toFixed(4)}) | cos(a_pred, uniform) ${flat.toFixed(4)} max/mean ${spread.toFixed(2)} | shift: ${moves.join("  ")}`);
}
process.exit(0);
