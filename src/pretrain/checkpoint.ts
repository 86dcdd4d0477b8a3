// Resumable checkpoints of one pretraining stage: STAGE_DIR/ckpt-<step>/ with
//   weights.safetensors   every trained parameter by its state-dict key ("<component>.<key>") and the
//                         AdamW moments ("adam_m.<component>.<key>", "adam_v.…"), all f32
//   state.json            the step reached, the AdamW step, the stage's settings hash
// Each folder is built under a temporary name and renamed into place; the two newest are kept, so a
// crash during a write leaves the previous one whole. The data stream, noise and dropout of step s
// are pure functions of (seed, s), so parameters + moments + step are the whole state: a resumed
// run computes bit for bit what an uninterrupted run would.
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { UserError } from "../errors.ts";
import { publishFolder, tempSibling, writeFileAtomic } from "../io/atomic.ts";
import { openSafetensors, writeSafetensors, type TensorToWrite } from "../io/safetensors.ts";
import { Tensor } from "../tensor/tensor.ts";
import { gpu } from "../gpu/device.ts";
import { keep } from "../tensor/scope.ts";
import type { AdamWState } from "../tensor/ops/optim.ts";

/** A trained parameter with its checkpoint name. */
export interface NamedParam {
  name: string;
  t: Tensor;
}

export interface StageState {
  /** Optimizer steps completed. */
  step: number;
  adamStep: number;
  settingsHash: string;
  /**
   * The step at which the optimizer was restarted (a stage continued from a weights-only checkpoint
   * with fresh AdamW moments); the warm-up counts from it. Absent: never restarted.
   */
  optimizerRestartedAt?: number;
}

const PREFIX = "ckpt-";

/** Checkpoint folders of a stage, oldest first: [step, path]. */
export function listStageCheckpoints(stageDir: string): [number, string][] {
  if (!existsSync(stageDir)) return [];
  return readdirSync(stageDir)
    .filter((n) => n.startsWith(PREFIX) && /^\d+$/.test(n.slice(PREFIX.length)))
    .map((n) => [Number(n.slice(PREFIX.length)), join(stageDir, n)] as [number, string])
    .sort((a, b) => a[0] - b[0]);
}

/** Write a checkpoint of `params` and the optimizer at `state.step`; keeps the two newest. */
export async function saveStageCheckpoint(stageDir: string, params: readonly NamedParam[], adam: AdamWState, state: StageState): Promise<string> {
  mkdirSync(stageDir, { recursive: true });
  const tensors = new Map<string, TensorToWrite>();
  for (let i = 0; i < params.length; i++) {
    const p = params[i];
    tensors.set(p.name, { dtype: "F32", shape: p.t.shape, data: await p.t.readF32() });
    const m = adam.m[i];
    const v = adam.v[i];
    if (m && v) {
      tensors.set(`adam_m.${p.name}`, { dtype: "F32", shape: p.t.shape, data: await m.readF32() });
      tensors.set(`adam_v.${p.name}`, { dtype: "F32", shape: p.t.shape, data: await v.readF32() });
    }
  }
  const final = join(stageDir, `${PREFIX}${String(state.step).padStart(7, "0")}`);
  const tmp = tempSibling(final);
  mkdirSync(tmp);
  try {
    writeSafetensors(join(tmp, "weights.safetensors"), tensors, { format: "rl4pix-pretrain/1" });
    writeFileAtomic(join(tmp, "state.json"), JSON.stringify(state, null, 2) + "\n");
  } catch (e) {
    rmSync(tmp, { recursive: true, force: true });
    throw new UserError(`${final}: cannot write the checkpoint: ${(e as Error).message}`);
  }
  publishFolder(tmp, final, final);
  const all = listStageCheckpoints(stageDir);
  for (const [, path] of all.slice(0, Math.max(0, all.length - 2))) rmSync(path, { recursive: true, force: true });
  return final;
}

/**
 * Load the newest checkpoint into `params` (in place) and rebuild the optimizer moments. Returns
 * null when the stage has none. A damaged newest checkpoint is an error naming its file: resuming
 * from an older one silently would change the result.
 */
export function loadStageCheckpoint(
  stageDir: string,
  params: readonly NamedParam[],
  settingsHash: string,
): { state: StageState; adam: AdamWState; weightsFile: string; weightsOnly: boolean } | null {
  const all = listStageCheckpoints(stageDir);
  if (all.length === 0) return null;
  const [, dir] = all[all.length - 1];
  const statePath = join(dir, "state.json");
  let state: StageState;
  try {
    state = JSON.parse(readFileSync(statePath, "utf8")) as StageState;
  } catch (e) {
    throw new UserError(`${statePath}: unreadable (${(e as Error).message}); delete ${dir} to resume from the previous checkpoint`);
  }
  if (!Number.isInteger(state.step) || !Number.isInteger(state.adamStep) || typeof state.settingsHash !== "string") {
    throw new UserError(`${statePath}: not a pretraining state (step, adamStep, settingsHash)`);
  }
  if (state.settingsHash !== settingsHash) {
    throw new UserError(`${statePath}: written with other pretraining settings; use a new --out folder (or the same flags as before)`);
  }
  const file = openSafetensors(join(dir, "weights.safetensors"));
  const names = new Set(file.names());
  const adam: AdamWState = { step: state.adamStep, m: [], v: [] };
  params.forEach((p, i) => {
    if (!names.has(p.name)) throw new UserError(`${file.path}: tensor '${p.name}' is missing`);
    const shape = file.info(p.name).shape;
    if (shape.join(",") !== p.t.shape.join(",")) throw new UserError(`${file.path}: tensor '${p.name}' has shape [${shape}], the model needs [${p.t.shape}]`);
    if (p.t.dtype !== "f32") throw new Error(`pretrain checkpoint: ${p.name} is ${p.t.dtype}, training needs f32`);
    gpu().write(p.t.buffer, 0, file.toF32(p.name));
    p.t.storage.invalidate();
    const mName = `adam_m.${p.name}`;
    const vName = `adam_v.${p.name}`;
    adam.m[i] = names.has(mName) ? keep(Tensor.from(file.toF32(mName), p.t.shape, "f32", "adamw_m")) : null;
    adam.v[i] = names.has(vName) ? keep(Tensor.from(file.toF32(vName), p.t.shape, "f32", "adamw_v")) : null;
  });
  // A snapshot of a finished stage keeps the weights only (scripts/snapshot_pretrain.ts): no moments
  // at all although the optimizer had stepped. (A parameter without a gradient yet has none either.)
  const weightsOnly = state.adamStep > 0 && !file.names().some((n) => n.startsWith("adam_"));
  return { state, adam, weightsFile: file.path, weightsOnly };
}
