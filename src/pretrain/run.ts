// `rl4pix pretrain`: train a whole small InstructPix2Pix from scratch, the way a real one is made
// (SPEC §9): the VAE as an autoencoder, then the text encoder and UNet as a text-to-image model on
// the scenes' captions, then the UNet as an editor (conv_in's image channels starting at zero).
// RUN_DIR holds
//   settings.json          what the run was started with (a resume must use the same)
//   base/                  the random starting model (from the architecture spec)
//   vae/ t2i/ editor/      each stage's checkpoints (ckpt-<step>/) and metrics.jsonl
//   model/                 a diffusers folder of the model after the newest finished stage
// Running the command again resumes where it stopped (exactly: see src/pretrain/checkpoint.ts).
import { createHash } from "node:crypto";
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { join } from "node:path";
import { UserError } from "../errors.ts";
import { publishFolder, tempSibling, writeFileAtomic } from "../io/atomic.ts";
import { writeSafetensors } from "../io/safetensors.ts";
import { sortedJson } from "../text/bpe_builder.ts";
import { type TinySpec, writeTinyCheckpoint } from "../models/tiny.ts";
import { disposeModels, type IP2PModels, loadIP2P } from "../diffusion/pipeline.ts";
import { readParameters } from "../nn/load.ts";
import { checkModelFolder } from "../diffusion/model_folder.ts";
import type { Module } from "../nn/module.ts";
import { gpu } from "../gpu/device.ts";
import { listStageCheckpoints, type NamedParam } from "./checkpoint.ts";
import { runStage, type ParamGroup } from "./loop.ts";
import { decoderLoss, editorLoss, type StageName, t2iLoss, vaeLoss } from "./objectives.ts";
import { heldOutExamples } from "./data.ts";
import { editMetrics, latentStd, t2iGrounding, vaePsnr, wordDistinctness } from "./evaluate.ts";

/** Bumped when the same settings would train differently (part of every stage's settings hash). */
export const PRETRAIN_VERSION = 1;

export interface PretrainSettings {
  /** The architecture (an rl4pix-tiny/1 spec; configs/editor-tiny.json by default). */
  spec: TinySpec;
  /** Image side in pixels. */
  size: number;
  batch: number;
  seed: number;
  vae: { steps: number; lr: number; klWeight: number };
  /**
   * Decoder fine-tuning after the VAE stage (MSE on the encoder's mode, the learning rate falling
   * linearly to 0). Absent: no such stage (runs made before it existed).
   */
  decoder?: { steps: number; lr: number };
  t2i: { steps: number; lr: number; textLrScale: number; captionDropout: number };
  /**
   * batch: the editor's own batch (absent: `batch`); weighting: the loss's timestep weighting
   * (absent: "eps", see EditorObjective). Absent fields keep older runs' settings and hashes valid.
   */
  editor: { steps: number; lr: number; dropout: number; batch?: number; weighting?: "eps" | "v" };
  warmupSteps: number;
  weightDecay: number;
  maxGradNorm: number;
  checkpointEvery: number;
  evalEvery: number;
  /** Held-out examples used by the periodic evaluations. */
  heldOut: number;
  /** DDIM steps of the editor stage's sampled evaluation (the CLI's guidance scales). */
  evalSampleSteps: number;
}

export interface PretrainHooks {
  stop?: () => boolean;
  log?: (line: string) => void;
  /** A stage kept as finished without its AdamW moments may continue with a restarted optimizer (loop.ts). */
  freshOptimizer?: boolean;
}

/** The stages in the order they run. */
const STAGES: StageName[] = ["vae", "decoder", "t2i", "editor"];
/** The earlier stages whose weights a stage's training reads (t2i and the editor use only the encoder). */
const DEPENDS_ON: Record<StageName, StageName[]> = { vae: [], decoder: ["vae"], t2i: ["vae"], editor: ["vae", "t2i"] };
/** Stages whose learning rate decays to 0 at their last step: their length is part of what they compute. */
const DECAYS: ReadonlySet<StageName> = new Set(["decoder"]);

