// `rl4pix bench train-step`: one PPO timestep update as the trainer runs it (src/rl/trainer.ts
// `trainEpoch`): the 3-branch guided UNet forward with rank-4 LoRA on every attention projection,
// the DDIM step's log-prob (src/diffusion/score.ts `stepLogProb`), the clipped PPO loss, backward
// to the LoRA weights, clipGradNorm and AdamW. Random frozen weights drawn on the GPU; median ms
// and peak pool memory, with and without gradient checkpointing.
import { gpu } from "../gpu/device.ts";
import { DDIMScheduler } from "../diffusion/ddim.ts";
import type { GuidedConditioning, IP2PModels } from "../diffusion/pipeline.ts";
import { stepLogProb } from "../diffusion/score.ts";
import { initLora, loraParameters, removeLora } from "../nn/lora.ts";
import { ppoLoss } from "../rl/ppo.ts";
import { backward, noGrad, scopeAsync } from "../tensor/index.ts";
import * as ops from "../tensor/ops/index.ts";
import { UserError } from "../errors.ts";
import type { BenchRow } from "./types.ts";
import { formatProfile } from "../gpu/profiler.ts";
import {
  type ModelBenchOptions,
  buildUnet,
  describeShape,
  loadNote,
  mib,
  modelShape,
  profileModel,
  timeModel,
} from "./model.ts";

const LORA_RANK = 4;
const STEPS = 20;
const GUIDANCE = { text: 7.5, image: 1.5 };
const ETA = 1.0;
const CLIP_RANGE = 1e-4;

function checkpointModes(v: string | undefined): boolean[] {
  switch (v ?? "both") {
    case "both":
      return [false, true];
    case "on":
      return [true];
    case "off":
      return [false];
    default:
      throw new UserError(`bench: --checkpointing must be on, off or both, got ${v}`);
  }
}

export async function benchTrainStep(o: ModelBenchOptions = {}): Promise<BenchRow[]> {
  const s = modelShape({ ...o, batch: o.batch ?? 1 });
  const B = s.batch;
  const g = gpu();
  const { unet, params: nParams, bytes } = buildUnet(s);
  initLora(unet, LORA_RANK, 7);
  const lora = loraParameters(unet);
  const params = lora.flatMap((l) => [l.down, l.up]);
  const loraCount = params.reduce((a, p) => a + p.size, 0);
  const scheduler = new DDIMScheduler();
  const timesteps = scheduler.setTimesteps(STEPS);
  const m = { unet, scheduler } as unknown as IP2PModels;
  const h = s.latent;
  // The guided conditioning: B prompts then 2B empty prompts; image latents twice, then zeros.
  const cond: GuidedConditioning = {
    embeds: ops.randn([3 * B, s.tokens, s.unet.crossAttentionDim[0]], 11).keep(),
    imageLatents: ops.concat([ops.randn([2 * B, 4, h, h], 12), ops.zeros([B, 4, h, h])], 0).keep(),
    batch: B,
  };
  const x = ops.randn([B, 4, h, h], 13).keep();
  const next = ops.randn([B, 4, h, h], 14).keep();
  const ts = new Array(B).fill(timesteps[STEPS / 2]);
  // The rollout's log-probs (no grad), so the PPO ratio starts at 1 as in training.
  const oldLp = Array.from(await noGrad(() => stepLogProb(m, cond, x, next, ts, GUIDANCE, ETA)).readF32());
  const adv = oldLp.map((_, i) => (i % 2 === 0 ? 1 : -1));
  const optimizer = ops.createAdamWState();

  const step = () => scopeAsync(async () => {
    const lp = stepLogProb(m, cond, x, next, ts, GUIDANCE, ETA); // [B]
    const { loss } = ppoLoss(lp, oldLp, adv, CLIP_RANGE);
    backward(loss);
    await loss.item();
    const norm = ops.clipGradNorm(params, 1.0);
    await norm.item();
    ops.adamW(params, optimizer, { lr: 2e-4, weightDecay: 1e-4 });
    for (const p of params) {
      p.grad?.dispose();
      p.grad = null;
    }
  });

  const rows: BenchRow[] = [];
  const reps = o.reps !== undefined ? Number(o.reps) : s.name === "tiny" ? 5 : 1;
  for (const ckpt of checkpointModes(o.checkpointing)) {
    unet.gradientCheckpointing = ckpt;
    const load0 = loadNote();
    const t = await timeModel(step, reps, s.name === "tiny" ? 1 : 0);
    rows.push({
      name: `train step${ckpt ? " (checkpointing)" : ""}`,
      shape: describeShape(s) + ` x3 branches`,
      ms: t.ms,
      compileMs: Math.max(0, t.firstMs - t.ms),
      peakBytes: t.peakBytes,
      note: `LoRA rank ${LORA_RANK} on ${lora.length} projections (${(loraCount / 1e6).toFixed(2)}M trainable) over ${(nParams / 1e6).toFixed(1)}M frozen (${mib(bytes)}); ` +
        `peak pool ${mib(t.peakBytes)}; first call ${t.firstMs.toFixed(0)} ms; runs ${t.all.map((v) => v.toFixed(0)).join("/")} ms; ` +
        `cpu ${t.cpuMs.toFixed(0)} ms/call (${t.cores.toFixed(2)} cores busy); ${load0}`,
    });
    if (o.profile) console.error(`train step${ckpt ? " (checkpointing)" : ""}:\n` + formatProfile(await profileModel(step)));
  }
  unet.gradientCheckpointing = false;
  for (const t of [cond.embeds, cond.imageLatents, x, next]) t.dispose();
  removeLora(unet);
  for (const t of [...optimizer.m, ...optimizer.v]) t?.dispose();
  unet.disposeParameters();
  await g.sync();
  g.pool.trim();
  return rows;
}
