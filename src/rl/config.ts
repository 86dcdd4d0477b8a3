// The training configuration. Keys are the dotted names of the paper's Table 4 (ddpo-pytorch's
// ml_collections config: `sample.num_steps`, `train.learning_rate`, …), with the paper's values as
// defaults, plus the keys this implementation adds (image guidance, reward, LoRA, model/data paths,
// report). One schema below drives the defaults, JSON loading, `key=value` overrides, validation,
// serialisation and the resume check.
//
// Notes on keys we accept but interpret:
// - `sample.guidance_scale` is the text guidance s_T; `sample.image_guidance_scale` the image
//   guidance s_I (SPEC §3–4: the paper's single "guidance 5.0" is s_T, with s_I 1.5).
// - `train.use_8bit_adam` is accepted for compatibility with the paper's table, but the optimiser is
//   always a plain (32-bit) AdamW: bitsandbytes' 8-bit Adam has no WebGPU counterpart.
// - `allow_tf32` has no effect on WebGPU (matmuls accumulate in f32); it is kept so the paper's
//   configuration loads unchanged.
// - `lora.alpha` null means "equal to lora.rank", i.e. LoRA scale alpha / rank = 1.
// - `reward.layers` is a layer-selection spec string, parsed by `parseLayerSpec` (see there).
import { ATTENTION_PROJECTIONS } from "../nn/lora.ts";
import { createHash } from "node:crypto";
import { UserError } from "../errors.ts";
import { writeFileAtomic } from "../io/atomic.ts";
import { readJsonFile } from "../io/config_reader.ts";

export type MixedPrecision = "no" | "fp16" | "bf16";

export interface Config {
  seed: number;
  logdir: string;
  num_epochs: number;
  save_freq: number;
  num_checkpoint_limit: number;
  mixed_precision: MixedPrecision;
  allow_tf32: boolean;
  resume_from: string;
  use_lora: boolean;
  /** Image side in pixels (square images). */
  resolution: number;
  /** Diffusers pipeline folder; "" = the embedded tiny model. */
  model: string;
  /** Dataset (MagicBrush parquet/folder or JSONL manifest); a real run needs one. */
  data: string;
  gradient_checkpointing: boolean;
  sample: {
    num_steps: number;
    eta: number;
    /** Text guidance s_T. */
    guidance_scale: number;
    /** Image guidance s_I. */
    image_guidance_scale: number;
    batch_size: number;
    num_batches_per_epoch: number;
    /** Samples of each prompt in a sampling batch (a group whose rewards the per-prompt tracker compares). */
    num_image_per_prompt: number;
    /** The group's samples start from one x_T (the first sample's); their step noise differs. */
    shared_initial_noise: boolean;
  };
  train: {
    batch_size: number;
    /** Accepted, but a plain AdamW is always used. */
    use_8bit_adam: boolean;
    learning_rate: number;
    adam_beta1: number;
    adam_beta2: number;
    adam_weight_decay: number;
    adam_epsilon: number;
    gradient_accumulation_steps: number;
    max_grad_norm: number;
    num_inner_epochs: number;
    cfg: boolean;
    adv_clip_max: number;
    clip_range: number;
    timestep_fraction: number;
    /** The last N denoising steps are sampled (stochastically) but left out of the PPO loss. */
    skip_final_steps: number;
  };
  per_prompt_stat_tracking: {
    buffer_size: number;
    min_count: number;
  };
  reward: {
    /** Weight of the CLIP-loss term (r = cos + alpha · L_clip). */
    alpha: number;
    /** L_clip counts only when MAE(V, O) > tau. */
    tau: number;
    /** Layer-selection spec (`parseLayerSpec`). */
    layers: string;
  };
  lora: {
    rank: number;
    /** null = rank (scale 1). */
    alpha: number | null;
    /** Comma list of the linears and convolutions that get adapters, by name or path suffix (peft's target_modules). */
    target_modules: string;
    /** Seed whose adapter initialisation to use; null = `seed`. */
    init_seed: number | null;
  };
  report: {
    /** Fixed samples rendered at every save. */
    num_samples: number;
  };
}

// ---------------------------------------------------------------------------------------------------
// Schema

type Value = number | string | boolean | null;