/** What decides a stage's result: the stages it reads, and its own settings except its length (unless its learning rate decays). */
function stageHash(s: PretrainSettings, stage: StageName): string {
  const settings = s[stage] ?? { steps: 0 };
  const own = { ...settings, steps: DECAYS.has(stage) ? settings.steps : 0 }; // a constant-rate stage may be lengthened later
  const before = Object.fromEntries(DEPENDS_ON[stage].map((n) => [n, s[n]]));
  const common = { v: PRETRAIN_VERSION, spec: s.spec, size: s.size, batch: s.batch, seed: s.seed, warmup: s.warmupSteps, wd: s.weightDecay, clip: s.maxGradNorm };
  return createHash("sha256").update(sortedJson({ common, before, own, stage })).digest("hex").slice(0, 16);
}

function named(prefix: string, m: Module): NamedParam[] {
  return m.namedParameters().map(([k, p]) => ({ name: `${prefix}.${k}`, t: p.t }));
}

/** Zero conv_in's weights for the image-latent input channels (the second half of in_channels). */
async function zeroImageChannels(m: IP2PModels): Promise<void> {
  const w = m.unet.conv_in.weight.t; // [C, in, k, k]
  const [C, cin, kh, kw] = w.shape;
  const data = await w.readF32();
  const per = kh * kw;
  for (let c = 0; c < C; c++) for (let i = cin / 2; i < cin; i++) data.fill(0, (c * cin + i) * per, (c * cin + i + 1) * per);
  gpu().write(w.buffer, 0, data);
  w.storage.invalidate();
}

function checkSettings(dir: string, s: PretrainSettings): void {
  const path = join(dir, "settings.json");
  const text = JSON.stringify(s, null, 2) + "\n";
  if (!existsSync(path)) {
    writeFileAtomic(path, text);
    return;
  }
  let saved: PretrainSettings;
  try {
    saved = JSON.parse(readFileSync(path, "utf8")) as PretrainSettings;
  } catch (e) {
    throw new UserError(`${path}: unreadable (${(e as Error).message})`);
  }
  // Stage lengths may grow (a longer run continues the same one), and a stage that has not started
  // may take other settings (say, the editor's learning rate once the first two stages are done);
  // anything else must match.
  const started = (stage: StageName) => listStageCheckpoints(join(dir, stage)).length > 0;
  const own = (x: PretrainSettings, stage: StageName) => (started(stage) ? { ...x[stage], steps: DECAYS.has(stage) ? x[stage]?.steps : 0 } : null);
  const strip = (x: PretrainSettings) => sortedJson({ ...x, vae: own(x, "vae"), decoder: own(x, "decoder"), t2i: own(x, "t2i"), editor: own(x, "editor"), evalEvery: 0, heldOut: 0, evalSampleSteps: 0, checkpointEvery: 0 });
  if (strip(saved) !== strip(s)) throw new UserError(`${path}: this run was started with other settings; use the same flags or a new --out folder`);
  writeFileAtomic(path, text);
}

