// What the sampling probes (antithetic_probe, attention_paths_probe) share: the model, the
// experiment configuration with their --set overrides (8 DDIM steps, the model's reward layers),
// and a synthetic grounded set of 32 px edits prepared in memory (its files are removed at once).
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadIP2P, type IP2PModels } from "../src/diffusion/pipeline.ts";
import { synthDataset } from "../src/data/synth_dataset.ts";
import { openDataset } from "../src/io/datasets/index.ts";
import { type Config, loadConfig } from "../src/rl/config.ts";
import { rewardLayers } from "../src/rl/trainer.ts";
import type { CrossAttentionLayer } from "../src/diffusion/attention_store.ts";
import { prepareSample, type PreparedSample } from "../src/rl/prepare.ts";
import { defaultRewardLayers } from "../src/rl/model_defaults.ts";
import { EXPERIMENT_SETTINGS } from "./experiment_settings.ts";

export const PROBE_SIZE = 32;

export interface ProbeSetup {
  models: IP2PModels;
  cfg: Config;
  layers: CrossAttentionLayer[];
  latentSide: number;
  mapSide: number;
  edits: PreparedSample[];
}

/** Call after initGpu(); `data` chooses the synthetic split (n edits from `seed`). */
export async function probeSetup(modelDir: string, overrides: readonly string[], data: { n: number; seed: number }): Promise<ProbeSetup> {
  const dir = mkdtempSync(join(tmpdir(), "rl4pix-probe-"));
  try {
    await synthDataset(dir, { n: data.n, seed: data.seed, size: PROBE_SIZE, grounded: true });
    const models = loadIP2P(modelDir);
    const cfg = loadConfig(undefined, [...EXPERIMENT_SETTINGS, "sample.num_steps=8", `reward.layers=${defaultRewardLayers(models.unet)}`, ...overrides]);
    const layers = rewardLayers(models, cfg);
    const latentSide = PROBE_SIZE / models.vae.scaleFactor;
    const mapSide = Math.ceil(latentSide / layers[0].factor);
    const edits: PreparedSample[] = [];
    for await (const s of (await openDataset(join(dir, "manifest.jsonl"))).samples()) edits.push(await prepareSample(s, PROBE_SIZE, mapSide));
    return { models, cfg, layers, latentSide, mapSide, edits };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