type FieldType =
  | { kind: "int"; min: number; max?: number }
  | { kind: "number"; min?: number; max?: number; minOpen?: boolean; maxOpen?: boolean }
  | { kind: "number?"; min?: number; minOpen?: boolean; integer?: boolean; max?: number }
  | { kind: "bool" }
  | { kind: "string" }
  | { kind: "enum"; values: readonly string[] }
  | { kind: "layers" };

interface Field {
  key: string;
  type: FieldType;
  def: Value;
  doc: string;
  /** Added after checkpoints existed: left out of configHash while at its default, so older runs resume. */
  hashOmitDefault?: boolean;
}

/** The projections of every attention that LoRA can adapt (diffusers' names): the default targets. */
export const LORA_TARGET_NAMES = ATTENTION_PROJECTIONS;
// a module name or dotted path (peft matches suffixes); whether it names a linear or convolution of the
// UNet is checked against the model (nn/lora's checkLoraTargets)
const LORA_TARGET_PATTERN = /^\w+(?:\.\w+)*$/;

/** `lora.target_modules` as a list. */
export function loraTargetModules(cfg: Config): string[] {
  return cfg.lora.target_modules.split(",").map((t) => t.trim());
}

const int = (min: number, max?: number): FieldType => ({ kind: "int", min, max });
const num = (opts: Omit<Extract<FieldType, { kind: "number" }>, "kind"> = {}): FieldType => ({ kind: "number", ...opts });
const bool: FieldType = { kind: "bool" };
const str: FieldType = { kind: "string" };

