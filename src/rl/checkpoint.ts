// Training checkpoints: RUN_DIR/checkpoints/checkpoint_<epoch>/ with
//   pytorch_lora_weights.safetensors  the LoRA in the peft/diffusers format (what `edit --lora` reads)
//   trainer.safetensors               AdamW moments (m.<i>, v.<i>, LoRA parameter order) and the raw
//                                     adapters (lora.<module>.down/up, unscaled) for an exact resume
//   state.json                        epoch, AdamW step, stat-tracker buffers, sample stream, RNG, config hash
// written into a temporary folder and renamed, so a crash or a full disk never leaves a half checkpoint.
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync } from "node:fs";
import { join } from "node:path";
import { UserError } from "../errors.ts";
import { writeFileAtomic } from "../io/atomic.ts";
import { openSafetensors, type TensorToWrite, writeSafetensors } from "../io/safetensors.ts";
import { type LoraLayer, writeLoraFile } from "../io/lora_format.ts";
import { type AdamWState, type AdamWStateData, exportAdamWState, importAdamWState } from "../tensor/ops/optim.ts";
import type { Tensor } from "../tensor/tensor.ts";
import type { UNet2DConditionModel } from "../nn/unet.ts";
import { attachLoraLayers, exportLora } from "../nn/lora.ts";
import type { StatTrackerState } from "./stat_tracker.ts";
import type { StreamState } from "./data_stream.ts";

export const LORA_FILE = "pytorch_lora_weights.safetensors";

export interface TrainerState {
  /** The last completed epoch (0-based). */
  epoch: number;
  configHash: string;
  tracker: StatTrackerState;
  stream: StreamState;
  /** Host RNG for shuffles. */
  rng: number[];
  /** Optimizer steps taken. */
  adamStep: number;
}

export function checkpointsDir(runDir: string): string {
  return join(runDir, "checkpoints");
}

/** Existing checkpoints, oldest first: [epoch, folder]. */
export function listCheckpoints(runDir: string): [number, string][] {
  const dir = checkpointsDir(runDir);
  if (!existsSync(dir)) return [];
  return readdirSync(dir)
    .map((n) => /^checkpoint_(\d+)$/.exec(n))
    .filter((m): m is RegExpExecArray => m !== null)
    .map((m) => [Number(m[1]), join(dir, m[0])] as [number, string])
    .filter(([, p]) => existsSync(join(p, "state.json")))
    .sort((a, b) => a[0] - b[0]);
}

export async function saveCheckpoint(runDir: string, unet: UNet2DConditionModel, opt: AdamWState, state: TrainerState, keep: number): Promise<string> {
  const dir = checkpointsDir(runDir);
  mkdirSync(dir, { recursive: true });
  const final = join(dir, `checkpoint_${state.epoch}`);
  const tmp = join(dir, `.tmp-checkpoint_${state.epoch}-${process.pid}`);
  rmSync(tmp, { recursive: true, force: true });
  try {
    mkdirSync(tmp);
    const layers = await exportLora(unet);
    writeLoraFile(join(tmp, LORA_FILE), layers, { epoch: String(state.epoch) });
    const data: AdamWStateData = await exportAdamWState(opt);
    const tensors = new Map<string, TensorToWrite>();
    for (const [path, l] of layers) {
      tensors.set(`lora.${path}.down`, { dtype: "F32", shape: [l.rank, l.inFeatures], data: l.down });
      tensors.set(`lora.${path}.up`, { dtype: "F32", shape: [l.outFeatures, l.rank], data: l.up });
      tensors.set(`lora.${path}.alpha`, { dtype: "F32", shape: [1], data: Float32Array.of(l.alpha ?? l.rank) });
    }
    data.m.forEach((m, i) => m && tensors.set(`m.${i}`, { dtype: "F32", shape: [m.length], data: m }));
    data.v.forEach((v, i) => v && tensors.set(`v.${i}`, { dtype: "F32", shape: [v.length], data: v }));
    writeSafetensors(join(tmp, "trainer.safetensors"), tensors, { format: "pt", step: String(data.step) });
    writeFileAtomic(join(tmp, "state.json"), JSON.stringify({ ...state, adamStep: data.step }));
    rmSync(final, { recursive: true, force: true });
    renameSync(tmp, final);
  } catch (e) {
    rmSync(tmp, { recursive: true, force: true });
    const msg = e instanceof Error ? e.message : String(e);
    throw new UserError(`${final}: could not write the checkpoint (${msg}); the previous checkpoint is intact`);
  }
  // keep only the newest `keep`
  const all = listCheckpoints(runDir);
  for (const [, p] of all.slice(0, Math.max(0, all.length - keep))) rmSync(p, { recursive: true, force: true });
  return final;
}

export interface LoadedCheckpoint {
  state: TrainerState;
  optimizer: AdamWState;
  path: string;
}

/** Load the LoRA (trainable) into `unet` and the optimizer state for `params` (LoRA order). */
export function loadCheckpoint(path: string, unet: UNet2DConditionModel, params: () => Tensor[]): LoadedCheckpoint {
  let state: TrainerState;
  try {
    state = JSON.parse(readFileSync(join(path, "state.json"), "utf8")) as TrainerState;
  } catch (e) {
    throw new UserError(`${join(path, "state.json")}: unreadable checkpoint state (${(e as Error).message})`);
  }
  const f = openSafetensors(join(path, "trainer.safetensors"));
  const layers = new Map<string, LoraLayer>();
  for (const name of f.names()) {
    const m = /^lora\.(.+)\.down$/.exec(name);
    if (!m) continue;
    const [rank, inFeatures] = f.info(name).shape;
    const up = `lora.${m[1]}.up`;
    const outFeatures = f.info(up).shape[0];
    layers.set(m[1], { down: f.toF32(name), up: f.toF32(up), rank, inFeatures, outFeatures, alpha: f.toF32(`lora.${m[1]}.alpha`)[0] });
  }
  attachLoraLayers(unet, layers, join(path, "trainer.safetensors"), true);
  const ps = params();
  const m: (Float32Array | null)[] = ps.map((_, i) => (f.has(`m.${i}`) ? f.toF32(`m.${i}`) : null));
  const v: (Float32Array | null)[] = ps.map((_, i) => (f.has(`v.${i}`) ? f.toF32(`v.${i}`) : null));
  const optimizer = importAdamWState({ step: state.adamStep, m, v }, ps);
  return { state, optimizer, path };
}
