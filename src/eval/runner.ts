// The MagicBrush evaluation (SPEC §6): edit every sample of a dataset, write the outputs with
// MagicBrush's file names, score them against the ground truth, write results.json and return the
// table.
//
// Settings (MagicBrush's definitions, evaluation/README.md and edit_cli_single_multi_turn.py):
//   single-turn ("all turns", independent): every turn edits its own `source` (for turn k > 1 the
//               ground truth of turn k − 1); every turn is scored.
//   multi-turn  ("final turn", iterative): turn 1 edits the session's input, each later turn edits
//               our own previous output (read back from its PNG); only each session's final turn is
//               scored. When --limit cuts a session short, its last edited turn stands in for the
//               final turn (counted in settings.truncated_sessions). A session whose first turn in
//               the data is not turn 1 starts from its `sessionSource`.
// Files, as MagicBrush's scripts name them, under OUT/<img_id>/:
//   <img_id>_1.png          turn 1 (the same edit in both settings, made once)
//   <img_id>_inde_<k>.png   single-turn, turn k > 1
//   <img_id>_iter_<k>.png   multi-turn, turn k > 1
// (img ids that are not safe file names are cleaned and suffixed with a hash of the id.)
//
// Resuming: an output that already exists is not recomputed (MagicBrush's scripts skip them too);
// metrics are always recomputed from the files. OUT/generation.json records what produced the
// outputs (data, model, LoRA, steps, guidance, seed, resolution); running into a folder made with
// other settings is refused rather than mixing outputs.
//
// Attention: every edit records the instruction's cross-attention map (SPEC §5, layers "auto" as
// `edit --attention-map` and the reward's default: latent/4 when the UNet has it, else the attn2
// size closest to it, `defaultLayerFactor`) into
// <output>.attention.json beside the PNG. Where the sample has a mask, `attention_cos` is
// cos(a_pred, a_gt) (a_gt: the mask resized to the edited image, area-averaged to the map) and
// `attention_cos_uniform` the same for a constant map: the paper's reward term next to its
// no-grounding baseline. Outputs reused from an older run without the file score null there.
//
// Scores, per pair, from the PNG files as written (8-bit, like MagicBrush reads them): L1, L2 (MSE),
// PSNR, SSIM after resizing the output to the ground truth's size (pairMetrics), CLIP-T against the
// target's local caption and CLIP-I against the ground truth when a CLIP model is given. Averages
// and the treatment of infinite PSNR: see table.ts. Sampling is DDIM with eta 0 and the same seed for
// every edit (MagicBrush also re-seeds before every edit).
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, statSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { UserError } from "../errors.ts";
import { writeFileAtomic } from "../io/atomic.ts";
import { readJsonFile } from "../io/config_reader.ts";
import { readImage, writePng, type PlanarImage, type RgbImage } from "../io/image.ts";
import { loadImage, loadMask, openDataset, type EditSample } from "../io/datasets/index.ts";
import { editImage } from "../diffusion/edit.ts";
import type { IP2PModels } from "../diffusion/pipeline.ts";
import type { ClipBundle } from "../nn/clip_model.ts";
import { ClipScorer } from "./clip_score.ts";
import { pairMetrics } from "./metrics.ts";
import { areaAverage, resizeMaskTo } from "../io/mask.ts";
import { cosineSimilarity } from "../rl/reward.ts";
import { psnrJson, summarise, type SampleRecord, type SettingName, type TableRow } from "./table.ts";

export type TurnsOption = "single" | "multi" | "both";

export interface EvalProgress {
  update(done: number): void;
  stop(): void;
}

export interface EvalOptions {
  /** Dataset: a JSONL manifest, a MagicBrush folder, a parquet file or folder (openDataset). */
  data: string;
  /** Output folder (created). */
  out: string;
  turns: TurnsOption;
  /** Only the first N samples (turns) of the dataset. */
  limit?: number;
  steps: number;
  textGuidance: number;
  imageGuidance: number;
  seed: number;
  /** Scale the input's longer side to this many pixels first (editImage). */
  resolution?: number;
  /** The editing model, or a loader called only when something has to be edited. */
  models: IP2PModels | (() => Promise<IP2PModels>);
  /** A CLIP model (or its loader) for CLIP-T / CLIP-I; null or absent: those columns are null. */
  clip?: ClipBundle | (() => Promise<ClipBundle>) | null;
  /** How the model, LoRA and CLIP are named in results.json and generation.json. */
  labels?: { model?: string; lora?: string | null; clip?: string | null };
  /** A progress display over the outputs (edited or found). */
  progress?: (total: number) => EvalProgress;
  /** Samples scored per batch (CLIP embeddings are batched). */
  scoreBatch?: number;
}

