// Through which path does a trained adapter change the held-out attention cosine? (learning notes E28.)
// The reward's map a_pred is computed by the very UNet being trained, so an adapter θ1 changes it
// in two ways: through the trajectory (the latents the policy samples, the only path PPO's
// likelihood-ratio gradient sees) and directly (the same latents, attended with the new query/key
// projections). Each held-out (edit, seed) is sampled under the model before training (θ0) and under
// θ1 with the same noise, and each trajectory's map is recorded under both:
//   cos(traj θ_a, map θ_b) for a, b ∈ {0, 1}; the paired differences against (0, 0) split the change
//   into the trajectory path (1, 0), the direct path (0, 1) and both (1, 1).
// Usage: bun scripts/attention_paths_probe.ts --model DIR --lora FILE [--heldout-n 64] [--eval-seeds 2] [--set key=value ...]
// (--set as the run's, since they choose the sampler; the held-out edits are learning_evidence.ts's.)
import { parseArgs } from "node:util";
import { initGpu, destroyGpu } from "../src/gpu/device.ts";
import { Tensor, noGrad, scope, scopeAsync } from "../src/tensor/index.ts";
import * as ops from "../src/tensor/ops/index.ts";
import { disposeTrajectory, encodeImages, encodePrompts, guidedConditioning, guidedNoise, sampleChain, type GuidedConditioning } from "../src/diffusion/pipeline.ts";
import { AttentionMapRecorder } from "../src/diffusion/attention_store.ts";
import type { PreparedSample } from "../src/rl/prepare.ts";
import { cosineSimilarity } from "../src/rl/reward.ts";
import { pairedDifference } from "../src/rl/attention_eval.ts";
import { loadLoraFile, removeLora } from "../src/nn/lora.ts";
import { HELDOUT_SEED } from "../src/pretrain/data.ts";
import { PROBE_SIZE as S, probeSetup } from "./probe_setup.ts";

const { values } = parseArgs({
  options: {
    model: { type: "string" },
    lora: { type: "string" },
    "heldout-n": { type: "string", default: "64" },
    "eval-seeds": { type: "string", default: "2" },
    set: { type: "string", multiple: true, default: [] },
  },
});
if (!values.model || !values.lora) throw new Error("--model DIR and --lora FILE are required");
await initGpu();
const { models, cfg, layers, latentSide, mapSide, edits } = await probeSetup(values.model!, values.set!, { n: Number(values["heldout-n"]), seed: HELDOUT_SEED });
const seeds = Array.from({ length: Number(values["eval-seeds"]) }, (_, i) => 1000 + i);
const B = seeds.length;
const shape = [B, 4, latentSide, latentSide];
const guidance = { text: cfg.sample.guidance_scale, image: cfg.sample.image_guidance_scale };
const T = cfg.sample.num_steps;
const timesteps = models.scheduler.setTimesteps(T);

function conditioning(s: PreparedSample): { cond: GuidedConditioning; tokenCounts: number[] } {
  const prompts = encodePrompts(models, new Array(B).fill(s.instruction));
  const src = new Float32Array(B * 3 * S * S);
  for (let i = 0; i < B; i++) src.set(s.source, i * 3 * S * S);
  const imageLatents = encodeImages(models, ops.affine(Tensor.from(src, [B, 3, S, S]), 2, -1));
  return { cond: guidedConditioning(models, prompts.embeds, imageLatents), tokenCounts: prompts.tokenCounts };
}

/** Sample the edit's chains under the current weights: x_T … x_1 on the host, and the maps recorded while sampling. */
async function sample(s: PreparedSample): Promise<{ latents: Float32Array[]; maps: Float32Array[] }> {
  return scopeAsync(async () => {
    const { cond, tokenCounts } = conditioning(s);
    const recorder = new AttentionMapRecorder(layers, tokenCounts, mapSide, mapSide).attach();
    try {
      const traj = sampleChain(models, cond, shape, { steps: T, guidance, eta: cfg.sample.eta, seeds, onStep: () => recorder.step() });
      const latents = await Promise.all(traj.latents.slice(0, T).map((x) => x.readF32()));
      disposeTrajectory(traj);
      return { latents, maps: await recorder.maps() };
    } finally {
      recorder.dispose();
    }
  });
}

/** The maps the current weights give along given latents x_T … x_1 (the UNet calls of the chain, replayed). */
async function replay(s: PreparedSample, latents: Float32Array[]): Promise<Float32Array[]> {
  return scopeAsync(async () => {
    const { cond, tokenCounts } = conditioning(s);
    const recorder = new AttentionMapRecorder(layers, tokenCounts, mapSide, mapSide).attach();
    try {
      noGrad(() => {
        latents.forEach((x, i) => {
          scope(() => guidedNoise(models, Tensor.from(x, shape), new Array(B).fill(timesteps[i]), cond, guidance));
          recorder.step();
        });
      });
      return await recorder.maps();
    } finally {
      recorder.dispose();
    }
  });
}

const cos = { "00": [] as number[], "01": [] as number[], "10": [] as number[], "11": [] as number[] };
const record = (key: keyof typeof cos, s: PreparedSample, maps: Float32Array[]) => maps.forEach((m) => cos[key].push(cosineSimilarity(m, s.aGt)));
const before = [];
for (const s of edits) {
  const b = await sample(s);
  record("00", s, b.maps);
  before.push(b.latents);
}
loadLoraFile(models.unet, values.lora);
const after = [];
for (const [e, s] of edits.entries()) {
  const a = await sample(s);
  record("11", s, a.maps);
  record("01", s, await replay(s, before[e]));
  after.push(a.latents);
}
removeLora(models.unet);
for (const [e, s] of edits.entries()) record("10", s, await replay(s, after[e]));

const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
console.log(`${edits.length} held-out edits x ${B} seeds; cos(traj θ0, map θ0) ${mean(cos["00"]).toFixed(4)}`);
for (const [key, name] of [["10", "trajectory path (traj θ1, map θ0)"], ["01", "direct path (traj θ0, map θ1)"], ["11", "both (traj θ1, map θ1)"]] as const) {
  const d = pairedDifference(cos[key], cos["00"]);
  console.log(`${name}: ${d.mean >= 0 ? "+" : ""}${d.mean.toFixed(4)} ± ${d.stderr.toFixed(4)} ${d.stderr === 0 ? "(identical in every pair)" : `(t ${(d.mean / d.stderr).toFixed(2)})`}`);
}
destroyGpu();
process.exit(0);