const FIELDS: readonly Field[] = [
  // Table 4, top level
  { key: "seed", type: int(0, Number.MAX_SAFE_INTEGER), def: 42, doc: "Seed for random number generation" },
  { key: "logdir", type: str, def: "logs", doc: "Top-level logging directory for checkpoint saving" },
  { key: "num_epochs", type: int(1), def: 200, doc: "Number of epochs to train for" },
  { key: "save_freq", type: int(1), def: 50, doc: "Number of epochs between saving model checkpoints" },
  { key: "num_checkpoint_limit", type: int(1), def: 5, doc: "Number of checkpoints to keep before overwriting old ones" },
  { key: "mixed_precision", type: { kind: "enum", values: ["no", "fp16", "bf16"] }, def: "no", doc: "Mixed precision training" },
  { key: "allow_tf32", type: bool, def: true, doc: "Allow tf32 on Ampere GPUs (no effect on WebGPU)" },
  { key: "resume_from", type: str, def: "", doc: "Resume training from a checkpoint" },
  { key: "use_lora", type: bool, def: true, doc: "Whether or not to use LoRA" },
  // ours, top level
  { key: "resolution", type: int(8), def: 512, doc: "Image side in pixels (a multiple of 8)" },
  { key: "model", type: str, def: "", doc: "Diffusers pipeline folder (\"\" = the embedded tiny model)" },
  { key: "data", type: str, def: "", doc: "Training data: MagicBrush parquet/folder or a JSONL manifest" },
  { key: "gradient_checkpointing", type: bool, def: false, doc: "Recompute UNet block activations in the backward pass" },
  // Table 4, sample
  { key: "sample.num_steps", type: int(1, 1000), def: 50, doc: "Number of sampler inference steps" },
  { key: "sample.eta", type: num({ min: 0 }), def: 1.0, doc: "Eta parameter for the DDIM sampler" },
  { key: "sample.guidance_scale", type: num({ min: 0 }), def: 5.0, doc: "Classifier-free guidance weight (text guidance s_T)" },
  { key: "sample.image_guidance_scale", type: num({ min: 0 }), def: 1.5, doc: "Image guidance weight s_I" },
  { key: "sample.batch_size", type: int(1), def: 1, doc: "Batch size for sampling" },
  { key: "sample.num_batches_per_epoch", type: int(1), def: 2, doc: "Number of batches to sample per epoch" },
  { key: "sample.num_image_per_prompt", type: int(1), def: 1, doc: "Samples of each prompt per sampling batch (different noise), compared by the per-prompt tracker", hashOmitDefault: true },
  { key: "sample.shared_initial_noise", type: bool, def: false, doc: "The num_image_per_prompt samples of a prompt start from the same initial noise x_T (their step noise differs), so the per-prompt tracker compares the policy's steps, not x_T", hashOmitDefault: true },
  // Table 4, train
  { key: "train.batch_size", type: int(1), def: 1, doc: "Batch size for training" },
  { key: "train.use_8bit_adam", type: bool, def: true, doc: "Whether to use the 8bit Adam optimizer (accepted; a plain AdamW is used)" },
  { key: "train.learning_rate", type: num({ min: 0, minOpen: true }), def: 2e-4, doc: "Learning rate" },
  { key: "train.adam_beta1", type: num({ min: 0, max: 1, maxOpen: true }), def: 0.9, doc: "Adam beta1" },
  { key: "train.adam_beta2", type: num({ min: 0, max: 1, maxOpen: true }), def: 0.999, doc: "Adam beta2" },
  { key: "train.adam_weight_decay", type: num({ min: 0 }), def: 1e-4, doc: "Adam weight decay" },
  { key: "train.adam_epsilon", type: num({ min: 0, minOpen: true }), def: 1e-8, doc: "Adam epsilon" },
  { key: "train.gradient_accumulation_steps", type: int(1), def: 1, doc: "Number of gradient accumulation steps" },
  { key: "train.max_grad_norm", type: num({ min: 0, minOpen: true }), def: 1.0, doc: "Maximum gradient norm for gradient clipping" },
  { key: "train.num_inner_epochs", type: int(1), def: 1, doc: "Number of inner epochs per outer epoch" },
  { key: "train.cfg", type: bool, def: true, doc: "Whether or not to use classifier-free guidance during training" },
  { key: "train.adv_clip_max", type: num({ min: 0, minOpen: true }), def: 5, doc: "Clip advantages to the range [-adv_clip_max, adv_clip_max]" },
  { key: "train.clip_range", type: num({ min: 0, minOpen: true }), def: 1e-4, doc: "The PPO clip range" },
  { key: "train.timestep_fraction", type: num({ min: 0, minOpen: true, max: 1 }), def: 1.0, doc: "The fraction of timesteps to train on" },
  { key: "train.skip_final_steps", type: int(0), def: 0, doc: "The last N denoising steps are sampled but not trained on (their small sigma_t gives their log-prob gradients most of the scale while their noise hardly changes the result)", hashOmitDefault: true },
  // Table 4, per-prompt stat tracking
  { key: "per_prompt_stat_tracking.buffer_size", type: int(1), def: 16, doc: "Number of reward values to store in the buffer" },
  { key: "per_prompt_stat_tracking.min_count", type: int(1), def: 16, doc: "Minimum number of reward values" },
  // ours: reward, LoRA, report
  { key: "reward.alpha", type: num(), def: -1, doc: "Weight of the CLIP-loss term: r = cos + alpha * L_clip" },
  { key: "reward.tau", type: num({ min: 0 }), def: 0.05, doc: "L_clip counts only when MAE(edited, input) > tau" },
  { key: "reward.layers", type: { kind: "layers" }, def: "res:4", doc: "Cross-attention layers of the reward map (res:N, down, mid, up, module paths; comma list)" },
  { key: "lora.rank", type: int(1), def: 4, doc: "LoRA rank" },
  { key: "lora.alpha", type: { kind: "number?", min: 0, minOpen: true }, def: null, doc: "LoRA alpha (null = rank, i.e. scale 1)" },
  { key: "lora.target_modules", type: str, def: LORA_TARGET_NAMES.join(","), doc: "Modules that get LoRA adapters, as peft's target_modules: comma list of names or module-path suffixes of the UNet's linears and convolutions, e.g. to_q, attn2.to_k, up_blocks.0.attentions.1.transformer_blocks.0.attn2.to_v, ff.net.2, up_blocks.1.resnets.0.conv1 (default: every attention projection)", hashOmitDefault: true },
  { key: "lora.init_seed", type: { kind: "number?", min: 0, integer: true, max: Number.MAX_SAFE_INTEGER }, def: null, doc: "Seed of the adapters' initial weights (null = seed); sample order and noise still follow seed", hashOmitDefault: true },
  { key: "report.num_samples", type: int(0), def: 4, doc: "Fixed samples rendered at every save" },
];

const BY_KEY = new Map(FIELDS.map((f) => [f.key, f]));

/** Keys that do not change what a run computes, so a run may be resumed with other values. */
export const NON_RESUME_KEYS: readonly string[] = ["num_epochs", "save_freq", "num_checkpoint_limit", "logdir", "resume_from"];