export interface EvalResults {
  settings: Record<string, unknown>;
  n: number;
  table: TableRow[];
  per_sample: SampleRecord[];
}

export interface EvalRun {
  results: EvalResults;
  /** OUT/results.json. */
  resultsPath: string;
  /** Outputs computed by this run. */
  edited: number;
  /** Outputs found on disk and reused. */
  reused: number;
}

const SAFE_ID = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;

/** The folder/file stem of a session id: the id itself when it is a safe file name. */
export function sessionStem(imgId: string): string {
  if (SAFE_ID.test(imgId) && imgId.length <= 100) return imgId;
  const clean = imgId.replace(/[^A-Za-z0-9._-]+/g, "_").replace(/^[._-]+/, "").slice(0, 60) || "session";
  return `${clean}-${createHash("sha256").update(imgId).digest("hex").slice(0, 8)}`;
}

/** MagicBrush's name of an output, relative to the output folder. */
export function outputName(imgId: string, turn: number, setting: SettingName): string {
  const stem = sessionStem(imgId);
  const file = turn === 1 ? `${stem}_1.png` : `${stem}_${setting === "single-turn" ? "inde" : "iter"}_${turn}.png`;
  return `${stem}/${file}`;
}

function isFile(p: string): boolean {
  try {
    return statSync(p).isFile();
  } catch {
    return false;
  }
}

function prepareOutDir(out: string): void {
  if (existsSync(out) && !statSync(out).isDirectory()) throw new UserError(`--out ${out}: exists and is not a folder`);
  try {
    mkdirSync(out, { recursive: true });
  } catch (e) {
    throw new UserError(`--out ${out}: cannot create the folder: ${(e as Error).message}`);
  }
}

/** Check OUT/generation.json against this run's generation settings (write it when absent). */
function checkGeneration(out: string, gen: Record<string, unknown>): void {
  const path = join(out, "generation.json");
  if (existsSync(path)) {
    const old = readJsonFile(path);
    if (old === null || typeof old !== "object" || Array.isArray(old)) throw new UserError(`${path}: expected a JSON object (delete it or choose a new --out)`);
    const diffs = Object.keys({ ...gen, ...(old as Record<string, unknown>) })
      .filter((k) => JSON.stringify((old as Record<string, unknown>)[k] ?? null) !== JSON.stringify(gen[k] ?? null))
      .map((k) => `${k} ${JSON.stringify((old as Record<string, unknown>)[k] ?? null)} → ${JSON.stringify(gen[k] ?? null)}`);
    if (diffs.length > 0) {
      throw new UserError(`${path}: the outputs in this folder were made with other settings (${diffs.join(", ")}); choose a new --out`);
    }
    return;
  }
  writeFileAtomic(path, JSON.stringify(gen, null, 2) + "\n");
}

/** How the edits were sampled: recorded with the outputs (resume check) and in results.json. */
function samplerSettings(o: EvalOptions) {
  return {
    sampler: "DDIM",
    eta: 0,
    steps: o.steps,
    text_guidance: o.textGuidance,
    image_guidance: o.imageGuidance,
    seed: o.seed,
    resolution: o.resolution ?? null,
  };
}

/** What an edit's attention file holds: a_pred [height * width] and the edited image's size. */
interface StoredAttention {
  width: number;
  height: number;
  image_width: number;
  image_height: number;
  layers: string[];
  map: number[];
}

export function attentionFile(output: string): string {
  return `${output}.attention.json`;
}

/** cos(a_pred, a_gt) and cos(uniform, a_gt) of one output, or null (no mask, or no attention file). */
async function attentionScores(out: string, name: string, s: EditSample): Promise<{ cos: number; uniform: number } | null> {
  const path = join(out, attentionFile(name));
  if (!s.mask || !isFile(path)) return null;
  const a = readJsonFile(path) as StoredAttention;
  if (!Array.isArray(a.map) || a.map.length !== a.width * a.height) throw new UserError(`${path}: not an attention map (expected ${a.width}x${a.height} values)`);
  const mask = await loadMask(s.mask);
  const aGt = areaAverage(resizeMaskTo(mask, a.image_width, a.image_height), a.width, a.height).data;
  return { cos: cosineSimilarity(a.map, aGt), uniform: cosineSimilarity(new Float32Array(aGt.length).fill(1), aGt) };
}

