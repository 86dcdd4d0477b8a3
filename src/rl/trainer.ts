// InstructRL4Pix training (DDPO-style PPO on the denoising chain, LoRA on the UNet's attention):
// per epoch, sample edits as trajectories with the instruction's cross-attention recorded, score
// them (attention cosine + clip penalty), turn rewards into per-prompt advantages, then run PPO
// over shuffled timesteps of every trajectory with gradient accumulation, grad-norm clipping and
// AdamW. Checkpoints allow a bit-identical resume. A stop request (Ctrl-C) while sampling abandons
// the epoch's samples and checkpoints the last finished epoch; while updating, the update finishes
// and that epoch is checkpointed: either way the checkpoint is a point an uninterrupted run passes.
import { existsSync, mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { gpu } from "../gpu/device.ts";
import { Tensor } from "../tensor/tensor.ts";
import * as ops from "../tensor/ops/index.ts";
import { backward, clearTape } from "../tensor/autograd.ts";
import { keep, scope, scopeAsync } from "../tensor/scope.ts";
import { Interrupted, UserError } from "../errors.ts";
import { writeFileAtomic } from "../io/atomic.ts";
import type { EditDataset } from "../io/datasets/index.ts";
import { Prng, mixSeeds } from "../data/prng.ts";
import {
  decodeLatents,
  disposeTrajectory,
  encodeImages,
  encodePrompts,
  guidedConditioning,
  type GuidedConditioning,
  type IP2PModels,
  sampleChain,
  warmup,
} from "../diffusion/pipeline.ts";
import { AttentionMapRecorder, type CrossAttentionLayer, crossAttentionLayers } from "../diffusion/attention_store.ts";
import { stepLogProb } from "../diffusion/score.ts";
import { initLora, loraParameters } from "../nn/lora.ts";
import { type Config, configHash, loraScale, loraTargetModules, parseLayerSpec, selectsLayer } from "./config.ts";
import { PerPromptStatTracker, clipAdvantages } from "./stat_tracker.ts";
import { instructReward, type RewardParts } from "./reward.ts";
import { SampleStream, type StreamState } from "./data_stream.ts";
import { type PreparedSample, prepareSample } from "./prepare.ts";
import { ppoLoss, ppoStats } from "./ppo.ts";
import { listCheckpoints, loadCheckpoint, saveCheckpoint, type TrainerState } from "./checkpoint.ts";
import { chooseCheckpoint, type ResumePoint } from "./checkpoint_check.ts";
import { faultPoint } from "./test_faults.ts";
import { createAdamWState, type AdamWState } from "../tensor/ops/optim.ts";
import { GradScaler, MIN_LOSS_SCALE } from "./grad_scaler.ts";
import { optimizerStep } from "./optimizer_step.ts";
import { writeEpochSamples } from "./samples.ts";

export interface EpochMetrics {
  epoch: number;
  reward_mean: number;
  reward_std: number;
  reward_cos_mean: number;
  reward_clip_mean: number;
  mae_mean: number;
  approx_kl: number;
  clipfrac: number;
  loss: number;
  grad_norm: number;
  lr: number;
  samples_per_s: number;
  seconds: number;
  /** With fp16 loss scaling only: the loss scale at the epoch's end. */
  loss_scale?: number;
  /** With fp16 loss scaling only: optimizer steps skipped for an inf/NaN gradient this epoch. */
  skipped_steps?: number;
}

export interface TrainHooks {
  onPhase?: (epoch: number, phase: "sampling" | "training" | "saving", done: number, total: number) => void;
  onEpoch?: (m: EpochMetrics) => void;
  /**
   * Polled at safe points: true stops after saving a checkpoint (Ctrl-C). While sampling, the epoch
   * is abandoned at the next batch and the last finished epoch is checkpointed; while updating, the
   * update finishes and its epoch is checkpointed.
   */
  shouldStop?: () => boolean;
}

/** One sampled trajectory kept for training (everything per sample, [1, …] tensors). */
interface Rollout {
  key: string;
  embeds: Tensor; // [1, 77, D]
  imageLatents: Tensor; // [1, 4, h, w]
  latents: Tensor[]; // T+1 of [1, 4, h, w]
  logProbs: number[]; // T
  reward: RewardParts;
  advantage: number;
}

/** The attention-map side for a latent side after `log2(factor)` stride-2 convs (ceil each time). */
function mapSideOf(latentSide: number, factor: number): number {
  let s = latentSide;
  for (let f = factor; f > 1; f /= 2) s = Math.ceil(s / 2);
  return s;
}

export function rewardLayers(models: Pick<IP2PModels, "unet">, cfg: Config): CrossAttentionLayer[] {
  const spec = parseLayerSpec(cfg.reward.layers);
  const chosen = crossAttentionLayers(models.unet).filter((l) => selectsLayer(spec, l.path, l.factor));
  if (chosen.length === 0) {
    const have = [...new Set(crossAttentionLayers(models.unet).map((l) => `res:${l.factor}`))].join(", ");
    throw new UserError(`reward.layers: '${cfg.reward.layers}' selects no cross-attention layer of this UNet (it has ${have})`);
  }
  if (new Set(chosen.map((l) => l.factor)).size > 1) {
    throw new UserError(`reward.layers: '${cfg.reward.layers}' selects maps of different sizes; choose one resolution`);
  }
  return chosen;
}

/** What a reward function sees of one sampled edit. */
export interface RewardInput {
  /** a_pred [mapSide * mapSide]: the recorded cross-attention map (SPEC §5). */
  attentionMap: Float32Array;
  sample: PreparedSample;
  /** The decoded edit, planar RGB in [0, 1] at the training resolution. */
  output: Float32Array;
}

export interface TrainerOptions {
  /** Resume from a checkpoint made with another configuration. */
  force?: boolean;
  /**
   * Replace the paper's reward (attention cosine + clip penalty). For experiments and tests that
   * need a reward the policy certainly controls; the CLI always uses the paper's.
   */
  reward?: (x: RewardInput) => RewardParts;
  /**
   * The checkpoint to start from (chosen and checked by `chooseCheckpoint` before the GPU starts);
   * null starts afresh; absent, the run folder's newest checkpoint is used.
   */
  resume?: ResumePoint | null;
}

export class Trainer {
  readonly layers: CrossAttentionLayer[];
  readonly latentSide: number;
  readonly mapSide: number;
  private tracker: PerPromptStatTracker;
  private stream: SampleStream;
  private rng: Prng;
  private optimizer: AdamWState = createAdamWState();
  private startEpoch = 0;
  private fixedSamples: PreparedSample[] = [];
  /**
   * Dynamic loss scaling (torch's GradScaler) while the UNet's backward runs through f16 activations
   * (mixed_precision "fp16" where the adapter has shader-f16); null in f32.
   */
  private scaler: GradScaler | null = null;

  constructor(readonly models: IP2PModels, readonly cfg: Config, readonly dataset: EditDataset, readonly runDir: string, readonly opts: TrainerOptions = {}) {
    this.layers = rewardLayers(models, cfg);
    const factor = models.vae.scaleFactor;
    if (cfg.resolution % factor !== 0) throw new UserError(`resolution: ${cfg.resolution} is not a multiple of the VAE factor ${factor}`);
    this.latentSide = cfg.resolution / factor;
    this.mapSide = mapSideOf(this.latentSide, this.layers[0].factor);
    this.tracker = new PerPromptStatTracker(cfg.per_prompt_stat_tracking.buffer_size, cfg.per_prompt_stat_tracking.min_count);
    this.stream = new SampleStream(dataset, mixSeeds(cfg.seed, 1));
    this.rng = new Prng(mixSeeds(cfg.seed, 2));
  }

  /** Fresh LoRA, or the latest checkpoint's state when the run dir has one. Returns the first epoch to run. */
  async init(): Promise<number> {
    const unet = this.models.unet;
    unet.gradientCheckpointing = this.cfg.gradient_checkpointing;
    this.scaler = this.cfg.mixed_precision === "fp16" && unet.activationDtype === "f16" ? new GradScaler() : null;
    const point = this.opts.resume !== undefined ? this.opts.resume : chooseCheckpoint(this.runDir);
    if (point) {
      const path = point.path;
      const loaded = loadCheckpoint(path, unet, () => this.params());
      if (loaded.state.configHash !== configHash(this.cfg) && !this.opts.force) {
        throw new UserError(`${path}: checkpoint was made with another configuration (rerun with --force to train on anyway from it)`);
      }
      this.optimizer = loaded.optimizer;
      this.tracker = PerPromptStatTracker.fromJSON(loaded.state.tracker);
      try {
        await this.stream.restore(loaded.state.stream);
      } catch (e) {
        if (e instanceof UserError) throw e;
        throw new UserError(`${join(path, "state.json")}: its sample stream does not fit the dataset ${this.dataset.path} (was the dataset changed?)`);
      }
      this.rng = Prng.fromState(loaded.state.rng);
      if (this.scaler && loaded.state.gradScaler) this.scaler = new GradScaler({}, loaded.state.gradScaler);
      this.startEpoch = loaded.state.epoch + 1;
    } else {
      initLora(unet, this.cfg.lora.rank, mixSeeds(this.cfg.lora.init_seed ?? this.cfg.seed, 3), this.cfg.lora.rank * loraScale(this.cfg), loraTargetModules(this.cfg));
      this.startEpoch = 0;
    }
    // compile every sampling kernel now, so epoch timings do not include it
    await warmup(this.models, [this.cfg.sample.batch_size, this.models.config.unet.outChannels, this.latentSide, this.latentSide]);
    // fixed samples for the per-save pictures: the dataset's first report.num_samples rows
    this.fixedSamples = [];
    for await (const s of this.dataset.samples()) {
      if (this.fixedSamples.length >= this.cfg.report.num_samples) break;
      this.fixedSamples.push(await prepareSample(s, this.cfg.resolution, this.mapSide));
    }
    return this.startEpoch;
  }

  /** The trainable tensors in a fixed order (down, up per LoRA target). */
  params(): Tensor[] {
    return loraParameters(this.models.unet).flatMap((p) => [p.down, p.up]);
  }

  /** The noise seed of one sample: depends only on (seed, epoch, position), so resumes repeat it. */
  private sampleSeed(epoch: number, i: number): number {
    return mixSeeds(mixSeeds(this.cfg.seed, 1000 + epoch), i);
  }

  /** The epoch's rollouts with advantages, or null when a stop was requested while sampling. */
  private async sampleEpoch(epoch: number, hooks: TrainHooks): Promise<Rollout[] | null> {
    const c = this.cfg;
    const m = this.models;
    const B = c.sample.batch_size;
    const rollouts: Rollout[] = [];
    for (let b = 0; b <= c.sample.num_batches_per_epoch; b++) {
      if (hooks.shouldStop?.()) {
        disposeRollouts(rollouts);
        return null;
      }
      if (b === c.sample.num_batches_per_epoch) break;
      hooks.onPhase?.(epoch, "sampling", b, c.sample.num_batches_per_epoch);
      faultPoint("sampling", epoch, b);
      // B / k prompts, each sampled k times in a row with its own noise (sampleSeed by position; x_T shared within a group when asked)
      const k = c.sample.num_image_per_prompt;
      const rows = await this.stream.take(B / k);
      const prepared: PreparedSample[] = [];
      for (const r of rows) {
        const p = await prepareSample(r, c.resolution, this.mapSide);
        for (let j = 0; j < k; j++) prepared.push(p);
      }
      const batch = await scopeAsync(async () => {
        const prompts = encodePrompts(m, prepared.map((p) => p.instruction));
        const S = c.resolution;
        const images = Tensor.from(concatSources(prepared), [B, 3, S, S], "f32", "sources");
        const imageLatents = encodeImages(m, ops.affine(images, 2, -1));
        const cond = guidedConditioning(m, prompts.embeds, imageLatents);
        const recorder = new AttentionMapRecorder(this.layers, prompts.tokenCounts, this.mapSide, this.mapSide).attach();
        try {
          const traj = sampleChain(m, cond, [B, 4, this.latentSide, this.latentSide], {
            steps: c.sample.num_steps,
            guidance: { text: c.sample.guidance_scale, image: c.sample.image_guidance_scale },
            eta: c.sample.eta,
            seeds: prepared.map((_, i) => this.sampleSeed(epoch, b * B + i)),
            // shared: a group's x_T is its first sample's, so its advantages compare the steps taken from one start
            initialSeeds: c.sample.shared_initial_noise ? prepared.map((_, i) => this.sampleSeed(epoch, b * B + i - (i % k))) : undefined,
            onStep: () => recorder.step(),
          });
          const maps = await recorder.maps();
          const decoded = await decodeLatents(m, traj.latents[traj.latents.length - 1]).readF32(); // [B,3,S,S]
          const per = 3 * S * S;
          const out: Rollout[] = [];
          const lps = traj.logProbs ? await Promise.all(traj.logProbs.map((l) => l.readF32())) : null;
          for (let i = 0; i < B; i++) {
            const output = decoded.subarray(i * per, (i + 1) * per);
            const reward = this.opts.reward
              ? this.opts.reward({ attentionMap: maps[i], sample: prepared[i], output })
              : instructReward(maps[i], prepared[i].aGt, prepared[i].source, output, c.reward.alpha, c.reward.tau);
            out.push({
              key: prepared[i].key,
              embeds: keep(ops.slice(prompts.embeds, 0, i, i + 1)),
              imageLatents: keep(ops.slice(imageLatents, 0, i, i + 1)),
              latents: traj.latents.map((x) => keep(ops.slice(x, 0, i, i + 1))),
              logProbs: lps ? lps.map((l) => l[i]) : [],
              reward,
              advantage: 0,
            });
          }
          disposeTrajectory(traj);
          return out;
        } finally {
          recorder.dispose();
        }
      });
      rollouts.push(...batch);
    }
    for (const r of rollouts) {
      if (!Number.isFinite(r.reward.reward)) throw new TrainingDiverged(`reward is ${r.reward.reward} at epoch ${epoch} (sample ${r.key})`);
    }
    const adv = clipAdvantages(this.tracker.update(rollouts.map((r) => r.key), rollouts.map((r) => r.reward.reward)), c.train.adv_clip_max);
    rollouts.forEach((r, i) => (r.advantage = adv[i]));
    return rollouts;
  }

  private async trainEpoch(epoch: number, rollouts: Rollout[], hooks: TrainHooks): Promise<{ loss: number; approxKl: number; clipfrac: number; gradNorm: number; skipped: number }> {
    const c = this.cfg;
    const m = this.models;
    const T = c.sample.num_steps;
    const trainable = T - c.train.skip_final_steps; // steps 0 .. trainable-1 enter the loss
    const nTrain = Math.max(1, Math.floor(trainable * c.train.timestep_fraction));
    const accum = c.train.gradient_accumulation_steps * nTrain;
    const params = this.params();
    const guidance = { text: c.sample.guidance_scale, image: c.sample.image_guidance_scale };
    const timesteps = m.scheduler.setTimesteps(T);
    let lossSum = 0, klSum = 0, clipSum = 0, gnSum = 0, count = 0, steps = 0, skipped = 0, micro = 0;
    const step = async () => {
      const r = await this.optimizerStep(params);
      if (r.skipped) skipped++;
      else {
        gnSum += r.gradNorm;
        steps++;
      }
    };
    const N = rollouts.length;
    const bs = c.train.batch_size;
    for (let inner = 0; inner < c.train.num_inner_epochs; inner++) {
      const order = this.rng.shuffle([...Array(N).keys()]);
      const perms = order.map(() => this.rng.shuffle([...Array(trainable).keys()]));
      const nBatches = Math.floor(N / bs);
      for (let b = 0; b < nBatches; b++) {
        const idx = order.slice(b * bs, (b + 1) * bs);
        const rs = idx.map((k) => rollouts[k]);
        const tperm = idx.map((_, j) => perms[b * bs + j]);
        const cond = scope(() => {
          const embeds = ops.concat(rs.map((r) => r.embeds), 0);
          const lat = ops.concat(rs.map((r) => r.imageLatents), 0);
          return guidedConditioning(m, embeds, lat);
        });
        for (let j = 0; j < nTrain; j++) {
          const k = (inner * nBatches + b) * nTrain + j;
          hooks.onPhase?.(epoch, "training", k, c.train.num_inner_epochs * nBatches * nTrain);
          faultPoint("training", epoch, k);
          const stepIdx = tperm.map((p) => p[j]);
          const oldLp = rs.map((r, k) => r.logProbs[stepIdx[k]]);
          const adv = rs.map((r) => r.advantage);
          const lpHost = await scopeAsync(async () => {
            const x = ops.concat(rs.map((r, k) => r.latents[stepIdx[k]]), 0);
            const next = ops.concat(rs.map((r, k) => r.latents[stepIdx[k] + 1]), 0);
            const ts = stepIdx.map((s) => timesteps[s]);
            const lp = stepLogProb(m, cond, x, next, ts, guidance, c.sample.eta, c.train.cfg); // [b]
            const { loss } = ppoLoss(lp, oldLp, adv, c.train.clip_range);
            // with fp16 loss scaling the gradients come out `scale` times too large; optimizerStep unscales
            const scaled = ops.scale(loss, (this.scaler?.scale ?? 1) / accum);
            backward(scaled);
            const lossV = await loss.item();
            if (!Number.isFinite(lossV)) throw new TrainingDiverged(`loss is ${lossV} at epoch ${epoch}`);
            lossSum += lossV;
            return await lp.readF32();
          });
          const st = ppoStats(lpHost, oldLp, c.train.clip_range);
          klSum += st.approxKl;
          clipSum += st.clipfrac;
          count++;
          micro++;
          if (micro % accum === 0) await step();
        }
        cond.embeds.dispose();
        cond.imageLatents.dispose();
      }
    }
    if (micro % accum !== 0) {
      // a partial accumulation window at the end of the epoch: step on what was gathered
      await step();
    }
    clearTape();
    return {
      loss: lossSum / Math.max(count, 1),
      approxKl: klSum / Math.max(count, 1),
      clipfrac: clipSum / Math.max(count, 1),
      gradNorm: gnSum / Math.max(steps, 1),
      skipped,
    };
  }

  /**
   * Clip, AdamW, clear. A non-finite gradient stops an f32 run (TrainingDiverged); with fp16 loss
   * scaling it skips the step and halves the scale (an f16 overflow), until the scale falls below
   * MIN_LOSS_SCALE, where every f16 gradient would underflow: then the run has diverged.
   */
  private async optimizerStep(params: Tensor[]): Promise<{ gradNorm: number; skipped: boolean }> {
    const c = this.cfg.train;
    const adam = { lr: c.learning_rate, beta1: c.adam_beta1, beta2: c.adam_beta2, eps: c.adam_epsilon, weightDecay: c.adam_weight_decay };
    const r = await optimizerStep(params, this.optimizer, { maxGradNorm: c.max_grad_norm, adamW: adam }, this.scaler);
    if (r.skipped && !this.scaler) throw new TrainingDiverged(`gradient norm is ${r.gradNorm}`);
    if (this.scaler && this.scaler.scale < MIN_LOSS_SCALE) {
      throw new TrainingDiverged(`the gradients are not finite at any loss scale down to ${MIN_LOSS_SCALE} (gradient norm ${r.gradNorm})`);
    }
    return r;
  }

  private state(epoch: number): TrainerState {
    const s: TrainerState = { epoch, configHash: configHash(this.cfg), tracker: this.tracker.toJSON(), stream: this.stream.state(), rng: this.rng.state(), adamStep: this.optimizer.step };
    if (this.scaler) s.gradScaler = this.scaler.state();
    return s;
  }

  /** Pictures of the fixed samples (input, output, attention overlay, mask) for the report. */
  async renderSamples(epoch: number): Promise<void> {
    await writeEpochSamples(this, join(this.runDir, "samples", `epoch_${epoch}`), this.fixedSamples);
  }

  /**
   * A stop during epoch `epoch`'s sampling: its samples are dropped, and the state at the end of the
   * previous epoch (the LoRA and optimizer are untouched by sampling; the stream is as it was when
   * the epoch began) is checkpointed unless that checkpoint exists. Returns the message to exit with.
   */
  private async stopWhileSampling(epoch: number, streamAtStart: StreamState, hooks: TrainHooks): Promise<string> {
    const where = join(this.runDir, "checkpoints");
    if (epoch === 0) return `interrupted while sampling epoch 0: nothing to checkpoint yet (a rerun starts afresh)`;
    const prev = epoch - 1;
    if (!listCheckpoints(this.runDir).some(([e]) => e === prev)) {
      hooks.onPhase?.(prev, "saving", 0, 1);
      await saveCheckpoint(this.runDir, this.models.unet, this.optimizer, { ...this.state(prev), stream: streamAtStart }, this.cfg.num_checkpoint_limit);
      await this.renderSamples(epoch);
    }
    return `interrupted while sampling epoch ${epoch} (its samples are dropped): checkpoint of epoch ${prev} saved in ${where}`;
  }

  async run(hooks: TrainHooks = {}): Promise<EpochMetrics[]> {
    const c = this.cfg;
    const metricsPath = join(this.runDir, "metrics.jsonl");
    const history = readMetrics(metricsPath).filter((r) => r.epoch < this.startEpoch);
    writeFileAtomic(metricsPath, history.map((r) => JSON.stringify(r) + "\n").join(""));
    if (this.startEpoch === 0) await this.renderSamples(0);
    for (let epoch = this.startEpoch; epoch < c.num_epochs; epoch++) {
      const t0 = performance.now();
      const streamAtStart = this.stream.state();
      const rollouts = await this.sampleEpoch(epoch, hooks);
      if (rollouts === null) throw new Interrupted(await this.stopWhileSampling(epoch, streamAtStart, hooks));
      let tr;
      try {
        tr = await this.trainEpoch(epoch, rollouts, hooks);
      } finally {
        disposeRollouts(rollouts);
      }
      const rw = rollouts.map((r) => r.reward);
      const mean = (f: (x: RewardParts) => number) => rw.reduce((a, x) => a + f(x), 0) / rw.length;
      const rm = mean((x) => x.reward);
      const seconds = (performance.now() - t0) / 1000;
      const metrics: EpochMetrics = {
        epoch,
        reward_mean: rm,
        reward_std: Math.sqrt(mean((x) => (x.reward - rm) ** 2)),
        reward_cos_mean: mean((x) => x.cos),
        reward_clip_mean: mean((x) => x.clip),
        mae_mean: mean((x) => x.mae),
        approx_kl: tr.approxKl,
        clipfrac: tr.clipfrac,
        loss: tr.loss,
        grad_norm: tr.gradNorm,
        lr: c.train.learning_rate,
        samples_per_s: rollouts.length / seconds,
        seconds,
      };
      if (this.scaler) {
        metrics.loss_scale = this.scaler.scale;
        metrics.skipped_steps = tr.skipped;
      }
      history.push(metrics);
      writeFileAtomic(metricsPath, history.map((r) => JSON.stringify(r) + "\n").join(""));
      hooks.onEpoch?.(metrics);
      const last = epoch === c.num_epochs - 1;
      const stop = hooks.shouldStop?.() ?? false;
      if ((epoch + 1) % c.save_freq === 0 || last || stop) {
        hooks.onPhase?.(epoch, "saving", 0, 1);
        await saveCheckpoint(this.runDir, this.models.unet, this.optimizer, this.state(epoch), c.num_checkpoint_limit);
        await this.renderSamples(epoch + 1);
      }
      if (stop && !last) throw new Interrupted(`interrupted: checkpoint of epoch ${epoch} saved in ${join(this.runDir, "checkpoints")}`);
      await gpu().sync();
    }
    return history;
  }
}

/** A NaN/Inf loss, reward or gradient: training stops, the last good checkpoint stays. */
export class TrainingDiverged extends UserError {
  constructor(what: string) {
    super(`training diverged: ${what}; the last good checkpoint is intact`);
  }
}

function readMetrics(path: string): EpochMetrics[] {
  if (!existsSync(path)) return [];
  return readFileSync(path, "utf8").split("\n").filter((l) => l.trim()).map((l) => JSON.parse(l) as EpochMetrics);
}

function disposeRollouts(rollouts: readonly Rollout[]): void {
  for (const r of rollouts) {
    r.embeds.dispose();
    r.imageLatents.dispose();
    for (const x of r.latents) x.dispose();
  }
}

function concatSources(ps: readonly PreparedSample[]): Float32Array {
  const per = ps[0].source.length;
  const out = new Float32Array(per * ps.length);
  ps.forEach((p, i) => out.set(p.source, i * per));
  return out;
}

export function ensureRunDir(runDir: string): void {
  try {
    mkdirSync(runDir, { recursive: true });
  } catch (e) {
    throw new UserError(`${runDir}: cannot create the run folder (${(e as Error).message})`);
  }
}

export type { GuidedConditioning };