/** Names people may try, and the key we use for it. */
const HINTS: Record<string, string> = {
  "sample.num_eval_samples": "report.num_samples",
  "num_eval_samples": "report.num_samples",
  "sample.image_guidance": "sample.image_guidance_scale",
  "sample.text_guidance_scale": "sample.guidance_scale",
  "train.lr": "train.learning_rate",
  "lr": "train.learning_rate",
  "lora_rank": "lora.rank",
  "train.lora_rank": "lora.rank",
  "pretrained.model": "model",
  "model_path": "model",
  "dataset": "data",
};

/** Every key with its default and description, in schema order (for help texts and docs). */
export function configKeys(): { key: string; default: Value; doc: string }[] {
  return FIELDS.map((f) => ({ key: f.key, default: f.def, doc: f.doc }));
}

// ---------------------------------------------------------------------------------------------------
// Dotted access

function getPath(cfg: Config, key: string): Value {
  let o: unknown = cfg;
  for (const part of key.split(".")) o = (o as Record<string, unknown>)[part];
  return o as Value;
}

function setPath(cfg: Config, key: string, value: Value): void {
  const parts = key.split(".");
  let o = cfg as unknown as Record<string, unknown>;
  for (const part of parts.slice(0, -1)) {
    o[part] ??= {};
    o = o[part] as Record<string, unknown>;
  }
  o[parts[parts.length - 1]] = value;
}

/** The value of a dotted key ("train.learning_rate"). */
export function configGet(cfg: Config, key: string): Value {
  if (!BY_KEY.has(key)) throw new Error(`configGet: unknown key ${key}`);
  return getPath(cfg, key);
}

/** The paper's configuration (Table 4) with our defaults for the keys we add. A fresh object. */
export function defaultConfig(): Config {
  const cfg = {} as Config;
  for (const f of FIELDS) setPath(cfg, f.key, f.def);
  return cfg;
}

// ---------------------------------------------------------------------------------------------------
// Errors and suggestions

function levenshtein(a: string, b: string): number {
  const prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let diag = prev[0];
    prev[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const tmp = prev[j];
      prev[j] = Math.min(prev[j] + 1, prev[j - 1] + 1, diag + (a[i - 1] === b[j - 1] ? 0 : 1));
      diag = tmp;
    }
  }
  return prev[b.length];
}

/** The known key closest to an unknown one, or null when nothing is close. */
export function suggestKey(unknown: string): string | null {
  const k = unknown.toLowerCase().replace(/-/g, "_");
  if (HINTS[k]) return HINTS[k];
  if (BY_KEY.has(k)) return k;
  const last = (s: string) => s.slice(s.lastIndexOf(".") + 1);
  let best: string | null = null;
  let bestD = Infinity;
  for (const f of FIELDS) {
    // the whole key, or just its last part ("learning_rate" for "train.learning_rate")
    const d = Math.min(levenshtein(k, f.key), last(k) === k ? levenshtein(k, last(f.key)) : Infinity);
    if (d < bestD) {
      bestD = d;
      best = f.key;
    }
  }
  return bestD <= Math.max(2, Math.floor(k.length / 4)) ? best : null;
}

function unknownKey(source: string, key: string): UserError {
  const s = suggestKey(key);
  return new UserError(`${source}: unknown config key "${key}"${s ? ` (did you mean "${s}"?)` : ""}`);
}

function describeType(f: Field): string {
  const t = f.type;
  switch (t.kind) {
    case "int":
      return t.max !== undefined && t.max < Number.MAX_SAFE_INTEGER ? `an integer from ${t.min} to ${t.max}` : `an integer >= ${t.min}`;
    case "number": {
      const lo = t.min === undefined ? "" : `${t.minOpen ? ">" : ">="} ${t.min}`;
      const hi = t.max === undefined ? "" : `${t.maxOpen ? "<" : "<="} ${t.max}`;
      return `a number${lo || hi ? " " : ""}${[lo, hi].filter(Boolean).join(" and ")}`;
    }
    case "number?":
      return `null or ${t.integer ? "an integer" : "a number"} ${t.minOpen ? ">" : ">="} ${t.min}${t.max !== undefined && t.max < Number.MAX_SAFE_INTEGER ? ` and <= ${t.max}` : ""}`;
    case "bool":
      return "true or false";
    case "string":
      return "a string";
    case "enum":
      return `one of ${t.values.map((v) => JSON.stringify(v)).join(", ")}`;
    case "layers":
      return "a layer spec";
  }
}