interface Planned {
  sample: EditSample;
  /** Output name per wanted setting. */
  single: string | null;
  multi: string | null;
  /** Multi-turn input: the previous output's name, or null for the session's input. */
  multiFrom: string | null;
}

async function resolveMaybe<T>(v: T | (() => Promise<T>)): Promise<T> {
  return typeof v === "function" ? await (v as () => Promise<T>)() : v;
}

/** Run the evaluation (see the file header); writes OUT/results.json and returns the results. */
export async function runEval(o: EvalOptions): Promise<EvalRun> {
  const wantSingle = o.turns === "single" || o.turns === "both";
  const wantMulti = o.turns === "multi" || o.turns === "both";
  if (!wantSingle && !wantMulti) throw new UserError(`--turns: expected single, multi or both, got '${o.turns}'`);
  if (o.limit !== undefined && !(Number.isInteger(o.limit) && o.limit >= 1)) throw new UserError(`--limit: expected an integer >= 1, got ${o.limit}`);

  const ds = await openDataset(o.data);
  const samples: EditSample[] = [];
  if (ds.size > 0) {
    for await (const s of ds.samples()) {
      if (o.limit !== undefined && samples.length >= o.limit) break;
      samples.push(s);
    }
  }
  if (samples.length === 0) throw new UserError(`${o.data}: the dataset has no samples`);
  for (const s of samples) {
    if (!s.target) throw new UserError(`${ds.path}: sample '${s.id}' has no ground-truth target (the evaluation compares with it)`);
  }

  // Plan the outputs.
  const plan: Planned[] = [];
  const prevMulti = new Map<string, string>();
  const lastOfSession = new Map<string, number>(); // img id -> index in plan of its last turn
  for (const s of samples) {
    const single = wantSingle ? outputName(s.imgId, s.turn, "single-turn") : null;
    const multi = wantMulti ? outputName(s.imgId, s.turn, "multi-turn") : null;
    const multiFrom = wantMulti ? (prevMulti.get(s.imgId) ?? null) : null;
    if (multi) prevMulti.set(s.imgId, multi);
    lastOfSession.set(s.imgId, plan.length);
    plan.push({ sample: s, single, multi, multiFrom });
  }
  const outputs = new Set<string>();
  for (const p of plan) for (const n of [p.single, p.multi]) if (n) outputs.add(n);

  prepareOutDir(o.out);
  const labels = o.labels ?? {};
  const generation = {
    data: resolve(o.data),
    model: labels.model ?? null,
    lora: labels.lora ?? null,
    ...samplerSettings(o),
  };
  checkGeneration(o.out, generation);

  // Edit what is missing, in dataset order (a multi-turn turn reads the previous turn's PNG).
  let models: IP2PModels | null = null;
  let edited = 0, reused = 0, truncatedInstructions = 0;
  const bar = o.progress?.(outputs.size);
  const done = new Set<string>();
  const edit = async (input: RgbImage | PlanarImage, instruction: string, name: string) => {
    models ??= await resolveMaybe<IP2PModels>(o.models);
    const r = await editImage(models, input, instruction, {
      steps: o.steps,
      guidance: { text: o.textGuidance, image: o.imageGuidance },
      eta: 0,
      seed: o.seed,
      resolution: o.resolution,
      attentionLayers: "auto",
    });
    if (r.truncated) truncatedInstructions++;
    mkdirSync(dirname(join(o.out, name)), { recursive: true });
    const att = r.attention!;
    const attention: StoredAttention = { width: att.width, height: att.height, image_width: r.image.width, image_height: r.image.height, layers: att.layers, map: Array.from(att.map) };
    writeFileAtomic(join(o.out, attentionFile(name)), JSON.stringify(attention) + "\n");
    await writePng(join(o.out, name), r.image);
  };
  const produce = async (name: string, input: () => Promise<RgbImage | PlanarImage>, instruction: string) => {
    if (done.has(name)) return;
    if (isFile(join(o.out, name))) reused++;
    else {
      await edit(await input(), instruction, name);
      edited++;
    }
    done.add(name);
    bar?.update(done.size);
  };
  try {
    for (const p of plan) {
      const s = p.sample;
      if (p.single) await produce(p.single, () => loadImage(s.source), s.instruction);
      if (p.multi) {
        const from = p.multiFrom;
        await produce(p.multi, () => (from ? readImage(join(o.out, from)) : loadImage(s.sessionSource)), s.instruction);
      }
    }
  } finally {
    bar?.stop();
  }

  // Score, in plan order (a sample's two settings next to each other, so its decoded target is reused).
  const items: { setting: SettingName; p: Planned; name: string }[] = [];
  const finals = new Set(lastOfSession.values());
  let truncatedSessions = 0;
  plan.forEach((p, idx) => {
    if (wantSingle) items.push({ setting: "single-turn", p, name: p.single! });
    if (wantMulti && finals.has(idx)) {
      if (p.sample.turn !== p.sample.turns) truncatedSessions++;
      items.push({ setting: "multi-turn", p, name: p.multi! });
    }
  });
  const clip: ClipBundle | null = o.clip ? await resolveMaybe<ClipBundle>(o.clip) : null;
  const scorer = clip ? new ClipScorer(clip) : null;
  const records: SampleRecord[] = [];
  const batch = Math.max(1, o.scoreBatch ?? 8);
  const lastTarget: { id: string | null; image: RgbImage | null } = { id: null, image: null };
  let captionsTruncated = 0;
  for (let i = 0; i < items.length; i += batch) {
    const chunk = items.slice(i, i + batch);
    const gen: RgbImage[] = [];
    const gt: RgbImage[] = [];
    for (const it of chunk) {
      gen.push(await readImage(join(o.out, it.name)));
      const s = it.p.sample;
      if (lastTarget.id !== s.id || !lastTarget.image) {
        lastTarget.image = await loadImage(s.target!);
        lastTarget.id = s.id;
      }
      gt.push(lastTarget.image);
    }
    const clipScores = scorer
      ? await scorer.score(chunk.map((it, j) => ({ generated: gen[j], target: gt[j], caption: it.p.sample.caption })))
      : null;
    const attention: ({ cos: number; uniform: number } | null)[] = [];
    for (const it of chunk) attention.push(await attentionScores(o.out, it.name, it.p.sample));
    chunk.forEach((it, j) => {
      const s = it.p.sample;
      const m = pairMetrics(gen[j], gt[j]);
      const c = clipScores?.[j];
      if (c?.captionTruncated) captionsTruncated++;
      records.push({
        setting: it.setting,
        id: s.id,
        img_id: s.imgId,
        turn: s.turn,
        turns: s.turns,
        instruction: s.instruction,
        caption: s.caption ?? null,
        output: it.name,
        target: s.target!.name,
        L1: m.l1,
        L2: m.l2,
        PSNR: psnrJson(m.psnr),
        SSIM: m.ssim,
        "CLIP-T": c?.clipT ?? null,
        "CLIP-I": c?.clipI ?? null,
        attention_cos: attention[j]?.cos ?? null,
        attention_cos_uniform: attention[j]?.uniform ?? null,
      });
    });
  }
  // per_sample lists the single-turn records, then the multi-turn ones (each in dataset order).
  records.sort((a, b) => (a.setting === b.setting ? 0 : a.setting === "single-turn" ? -1 : 1));

  const table: TableRow[] = [];
  if (wantSingle) table.push(summarise("single-turn", records));
  if (wantMulti) table.push(summarise("multi-turn", records));
  const results: EvalResults = {
    settings: {
      data: o.data,
      dataset_kind: ds.kind,
      model: labels.model ?? null,
      lora: labels.lora ?? null,
      clip: clip ? (labels.clip ?? clip.dir) : null,
      turns: o.turns,
      limit: o.limit ?? null,
      ...samplerSettings(o),
      sessions: lastOfSession.size,
      truncated_sessions: wantMulti ? truncatedSessions : null,
      truncated_instructions: truncatedInstructions,
      truncated_captions: captionsTruncated,
      multi_turn_scores: "final turn of each session",
      psnr_mean: "over finite values; identical pairs counted in PSNR_infinite",
    },
    n: samples.length,
    table,
    per_sample: records,
  };
  const resultsPath = join(o.out, "results.json");
  writeFileAtomic(resultsPath, JSON.stringify(results, null, 2) + "\n");
  return { results, resultsPath, edited, reused };
}
