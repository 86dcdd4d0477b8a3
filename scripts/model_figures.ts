// The held-out figures of a model card (issue #12's criteria), on the fixed held-out split of
// src/pretrain/data.ts, with the CLI's default sampler (50 DDIM steps, s_T 7.5, s_I 1.5, eta 0):
//   VAE PSNR, edit L1 inside the mask relative to the input's, L1 outside the mask, attention_cos
//   vs a constant map's, teacher-forced grounding of the text-to-image objective, word distinctness.
// Usage: bun scripts/model_figures.ts --model DIR [--n 64] [--steps 50] [--json OUT.json]
import { writeFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { destroyGpu, initGpu } from "../src/gpu/device.ts";
import { loadIP2P } from "../src/diffusion/pipeline.ts";
import { heldOutExamples } from "../src/pretrain/data.ts";
import { editMetrics, t2iGrounding, vaePsnr, wordDistinctness } from "../src/pretrain/evaluate.ts";

const { values } = parseArgs({ options: { model: { type: "string" }, n: { type: "string", default: "64" }, steps: { type: "string", default: "50" }, json: { type: "string" } } });
if (!values.model) throw new Error("--model DIR is required");
await initGpu();
const m = loadIP2P(values.model);
const size = (m.config.unet.sampleSize ?? 16) * m.vae.scaleFactor;
const held = heldOutExamples(Number(values.n), size);
const t0 = performance.now();
const psnr = await vaePsnr(m, held, size);
const grounding = await t2iGrounding(m, held, size);
const words = await wordDistinctness(m);
const edits = await editMetrics(m, held, size, { steps: Number(values.steps), textGuidance: 7.5, imageGuidance: 1.5 });
const figures = {
  model: values.model, held_out: held.length, size, sampler: { steps: Number(values.steps), text_guidance: 7.5, image_guidance: 1.5, eta: 0 },
  vae_psnr_db: psnr,
  l1_inside_ratio: edits.l1InsideRatio, l1_inside: edits.l1Inside, l1_outside: edits.l1Outside,
  attention_cos: edits.attentionCos, attention_cos_uniform: edits.attentionCosUniform, attention_ratio: edits.attentionCos / edits.attentionCosUniform,
  t2i_grounding_own: grounding.own, t2i_grounding_other: grounding.other, word_cos_mean: words.mean, word_cos_max: words.max, word_cos_centered: words.centeredMean,
  seconds: (performance.now() - t0) / 1000,
};
console.log(JSON.stringify(figures, null, 2));
if (values.json) writeFileSync(values.json, JSON.stringify(figures, null, 2) + "\n");
destroyGpu();
process.exit(0);
