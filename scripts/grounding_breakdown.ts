// Where does the editor's instruction attention land, token group by token group and timestep by
// timestep? Teacher-forced on held-out grounded edits (z_t from the target's latents with fixed
// noise, the source's latents and the instruction as conditions, text branch only), the map of
//   named   the instruction's tokens naming a shape of the source scene ("red square" in "remove the red square")
//   rest    the instruction's other real tokens ("remove", "the", …)
//   all     every real token (BOS, EOS and padding excluded): what the paper's reward averages
// summed over the default map layers, against the edit mask, as cos(map, mask) / cos(constant, mask).
// (learning notes E17: the paper's measure is ~1x while an object's own words are grounded.)
// Usage: bun scripts/grounding_breakdown.ts [--model DIR] [--n 64] [--t 50,300,600,900]
import { parseArgs } from "node:util";
import { initGpu, destroyGpu } from "../src/gpu/device.ts";
import { disposeModels, encodeImages, encodePrompts, loadIP2P } from "../src/diffusion/pipeline.ts";
import { resolveLayerSpec } from "../src/diffusion/edit.ts";
import { setAttentionCaptureHook } from "../src/nn/attention.ts";
import { noGrad } from "../src/tensor/index.ts";
import { scopeAsync } from "../src/tensor/scope.ts";
import * as ops from "../src/tensor/ops/index.ts";
import { cosineSimilarity } from "../src/rl/reward.ts";
import { mixSeeds } from "../src/data/prng.ts";
import { defaultModelDir } from "../src/models/default_model.ts";
import { imageBatch } from "../src/pretrain/objectives.ts";
import { heldOutExamples, maskToMap } from "../src/pretrain/data.ts";
import { ObjectMapRecorder, wordPositions } from "../src/pretrain/evaluate.ts";

const { values } = parseArgs({ options: { model: { type: "string" }, n: { type: "string", default: "64" }, t: { type: "string", default: "50,300,600,900" } } });
await initGpu();
const m = loadIP2P(values.model ?? (await defaultModelDir()));
const size = 32;
const layers = resolveLayerSpec(m, "auto");
const side = size / (m.vae.scaleFactor * layers[0].factor);
const examples = heldOutExamples(Number(values.n), size);
const sf = m.config.vae.scalingFactor;
const groups = ["named", "rest", "all"] as const;
const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / Math.max(xs.length, 1);
const se = (xs: number[]) => Math.sqrt(xs.reduce((a, x) => a + (x - mean(xs)) ** 2, 0) / Math.max(xs.length - 1, 1) / Math.max(xs.length, 1));

for (const t of values.t!.split(",").map(Number)) {
  const abar = m.scheduler.alphasCumprod[t];
  const ratios: Record<(typeof groups)[number], number[]> = { named: [], rest: [], all: [] };
  for (let i = 0; i < examples.length; i += 8) {
    const chunk = examples.slice(i, i + 8);
    const rec = new ObjectMapRecorder(new Set(layers.map((l) => l.path)), side * side);
    const entries: { b: number; group: (typeof groups)[number]; idx: number }[] = [];
    chunk.forEach((ex, b) => {
      const len = m.tokenizer.encode(ex.instruction).inputIds.length; // with BOS and EOS, before padding
      const real = Array.from({ length: len - 2 }, (_, k) => k + 1);
      const named = new Set<number>();
      for (const s of ex.sample.sourceScene.shapes) for (const p of wordPositions(m, ex.instruction, `${s.color} ${s.kind}`) ?? []) named.add(p);
      const cols = { named: [...named], rest: real.filter((p) => !named.has(p)), all: real };
      for (const g of groups) if (cols[g].length > 0) entries.push({ b, group: g, idx: rec.add(b, cols[g]) });
    });
    try {
      await scopeAsync(async () => {
        noGrad(() => {
          const z0 = ops.scale(encodeImages(m, imageBatch(chunk.map((e) => e.target), size)), sf); // [b, 4, h, w]
          const src = encodeImages(m, imageBatch(chunk.map((e) => e.source), size)); // [b, 4, h, w], unscaled as IP2P feeds it
          const eps = ops.concat(chunk.map((_, b) => ops.randn([1, ...z0.shape.slice(1)], mixSeeds(0x4e1d, i + b))), 0);
          const zt = ops.add(ops.scale(z0, Math.sqrt(abar)), ops.scale(eps, Math.sqrt(1 - abar)));
          const embeds = encodePrompts(m, chunk.map((e) => e.instruction)).embeds;
          setAttentionCaptureHook(rec);
          try {
            m.unet.forward(ops.concat([zt, src], 1), chunk.map(() => t), embeds);
          } finally {
            setAttentionCaptureHook(null);
          }
        });
        for (const e of entries) {
          const map = await rec.sums[e.idx].out.readF32();
          const gt = maskToMap(chunk[e.b].mask, size, side);
          ratios[e.group].push(cosineSimilarity(map, gt) / Math.max(cosineSimilarity(new Float32Array(map.length).fill(1), gt), 1e-9));
        }
      });
    } finally {
      rec.dispose();
    }
  }
  console.log(`t ${t}: ` + groups.map((g) => `${g} ${mean(ratios[g]).toFixed(3)} ± ${se(ratios[g]).toFixed(3)} (n ${ratios[g].length})`).join(", "));
}
disposeModels(m);
destroyGpu();
process.exit(0);