/** Check one value against its field; returns it (typed) or throws a UserError naming source and key. */
function checkValue(f: Field, v: unknown, source: string): Value {
  const bad = (extra = ""): never => {
    throw new UserError(`${source}: "${f.key}" must be ${describeType(f)}, got ${JSON.stringify(v) ?? String(v)}${extra}`);
  };
  const t = f.type;
  switch (t.kind) {
    case "int":
      if (typeof v !== "number" || !Number.isInteger(v) || v < t.min || (t.max !== undefined && v > t.max)) bad();
      return v as number;
    case "number": {
      if (typeof v !== "number" || !Number.isFinite(v)) bad();
      const x = v as number;
      if (t.min !== undefined && (t.minOpen ? x <= t.min : x < t.min)) bad();
      if (t.max !== undefined && (t.maxOpen ? x >= t.max : x > t.max)) bad();
      return x;
    }
    case "number?": {
      if (v === null) return null;
      if (typeof v !== "number" || !Number.isFinite(v)) bad();
      const x = v as number;
      if (t.min !== undefined && (t.minOpen ? x <= t.min : x < t.min)) bad();
      if (t.max !== undefined && x > t.max) bad();
      if (t.integer && !Number.isInteger(x)) bad();
      return x;
    }
    case "bool":
      if (typeof v !== "boolean") bad();
      return v as boolean;
    case "string":
      if (typeof v !== "string") bad();
      return v as string;
    case "enum":
      if (typeof v !== "string" || !t.values.includes(v)) bad();
      return v as string;
    case "layers":
      if (typeof v !== "string") bad();
      parseLayerSpec(v as string, `${source}: "${f.key}"`);
      return v as string;
  }
}

/** Checks that involve several keys (ddpo-pytorch's batch-size assertions, among others). */
function crossCheck(cfg: Config, source: string): void {
  const fail = (msg: string): never => {
    throw new UserError(`${source}: ${msg}`);
  };
  if (cfg.resolution % 8 !== 0) fail(`"resolution" must be a multiple of 8 (the VAE's factor), got ${cfg.resolution}`);
  const sb = cfg.sample.batch_size;
  const tb = cfg.train.batch_size;
  if (sb < tb || sb % tb !== 0) {
    fail(`"sample.batch_size" (${sb}) must be a multiple of "train.batch_size" (${tb})`);
  }
  const perEpoch = sb * cfg.sample.num_batches_per_epoch;
  const perStep = tb * cfg.train.gradient_accumulation_steps;
  if (perEpoch % perStep !== 0) {
    fail(
      `samples per epoch ("sample.batch_size" × "sample.num_batches_per_epoch" = ${perEpoch}) must be a multiple of ` +
        `"train.batch_size" × "train.gradient_accumulation_steps" (${perStep})`,
    );
  }
  if (cfg.train.skip_final_steps >= cfg.sample.num_steps) {
    fail(`"train.skip_final_steps" (${cfg.train.skip_final_steps}) must be below "sample.num_steps" (${cfg.sample.num_steps}): no step would be trained`);
  }
  const k = cfg.sample.num_image_per_prompt;
  if (sb % k !== 0) fail(`"sample.batch_size" (${sb}) must be a multiple of "sample.num_image_per_prompt" (${k})`);
  const badTarget = loraTargetModules(cfg).find((t) => !LORA_TARGET_PATTERN.test(t));
  if (badTarget !== undefined) {
    fail(`"lora.target_modules": '${badTarget}' is not a module name or dotted module path (e.g. ${LORA_TARGET_NAMES.join(", ")}, attn2.to_k, up_blocks.1.resnets.0.conv1)`);
  }
  const ps = cfg.per_prompt_stat_tracking;
  if (ps.min_count > ps.buffer_size) {
    fail(`"per_prompt_stat_tracking.min_count" (${ps.min_count}) exceeds "per_prompt_stat_tracking.buffer_size" (${ps.buffer_size}): a buffer could never reach it`);
  }
}

