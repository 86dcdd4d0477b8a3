// A diffusers pipeline folder (what `save_pretrained` writes and the Hub serves):
//   model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/
// `loadPipelineConfig` reads and checks every component's config; `resolveWeightFiles` finds a
// component's safetensors weights (optionally the `--variant fp16` files). Pickle weights are refused.
import { existsSync, readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { UserError } from "../errors.ts";
import { ConfigReader, readJsonFile } from "./config_reader.ts";
import {
  parseSchedulerConfig, parseTextEncoderConfig, parseUNetConfig, parseVaeConfig,
  type SchedulerConfig, type TextEncoderConfig, type UNetConfig, type VaeConfig,
} from "./diffusers_config.ts";

export interface TokenizerFiles {
  dir: string;
  vocab: string;
  merges: string;
}

export interface PipelineConfig {
  dir: string;
  /** `_class_name` of model_index.json, e.g. "StableDiffusionInstructPix2PixPipeline". */
  className: string | null;
  unet: UNetConfig;
  vae: VaeConfig;
  textEncoder: TextEncoderConfig;
  tokenizer: TokenizerFiles;
  scheduler: SchedulerConfig;
}

/** The components we load, their folder (= model_index.json key) and the classes we accept there. */
const COMPONENTS = {
  unet: { library: "diffusers", classes: ["UNet2DConditionModel"] },
  vae: { library: "diffusers", classes: ["AutoencoderKL"] },
  text_encoder: { library: "transformers", classes: ["CLIPTextModel"] },
  tokenizer: { library: "transformers", classes: ["CLIPTokenizer", "CLIPTokenizerFast"] },
  scheduler: { library: "diffusers", classes: null }, // any scheduler: its noise schedule is read into DDIM
} as const;

type ComponentName = keyof typeof COMPONENTS;

function isDir(path: string): boolean {
  try {
    return statSync(path).isDirectory();
  } catch {
    return false;
  }
}

/** Check model_index.json's entry for one component and return the component's folder. */
function componentDir(dir: string, index: ConfigReader, name: ComponentName): string {
  if (!index.has(name)) index.fail(name, `is missing (a pipeline needs ${Object.keys(COMPONENTS).join(", ")})`);
  const entry = index.json[name];
  if (!Array.isArray(entry) || entry.length !== 2) index.fail(name, `must be a [library, class] pair, got ${JSON.stringify(entry)}`);
  const [, cls] = entry as [unknown, unknown];
  if (cls === null) index.fail(name, "is [null, null]: the pipeline has no such component");
  const allowed = COMPONENTS[name].classes;
  if (typeof cls !== "string" || (allowed !== null && !(allowed as readonly string[]).includes(cls))) {
    index.fail(name, `has class ${JSON.stringify(cls)}; supported: ${allowed ? allowed.join(", ") : "a scheduler class"}`);
  }
  if (name === "scheduler" && !(cls as string).endsWith("Scheduler")) {
    index.fail(name, `has class ${JSON.stringify(cls)}, which is not a scheduler`);
  }
  const sub = join(dir, name);
  if (!isDir(sub)) throw new UserError(`${sub}: component folder missing (model_index.json lists "${name}")`);
  return sub;
}

function tokenizerFiles(sub: string): TokenizerFiles {
  const vocab = join(sub, "vocab.json");
  const merges = join(sub, "merges.txt");
  for (const f of [vocab, merges]) {
    if (!existsSync(f)) throw new UserError(`${f}: file not found (a CLIP tokenizer needs vocab.json and merges.txt)`);
  }
  return { dir: sub, vocab, merges };
}

/** Read model_index.json and every component config of a diffusers pipeline folder. */
export function loadPipelineConfig(dir: string): PipelineConfig {
  if (!isDir(dir)) {
    throw new UserError(existsSync(dir) ? `${dir}: not a folder (expected a diffusers pipeline folder)` : `${dir}: folder not found`);
  }
  const indexPath = join(dir, "model_index.json");
  if (!existsSync(indexPath)) throw new UserError(`${dir}: not a diffusers pipeline folder (no model_index.json)`);
  const index = new ConfigReader(indexPath, readJsonFile(indexPath));
  const className = index.strOrNull("_class_name", null);

  const unetDir = componentDir(dir, index, "unet");
  const vaeDir = componentDir(dir, index, "vae");
  const textDir = componentDir(dir, index, "text_encoder");
  const tokDir = componentDir(dir, index, "tokenizer");
  const schedDir = componentDir(dir, index, "scheduler");

  return {
    dir,
    className,
    unet: parseUNetConfig(ConfigReader.fromFile(join(unetDir, "config.json"))),
    vae: parseVaeConfig(ConfigReader.fromFile(join(vaeDir, "config.json"))),
    textEncoder: parseTextEncoderConfig(ConfigReader.fromFile(join(textDir, "config.json"))),
    tokenizer: tokenizerFiles(tokDir),
    scheduler: parseSchedulerConfig(ConfigReader.fromFile(join(schedDir, "scheduler_config.json"))),
  };
}

// ---------------------------------------------------------------------------------------------------
// Weight files

/** Base names used by diffusers models and transformers models respectively. */
const WEIGHT_BASENAMES = ["diffusion_pytorch_model", "model"];
const PICKLE_SUFFIXES = [".bin", ".ckpt", ".pt", ".pth", ".pkl"];

export interface WeightOptions {
  /** e.g. "fp16": use `<base>.fp16.safetensors` (diffusers' `variant`). */
  variant?: string;
}

function shardsFromIndex(indexPath: string, sub: string): string[] {
  const r: ConfigReader = new ConfigReader(indexPath, readJsonFile(indexPath));
  const map = r.json.weight_map;
  if (map === null || typeof map !== "object" || Array.isArray(map)) r.fail("weight_map", "must be an object of tensor name -> file");
  const files = new Set<string>();
  for (const [tensor, file] of Object.entries(map as Record<string, unknown>)) {
    if (typeof file !== "string" || file.includes("/") || file.includes("\\")) {
      r.fail("weight_map", `entry '${tensor}' must name a file in the same folder, got ${JSON.stringify(file)}`);
    }
    files.add(file);
  }
  const out = [...files].sort().map((f) => join(sub, f));
  for (const f of out) {
    if (!existsSync(f)) throw new UserError(`${indexPath}: lists shard ${f}, which does not exist`);
    if (!f.endsWith(".safetensors")) throw new UserError(`${indexPath}: shard ${f} is not a safetensors file`);
  }
  return out;
}

/**
 * The safetensors file(s) holding a component's weights: `<base>[.<variant>].safetensors`, or the shards
 * listed by `<base>.safetensors.index[.<variant>].json`, for base `diffusion_pytorch_model` or `model`.
 */
export function resolveWeightFiles(componentDir: string, options: WeightOptions = {}): string[] {
  if (!isDir(componentDir)) throw new UserError(`${componentDir}: component folder missing`);
  const v = options.variant ? `.${options.variant}` : "";
  for (const base of WEIGHT_BASENAMES) {
    const single = join(componentDir, `${base}${v}.safetensors`);
    if (existsSync(single)) return [single];
    const index = join(componentDir, `${base}.safetensors.index${v}.json`);
    if (existsSync(index)) return shardsFromIndex(index, componentDir);
  }
  const present = readdirSync(componentDir).sort();
  const safetensors = present.filter((f) => f.endsWith(".safetensors"));
  if (options.variant && safetensors.length > 0) {
    throw new UserError(
      `${componentDir}: no weights for variant "${options.variant}" (expected ${WEIGHT_BASENAMES.map((b) => `${b}${v}.safetensors`).join(" or ")}; found ${safetensors.join(", ")})`,
    );
  }
  const pickles = present.filter((f) => PICKLE_SUFFIXES.some((s) => f.endsWith(s)));
  if (pickles.length > 0) {
    throw new UserError(
      `${join(componentDir, pickles[0])}: pickle weights are not supported; convert to safetensors (e.g. with diffusers' save_pretrained(safe_serialization=True))`,
    );
  }
  if (safetensors.length > 0) {
    throw new UserError(
      `${componentDir}: found ${safetensors.join(", ")} but expected ${WEIGHT_BASENAMES.map((b) => `${b}${v}.safetensors`).join(" or ")}`,
    );
  }
  throw new UserError(`${componentDir}: no weights found (expected ${WEIGHT_BASENAMES.map((b) => `${b}${v}.safetensors`).join(" or ")})`);
}

// State-dict key helpers used together with these folders.
export { compareStateDict, remapLegacyAttentionKey, remapLegacyAttentionKeys, strictMatch } from "./state_dict.ts";
