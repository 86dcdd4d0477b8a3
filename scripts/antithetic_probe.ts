// How the paper's reward depends on the sampling noise, on a model under the training sampler
// (learning notes E28). Every edit is sampled in pairs; (R1 − R2) / 2 is what a group baseline
// leaves of a pair's rewards in the advantages.
// --mode pairs: four ways of drawing a pair (shared x_T or not; the second sample's noise the first's
//   negated, or drawn independently). var(antithetic) / var(independent) = 1 − ρ, ρ the correlation
//   of R(ε) and R(−ε): near 2 the reward is odd (linear) in the noise, and antithetic pairs carry no
//   more information than independent ones; near 0 it is even, and antithetic pairs would cancel it.
// --mode steps: per denoising step i, pairs equal in everything but step i's noise, negated in the
//   second sample: ((R1 − R2) / 2)² measures how much the reward depends on that step's noise, i.e.
//   how much of the policy gradient a PPO term on step i can carry (train.skip_final_steps leaves the
//   last steps out).
// Usage: bun scripts/antithetic_probe.ts --model DIR [--mode pairs|steps] [--edits 24] [--pairs 2] [--set key=value ...]
import { parseArgs } from "node:util";
import { initGpu, destroyGpu } from "../src/gpu/device.ts";
import { Tensor, scopeAsync } from "../src/tensor/index.ts";
import * as ops from "../src/tensor/ops/index.ts";
import { decodeLatents, disposeTrajectory, encodeImages, encodePrompts, guidedConditioning, sampleChain } from "../src/diffusion/pipeline.ts";
import { AttentionMapRecorder } from "../src/diffusion/attention_store.ts";
import type { PreparedSample } from "../src/rl/prepare.ts";
import { instructReward } from "../src/rl/reward.ts";
import { PROBE_SIZE as S, probeSetup } from "./probe_setup.ts";

const { values } = parseArgs({
  options: { model: { type: "string" }, mode: { type: "string", default: "pairs" }, edits: { type: "string", default: "24" }, pairs: { type: "string", default: "2" }, set: { type: "string", multiple: true, default: [] } },
});
if (!values.model) throw new Error("--model DIR is required");
const nEdits = Number(values.edits), P = Number(values.pairs);
await initGpu();
const { models, cfg, layers, latentSide, mapSide, edits } = await probeSetup(values.model!, values.set!, { n: nEdits, seed: 3 });

const mode = values.mode!;
if (mode !== "pairs" && mode !== "steps") throw new Error(`--mode: '${mode}' is not pairs or steps`);
const T = cfg.sample.num_steps;
// rows: the quantities reported; each pair contributes ((R1 − R2) / 2)² to its row
const ROWS =
  mode === "pairs"
    ? ["A antithetic steps, shared x_T", "B independent steps, shared x_T", "C antithetic x_T and steps", "D independent x_T and steps"]
    : Array.from({ length: T }, (_, i) => `step ${i + 1} of ${T}`);
const sq = { reward: ROWS.map(() => [] as number[]), cos: ROWS.map(() => [] as number[]) };

/** One edit's batch: per sample its seeds and signs, and the pairs (row, first index, second index). */
function batchOf(e: number) {
  const seeds: number[] = [], initialSeeds: number[] = [], initialSigns: number[] = [];
  const flipAt: number[] = []; // steps: the step whose noise this sample negates (−1: none)
  const stepSign: number[] = []; // pairs: the sign of all its step noise
  const pairs: [number, number, number][] = [];
  const base = 100000 * (e + 1);
  const add = (seed: number, x: number, xSign: number, sSign: number, flip: number) => {
    seeds.push(seed);
    initialSeeds.push(x);
    initialSigns.push(xSign);
    stepSign.push(sSign);
    flipAt.push(flip);
    return seeds.length - 1;
  };
  for (let p = 0; p < P; p++) {
    const seed = base + 10 * p;
    if (mode === "pairs") {
      pairs.push([0, add(seed, base, 1, 1, -1), add(seed, base, 1, -1, -1)]);
      pairs.push([1, add(seed + 1000, base, 1, 1, -1), add(seed + 1001, base, 1, 1, -1)]);
      pairs.push([2, add(seed + 2000, seed + 2000, 1, 1, -1), add(seed + 2000, seed + 2000, -1, -1, -1)]);
      pairs.push([3, add(seed + 3000, seed + 3000, 1, 1, -1), add(seed + 3001, seed + 3001, 1, 1, -1)]);
    } else {
      const first = add(seed, base, 1, 1, -1); // shared by the T pairs of this seed
      for (let i = 0; i < T; i++) pairs.push([i, first, add(seed, base, 1, 1, i)]);
    }
  }
  const stepSigns = (i: number) => stepSign.map((s, j) => (flipAt[j] === i ? -s : s));
  return { seeds, initialSeeds, initialSigns, stepSigns, pairs };
}

for (const [e, s] of edits.entries()) {
  const b = batchOf(e);
  const B = b.seeds.length;
  const rewards = await scopeAsync(async () => {
    const prompts = encodePrompts(models, new Array(B).fill(s.instruction));
    const src = new Float32Array(B * 3 * S * S);
    for (let i = 0; i < B; i++) src.set(s.source, i * 3 * S * S);
    const imageLatents = encodeImages(models, ops.affine(Tensor.from(src, [B, 3, S, S]), 2, -1));
    const cond = guidedConditioning(models, prompts.embeds, imageLatents);
    const recorder = new AttentionMapRecorder(layers, prompts.tokenCounts, mapSide, mapSide).attach();
    try {
      const traj = sampleChain(models, cond, [B, 4, latentSide, latentSide], {
        steps: T,
        guidance: { text: cfg.sample.guidance_scale, image: cfg.sample.image_guidance_scale },
        eta: cfg.sample.eta,
        seeds: b.seeds,
        initialSeeds: b.initialSeeds,
        initialSigns: b.initialSigns,
        stepSigns: b.stepSigns,
        onStep: () => recorder.step(),
      });
      const maps = await recorder.maps();
      const decoded = await decodeLatents(models, traj.latents[traj.latents.length - 1]).readF32();
      disposeTrajectory(traj);
      const per = 3 * S * S;
      return maps.map((m, i) => instructReward(m, s.aGt, s.source, decoded.subarray(i * per, (i + 1) * per), cfg.reward.alpha, cfg.reward.tau));
    } finally {
      recorder.dispose();
    }
  });
  for (const [row, i, j] of b.pairs) {
    sq.reward[row].push(((rewards[i].reward - rewards[j].reward) / 2) ** 2);
    sq.cos[row].push(((rewards[i].cos - rewards[j].cos) / 2) ** 2);
  }
}
const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
const se = (xs: number[]) => Math.sqrt(xs.reduce((a, b) => a + (b - mean(xs)) ** 2, 0) / (xs.length - 1) / xs.length);
console.log(`${nEdits} edits x ${P} pairs per row, ${T} steps, eta ${cfg.sample.eta}, s_T ${cfg.sample.guidance_scale}, s_I ${cfg.sample.image_guidance_scale}`);
for (const k of ["reward", "cos"] as const) {
  ROWS.forEach((r, w) => console.log(`${k} ${r}: mean ((R1 - R2) / 2)^2 ${mean(sq[k][w]).toExponential(3)} ± ${se(sq[k][w]).toExponential(2)}`));
  if (mode === "pairs") console.log(`${k}: A / B ${(mean(sq[k][0]) / mean(sq[k][1])).toFixed(3)}, C / D ${(mean(sq[k][2]) / mean(sq[k][3])).toFixed(3)}`);
}
destroyGpu();
process.exit(0);