/** Write RUN_DIR/model: base's configs and tokenizer, the current weights, the VAE's scaling factor. */
async function writeModelFolder(dir: string, m: IP2PModels, scalingFactor: number, meta: Record<string, string>): Promise<void> {
  const target = join(dir, "model");
  const tmp = tempSibling(target);
  try {
    cpSync(join(dir, "base"), tmp, { recursive: true });
    const write = async (sub: string, file: string, mod: Module) => {
      for (const f of readdirSync(join(tmp, sub))) if (f.endsWith(".safetensors")) rmSync(join(tmp, sub, f));
      const w = await readParameters(mod);
      writeSafetensors(join(tmp, sub, file), new Map([...w].map(([k, v]) => [k, { dtype: "F32" as const, shape: v.shape, data: v.data }])), { format: "pt", ...meta });
    };
    await write("unet", "diffusion_pytorch_model.safetensors", m.unet);
    await write("vae", "diffusion_pytorch_model.safetensors", m.vae);
    await write("text_encoder", "model.safetensors", m.textEncoder);
    const vaeCfgPath = join(tmp, "vae", "config.json");
    const vaeCfg = JSON.parse(readFileSync(vaeCfgPath, "utf8")) as Record<string, unknown>;
    vaeCfg.scaling_factor = scalingFactor;
    writeFileAtomic(vaeCfgPath, sortedJson(vaeCfg) + "\n");
  } catch (e) {
    rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
  publishFolder(tmp, target, target);
}

/**
 * True when `stage` finished at `steps` and its model folder was written then and is still there (a
 * lengthened stage writes it again; so does a run folder copied without model/, like a snapshot).
 */
function stageWritten(dir: string, stage: StageName, steps: number): boolean {
  const path = join(dir, stage, "done.json");
  if (!existsSync(path) || !existsSync(join(dir, "model", "model_index.json"))) return false;
  try {
    return (JSON.parse(readFileSync(path, "utf8")) as { steps?: number }).steps === steps;
  } catch {
    return false;
  }
}

function fmt(x: number): string {
  return Number(x.toPrecision(5)).toString();
}

/**
 * Everything that can be checked or made on the host, before the GPU starts: the run folder (new,
 * or a pretraining run with the same settings), the random starting model (written when missing)
 * and its files. Returns the starting model's folder.
 */
export function preparePretrainDir(dir: string, s: PretrainSettings): string {
  if (existsSync(dir)) {
    if (!statSync(dir).isDirectory()) throw new UserError(`${dir}: exists and is not a folder`);
    if (readdirSync(dir).length > 0 && !existsSync(join(dir, "settings.json"))) {
      throw new UserError(`${dir}: not a pretraining run folder (no settings.json); choose a new or empty --out folder`);
    }
  }
  try {
    mkdirSync(dir, { recursive: true });
  } catch (e) {
    throw new UserError(`${dir}: cannot create the run folder: ${(e as Error).message}`);
  }
  checkSettings(dir, s);
  // A stage's checkpoints must come from these settings: lengthening an earlier stage after a later
  // one started would change what that one started from. Checked before anything trains.
  for (const stage of STAGES) {
    const all = listStageCheckpoints(join(dir, stage));
    if (all.length === 0) continue;
    const statePath = join(all[all.length - 1][1], "state.json");
    let hash: unknown = null;
    try {
      hash = (JSON.parse(readFileSync(statePath, "utf8")) as { settingsHash?: unknown }).settingsHash;
    } catch {
      continue; // unreadable: the stage's own resume reports it, naming the file
    }
    if (hash !== stageHash(s, stage)) {
      throw new UserError(`${statePath}: written with other pretraining settings (an earlier stage's length or settings, or this decaying stage's length, changed after the ${stage} stage started); use the same flags or a new --out folder`);
    }
  }
  const base = join(dir, "base");
  if (!existsSync(join(base, "model_index.json"))) writeTinyCheckpoint(base, { spec: s.spec, overwrite: true });
  checkModelFolder(base);
  return base;
}

/** Run (or resume) every stage; returns true when all finished, false when stopped early. */
export async function runPretrain(dir: string, s: PretrainSettings, hooks: PretrainHooks = {}): Promise<boolean> {
  const base = preparePretrainDir(dir, s);
  const m = loadIP2P(base);
  const log = hooks.log ?? (() => {});
  const heldOut = heldOutExamples(s.heldOut, s.size);
  const common = (stage: StageName, groups: ParamGroup[]) => ({
    name: stage,
    dir: join(dir, stage),
    groups,
    steps: s[stage]?.steps ?? 0,
    learningRate: s[stage]?.lr ?? 0,
    warmupSteps: s.warmupSteps,
    decay: DECAYS.has(stage) ? ("linear" as const) : ("none" as const),
    weightDecay: s.weightDecay,
    maxGradNorm: s.maxGradNorm,
    settingsHash: stageHash(s, stage),
    checkpointEvery: s.checkpointEvery,
    evalEvery: s.evalEvery,
    stop: hooks.stop,
    log,
    freshOptimizer: hooks.freshOptimizer,
  });
  try {
    // 1. VAE
    const vae = await runStage({
      ...common("vae", [{ params: named("vae", m.vae), lrScale: 1 }]),
      loss: (step) => vaeLoss(m, s.seed, step, s.batch, s.size, { klWeight: s.vae.klWeight }),
      evaluate: async () => ({ psnr: await vaePsnr(m, heldOut, s.size) }),
    });
    if (!vae.finished) return false;
    // The latents' scale from the trained encoder, as Stable Diffusion's 0.18215 was chosen.
    const sf = 1 / (await latentStd(m, heldOut, s.size));
    m.config.vae.scalingFactor = sf;
    const meta = { rl4pix_pretrain: sortedJson({ settings: s, version: PRETRAIN_VERSION }) };
    // model/ is the model after the newest finished stage: once a stage writes it in this process,
    // every later stage writes it again (say, a decoder stage added to a run whose t2i had finished)
    let rewrite = false;
    const finish = async (stage: StageName, steps: number, extra: Record<string, number> = {}) => {
      if (!rewrite && stageWritten(dir, stage, steps)) return;
      await writeModelFolder(dir, m, sf, meta);
      writeFileAtomic(join(dir, stage, "done.json"), JSON.stringify({ steps, ...extra }) + "\n");
      rewrite = true;
    };
    await finish("vae", vae.step, { scaling_factor: sf });
    log(`vae: done (scaling_factor ${fmt(sf)})`);
    // 1b. The decoder alone, on the frozen encoder's mode (no stage when its steps are 0).
    if ((s.decoder?.steps ?? 0) > 0) {
      const decoder = await runStage({
        ...common("decoder", [{ params: [...named("vae.decoder", m.vae.decoder), ...named("vae.post_quant_conv", m.vae.post_quant_conv)], lrScale: 1 }]),
        loss: (step) => decoderLoss(m, step, s.batch, s.size),
        evaluate: async () => ({ psnr: await vaePsnr(m, heldOut, s.size) }),
      });
      if (!decoder.finished) return false;
      await finish("decoder", decoder.step);
      log("decoder: done");
    }
    // 2. Text-to-image: text encoder + UNet on captions, image channels held at zero.
    // (a checkpoint of the stage, when there is one, overwrites this with its own values)
    await zeroImageChannels(m);
    const t2iEval = async () => {
      const g = await t2iGrounding(m, heldOut, s.size);
      const w = await wordDistinctness(m);
      return { grounding_own: g.own, grounding_other: g.other, word_cos_mean: w.mean, word_cos_max: w.max, word_cos_centered: w.centeredMean };
    };
    const t2i = await runStage({
      ...common("t2i", [{ params: named("unet", m.unet), lrScale: 1 }, { params: named("text_encoder", m.textEncoder), lrScale: s.t2i.textLrScale }]),
      loss: (step) => t2iLoss(m, s.seed, step, s.batch, s.size, { captionDropout: s.t2i.captionDropout }),
      evaluate: t2iEval,
    });
    if (!t2i.finished) return false;
    await finish("t2i", t2i.step);
    log("t2i: done");
    // 3. The editor: IP2P objective, text encoder frozen.
    const sampler = { steps: s.evalSampleSteps, textGuidance: 7.5, imageGuidance: 1.5 };
    const editor = await runStage({
      ...common("editor", [{ params: named("unet", m.unet), lrScale: 1 }]),
      loss: (step) => editorLoss(m, s.seed, step, s.editor.batch ?? s.batch, s.size, { dropout: s.editor.dropout, weighting: s.editor.weighting }),
      evaluate: async () => {
        const e = await editMetrics(m, heldOut.slice(0, Math.min(16, heldOut.length)), s.size, sampler);
        return { l1_inside_ratio: e.l1InsideRatio, l1_outside: e.l1Outside, attention_cos: e.attentionCos, attention_cos_uniform: e.attentionCosUniform };
      },
    });
    if (!editor.finished) return false;
    await finish("editor", editor.step);
    log(`editor: done; the model is ${join(dir, "model")}`);
    return true;
  } finally {
    disposeModels(m);
  }
}