/** Check every key and the cross-key rules; throws a UserError naming `source`. */
export function validateConfig(cfg: Config, source = "config"): void {
  for (const f of FIELDS) checkValue(f, getPath(cfg, f.key), source);
  crossCheck(cfg, source);
}

// ---------------------------------------------------------------------------------------------------
// Loading JSON

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === "object" && !Array.isArray(v);
}

/**
 * Apply a parsed JSON object onto `cfg` (mutated): nested objects (`{"train": {"batch_size": 2}}`),
 * dotted keys (`{"train.batch_size": 2}`) or a mix; an optional leading "config." (as the paper
 * writes the names) is ignored; "_comment" keys are ignored at any level. Per-key checks only.
 */
function applyJson(cfg: Config, json: unknown, source: string): void {
  if (!isPlainObject(json)) throw new UserError(`${source}: expected a JSON object of config keys`);
  const seen = new Set<string>();
  const walk = (obj: Record<string, unknown>, prefix: string) => {
    for (const [k, v] of Object.entries(obj)) {
      if (k === "_comment") continue;
      let key = prefix ? `${prefix}.${k}` : k;
      if (!prefix && (key === "config" || key.startsWith("config."))) {
        if (key === "config") {
          if (!isPlainObject(v)) throw new UserError(`${source}: "config" must be an object of config keys`);
          walk(v, "");
          continue;
        }
        key = key.slice("config.".length);
      }
      const f = BY_KEY.get(key);
      if (f) {
        if (seen.has(key)) throw new UserError(`${source}: config key "${key}" is given twice`);
        seen.add(key);
        setPath(cfg, key, checkValue(f, v, source));
        continue;
      }
      const isGroup = FIELDS.some((x) => x.key.startsWith(`${key}.`));
      if (isGroup) {
        if (!isPlainObject(v)) throw new UserError(`${source}: "${key}" must be an object (a group of settings), got ${JSON.stringify(v)}`);
        walk(v, key);
        continue;
      }
      // an unknown group's first leaf gives the more useful suggestion
      if (isPlainObject(v)) {
        const first = Object.keys(v).find((x) => x !== "_comment");
        if (first !== undefined) throw unknownKey(source, `${key}.${first}`);
      }
      throw unknownKey(source, key);
    }
  };
  walk(json, "");
}

/** Build a config from an already parsed JSON object (e.g. a run folder's config.json). Validated. */
export function configFromJSON(json: unknown, source = "config"): Config {
  const cfg = defaultConfig();
  applyJson(cfg, json, source);
  validateConfig(cfg, source);
  return cfg;
}

/**
 * The configuration: defaults, overlaid with `modelDefaults` (`key=value` strings: the defaults that
 * depend on the model, rl/model_defaults.ts), then with `file` (JSON; keys it omits keep their
 * defaults), then with `overrides` (`key=value` strings from the command line). Validated once at the
 * end, so an override may repair a file's cross-key conflict. Problems are UserErrors naming the file
 * or flag.
 */
export function loadConfig(file?: string, overrides: readonly string[] = [], flag = "command line", modelDefaults: readonly string[] = []): Config {
  let cfg = applyOverridesUnchecked(defaultConfig(), modelDefaults, "the model's defaults");
  if (file) applyJson(cfg, readJsonFile(file), file);
  cfg = applyOverridesUnchecked(cfg, overrides, flag);
  const source = file ? (overrides.length ? `${file} with ${flag} overrides` : file) : flag;
  crossCheck(cfg, source);
  return cfg;
}

// ---------------------------------------------------------------------------------------------------
// key=value overrides

const NUMBER_RE = /^[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?$/i;

function parseOverrideValue(f: Field, raw: string, where: string): Value {
  const text = raw.trim();
  const bad = (): never => {
    throw new UserError(`${where}: "${f.key}" must be ${describeType(f)}, got ${JSON.stringify(raw)}`);
  };
  switch (f.type.kind) {
    case "int":
    case "number":
      if (!NUMBER_RE.test(text)) bad();
      return checkValue(f, Number(text), where);
    case "number?":
      if (text === "" || text.toLowerCase() === "null") return null;
      if (!NUMBER_RE.test(text)) bad();
      return checkValue(f, Number(text), where);
    case "bool": {
      const t = text.toLowerCase();
      if (["true", "1", "yes", "on"].includes(t)) return true;
      if (["false", "0", "no", "off"].includes(t)) return false;
      return bad();
    }
    case "string":
      return raw;
    case "enum":
    case "layers":
      return checkValue(f, text, where);
  }
}

function applyOverridesUnchecked(cfg: Config, overrides: readonly string[], flag: string): Config {
  const out = structuredClone(cfg);
  for (const item of overrides) {
    const eq = item.indexOf("=");
    if (eq <= 0) throw new UserError(`${flag}: override ${JSON.stringify(item)} is not of the form key=value`);
    let key = item.slice(0, eq).trim();
    if (key.startsWith("config.")) key = key.slice("config.".length);
    const where = `${flag} override ${JSON.stringify(item)}`;
    const f = BY_KEY.get(key);
    if (!f) throw unknownKey(where, key);
    setPath(out, key, parseOverrideValue(f, item.slice(eq + 1), where));
  }
  return out;
}

/**
 * A copy of `cfg` with `key=value` overrides applied, parsed by each key's type: numbers ("2e-4"),
 * booleans (true/false, 1/0, yes/no, on/off), strings as given (`resume_from=` sets ""), "null" for
 * `lora.alpha`. The result is validated; errors name the flag and the key.
 */
export function applyOverrides(cfg: Config, overrides: readonly string[], flag = "command line"): Config {
  const out = applyOverridesUnchecked(cfg, overrides, flag);
  validateConfig(out, flag);
  return out;
}

// ---------------------------------------------------------------------------------------------------
// Serialisation and the resume check

type Nested = { [k: string]: Value | Nested };

/** The config as nested JSON, keys in schema order (stable across runs and versions). */
export function configToJSON(cfg: Config): Nested {
  const out: Nested = {};
  for (const f of FIELDS) {
    const parts = f.key.split(".");
    let o = out;
    for (const p of parts.slice(0, -1)) {
      o[p] ??= {};
      o = o[p] as Nested;
    }
    o[parts[parts.length - 1]] = getPath(cfg, f.key);
  }
  return out;
}

/** `configToJSON` as indented text with a final newline. */
export function formatConfig(cfg: Config): string {
  return `${JSON.stringify(configToJSON(cfg), null, 2)}\n`;
}

/** Write the config (nested JSON) atomically, e.g. to a run folder's config.json. */
export function saveConfig(path: string, cfg: Config): void {
  writeFileAtomic(path, formatConfig(cfg));
}

/** The LoRA scale alpha / rank. */
export function loraScale(cfg: Config): number {
  return (cfg.lora.alpha ?? cfg.lora.rank) / cfg.lora.rank;
}

function resumeEntries(cfg: Config): [string, Value][] {
  return FIELDS.filter((f) => !NON_RESUME_KEYS.includes(f.key)).map((f) => [f.key, getPath(cfg, f.key)]);
}

/**
 * A hash of the keys that matter for resuming (all but num_epochs, save_freq, num_checkpoint_limit,
 * logdir, resume_from; a key added after checkpoints existed counts only when it differs from its
 * default): sha256 of their canonical JSON, hex.
 */
export function configHash(cfg: Config): string {
  // keys added later are left out while at their default, so that the hashes of older checkpoints hold
  const omitted = new Set(FIELDS.filter((f) => f.hashOmitDefault && Object.is(getPath(cfg, f.key), f.def)).map((f) => f.key));
  return createHash("sha256").update(JSON.stringify(resumeEntries(cfg).filter(([k]) => !omitted.has(k)))).digest("hex");
}

export interface ConfigDifference {
  key: string;
  saved: Value;
  current: Value;
}

/** The resume-relevant keys whose values differ between a run folder's config and the current one. */
export function resumeDifferences(saved: Config, current: Config): ConfigDifference[] {
  const out: ConfigDifference[] = [];
  for (const [key, v] of resumeEntries(saved)) {
    const w = getPath(current, key);
    if (!Object.is(v, w)) out.push({ key, saved: v, current: w });
  }
  return out;
}

/**
 * Throw a UserError when `runDir` was made with a configuration that differs from `current` in a key
 * that matters for resuming, listing the differences.
 */
export function checkResumable(saved: Config, current: Config, runDir: string): void {
  const diffs = resumeDifferences(saved, current);
  if (diffs.length === 0) return;
  const shown = diffs.slice(0, 3).map((d) => `${d.key} ${JSON.stringify(d.saved)} there, ${JSON.stringify(d.current)} now`);
  const more = diffs.length > 3 ? ` and ${diffs.length - 3} more` : "";
  throw new UserError(
    `${runDir}: this run was made with another configuration (${shown.join("; ")}${more}); ` +
      `use the same settings to resume it, or another logdir`,
  );
}

// ---------------------------------------------------------------------------------------------------
// reward.layers

export type LayerPlace = "down" | "mid" | "up";

/**
 * One item of a layer spec:
 * - `filter`: every cross-attention (attn2) of the UNet in `place` (null = anywhere) whose attention
 *   map is latent/`divisor` per side (null = any size);
 * - `module`: one attn2 by its diffusers module path.
 */
export type LayerSelector =
  | { kind: "filter"; place: LayerPlace | null; divisor: number | null }
  | { kind: "module"; path: string };

/** A parsed `reward.layers`: a layer is used when any selector matches it. */
export interface LayerSpec {
  text: string;
  selectors: LayerSelector[];
}

const MODULE_RE = /^(down_blocks\.\d+|mid_block|up_blocks\.\d+)\.attentions\.\d+\.transformer_blocks\.\d+\.attn2$/;

/**
 * Parse a layer spec: a comma-separated list whose items are
 *   `res:N`          every attn2 whose map is latent/N per side (N a power of two; "res:4" = 16x16 at 512 px),
 *   `down`|`mid`|`up` every attn2 in that part of the UNet,
 *   `down:res:N` …   both conditions,
 *   a module path    e.g. `up_blocks.1.attentions.2.transformer_blocks.0.attn2` (an optional `unet.` prefix is dropped).
 * `where` names the file and key in errors.
 */
export function parseLayerSpec(text: string, where = "reward.layers"): LayerSpec {
  const bad = (why: string): never => {
    throw new UserError(`${where}: bad layer spec ${JSON.stringify(text)}: ${why}`);
  };
  const items = text.split(",").map((s) => s.trim());
  if (items.length === 1 && items[0] === "") bad("it is empty");
  const selectors: LayerSelector[] = [];
  for (const item of items) {
    if (item === "") bad("empty item between commas");
    const m = /^(?:(down|mid|up)(?::|$))?(?:res:(\d+))?$/.exec(item);
    if (m && (m[1] || m[2])) {
      let divisor: number | null = null;
      if (m[2] !== undefined) {
        divisor = Number(m[2]);
        if (!(divisor >= 1 && (divisor & (divisor - 1)) === 0)) bad(`"${item}": N must be a power of two (1, 2, 4, 8, …)`);
      } else if (item.endsWith(":")) {
        bad(`"${item}" ends with ":"`);
      }
      selectors.push({ kind: "filter", place: (m[1] as LayerPlace | undefined) ?? null, divisor });
      continue;
    }
    const path = item.startsWith("unet.") ? item.slice(5) : item;
    if (MODULE_RE.test(path)) {
      selectors.push({ kind: "module", path });
      continue;
    }
    if (/^(down_blocks|mid_block|up_blocks)\b/.test(path)) {
      bad(`"${item}" is not a cross-attention module path (expected e.g. "down_blocks.2.attentions.0.transformer_blocks.0.attn2")`);
    }
    bad(`unknown item "${item}" (expected res:N, down, mid, up, down:res:N, or an attn2 module path)`);
  }
  return { text, selectors };
}

/** The UNet part ("down", "mid", "up") of an attention module path. */
export function layerPlace(path: string): LayerPlace | null {
  if (path.startsWith("down_blocks.")) return "down";
  if (path.startsWith("mid_block.")) return "mid";
  if (path.startsWith("up_blocks.")) return "up";
  return null;
}

/**
 * Does the spec select the attn2 at `path` whose attention map is latent/`divisor` per side?
 * (The caller knows the divisor from the block structure: 2^(number of downsamplings before it).)
 */
export function selectsLayer(spec: LayerSpec, path: string, divisor: number): boolean {
  return spec.selectors.some((s) =>
    s.kind === "module"
      ? s.path === path
      : (s.place === null || s.place === layerPlace(path)) && (s.divisor === null || s.divisor === divisor),
  );
}
