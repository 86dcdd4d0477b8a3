// Training checkpoints: RUN_DIR/checkpoints/checkpoint_<epoch>/ with
//   pytorch_lora_weights.safetensors  the LoRA in the peft/diffusers format (what `edit --lora` reads)
//   trainer.safetensors               AdamW moments (m.<i>, v.<i>, LoRA parameter order) and the raw
//                                     adapters (lora.<module>.down/up, unscaled) for an exact resume
//   state.json                        epoch, AdamW step, stat-tracker buffers, sample stream, RNG, config hash
//   SHA256SUMS                        the three files' SHA-256 (checked on resume: checkpoint_check.ts)
// written into a temporary folder and renamed, so a crash, a kill -9 or a full disk never leaves a half
// checkpoint under a real name; the previous checkpoints stay untouched until the new one is in place.
import { existsSync, mkdirSync, renameSync, rmSync } from "node:fs";
import { join } from "node:path";
import { UserError } from "../errors.ts";
import { writeFileAtomic } from "../io/atomic.ts";
import { openSafetensors, type TensorToWrite, writeSafetensors } from "../io/safetensors.ts";
import { type LoraLayer, loraDims, loraShapes, writeLoraFile } from "../io/lora_format.ts";
import { type AdamWState, type AdamWStateData, exportAdamWState, importAdamWState } from "../tensor/ops/optim.ts";
import type { Tensor } from "../tensor/tensor.ts";
import type { UNet2DConditionModel } from "../nn/unet.ts";
import { attachLoraLayers, exportLora } from "../nn/lora.ts";
import { checksumsText, verifyCheckpoint } from "./checkpoint_check.ts";
import { CHECKSUMS_FILE, checkpointsDir, listCheckpoints, LORA_FILE, STATE_FILE, TRAINER_FILE } from "./checkpoint_files.ts";
import { faultPoint } from "./test_faults.ts";
import type { StatTrackerState } from "./stat_tracker.ts";
import type { StreamState } from "./data_stream.ts";
import type { GradScalerState } from "./grad_scaler.ts";

export { CHECKSUMS_FILE, checkpointsDir, listCheckpoints, LORA_FILE, STATE_FILE, TRAINER_FILE } from "./checkpoint_files.ts";

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
  /** fp16 loss scaling's state (mixed_precision "fp16" with f16 activations only). */
  gradScaler?: GradScalerState;
}

/** "no space left on the device" for ENOSPC, etc.: the reason a write failed, in words. */
function writeFailure(e: unknown): string {
  const code = (e as { code?: string }).code;
  if (code === "ENOSPC" || code === "EDQUOT") return "no space left on the device";
  if (code === "EACCES" || code === "EPERM") return "permission denied (the run folder is not writable)";
  if (code === "EROFS") return "read-only file system";
  const msg = e instanceof Error ? e.message : String(e);
  const at = msg.lastIndexOf(": cannot write: "); // atomic.ts's "<file>: cannot write: <why>"
  return at >= 0 ? msg.slice(at + ": cannot write: ".length) : msg;
}

export async function saveCheckpoint(runDir: string, unet: UNet2DConditionModel, opt: AdamWState, state: TrainerState, keep: number): Promise<string> {
  const dir = checkpointsDir(runDir);
  const final = join(dir, `checkpoint_${state.epoch}`);
  const tmp = join(dir, `.tmp-checkpoint_${state.epoch}-${process.pid}`);
  const previous = listCheckpoints(runDir).filter(([e]) => e !== state.epoch).pop();
  try {
    mkdirSync(dir, { recursive: true });
    rmSync(tmp, { recursive: true, force: true });
    mkdirSync(tmp);
    const layers = await exportLora(unet);
    writeLoraFile(join(tmp, LORA_FILE), layers, { epoch: String(state.epoch) });
    faultPoint("checkpoint", state.epoch);
    const data: AdamWStateData = await exportAdamWState(opt);
    const tensors = new Map<string, TensorToWrite>();
    for (const [path, l] of layers) {
      const shapes = loraShapes(l);
      tensors.set(`lora.${path}.down`, { dtype: "F32", shape: shapes.down, data: l.down });
      tensors.set(`lora.${path}.up`, { dtype: "F32", shape: shapes.up, data: l.up });
      tensors.set(`lora.${path}.alpha`, { dtype: "F32", shape: [1], data: Float32Array.of(l.alpha ?? l.rank) });
    }
    data.m.forEach((m, i) => m && tensors.set(`m.${i}`, { dtype: "F32", shape: [m.length], data: m }));
    data.v.forEach((v, i) => v && tensors.set(`v.${i}`, { dtype: "F32", shape: [v.length], data: v }));
    writeSafetensors(join(tmp, TRAINER_FILE), tensors, { format: "pt", step: String(data.step) });
    writeFileAtomic(join(tmp, STATE_FILE), JSON.stringify({ ...state, adamStep: data.step }));
    writeFileAtomic(join(tmp, CHECKSUMS_FILE), checksumsText(tmp, [LORA_FILE, TRAINER_FILE, STATE_FILE]));
    if (existsSync(final)) {
      // replace it only once the new one is whole: a crash in between leaves the old one under
      // .old-checkpoint_<E>-<pid>, which the next run puts back (recoverInterruptedWrites)
      const old = join(dir, `.old-checkpoint_${state.epoch}-${process.pid}`);
      renameSync(final, old);
      renameSync(tmp, final);
      rmSync(old, { recursive: true, force: true });
    } else {
      renameSync(tmp, final);
    }
  } catch (e) {
    rmSync(tmp, { recursive: true, force: true });
    const kept = previous ? `the previous checkpoint (${previous[1]}) is intact` : "no earlier checkpoint exists";
    throw new UserError(`${final}: could not write the checkpoint: ${writeFailure(e)}; ${kept}`);
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

/**
 * Load the LoRA (trainable) into `unet` and the optimizer state for `params` (LoRA order). The
 * folder is checked first (verifyCheckpoint): a damaged file is a UserError naming it.
 */
export function loadCheckpoint(path: string, unet: UNet2DConditionModel, params: () => Tensor[]): LoadedCheckpoint {
  const state = verifyCheckpoint(path);
  const file = join(path, TRAINER_FILE);
  const f = openSafetensors(file);
  const layers = new Map<string, LoraLayer>();
  for (const name of f.names()) {
    const m = /^lora\.(.+)\.down$/.exec(name);
    if (!m) continue;
    const up = `lora.${m[1]}.up`;
    const alpha = `lora.${m[1]}.alpha`;
    if (!f.has(up) || !f.has(alpha)) throw new UserError(`${file}: '${name}' has no '${f.has(up) ? alpha : up}'`);
    const dims = loraDims(f.info(name).shape, f.info(up).shape);
    if (typeof dims === "string") throw new UserError(`${file}: '${m[1]}': ${dims}`);
    layers.set(m[1], { down: f.toF32(name), up: f.toF32(up), ...dims, alpha: f.toF32(alpha)[0] });
  }
  attachLoraLayers(unet, layers, file, true);
  const ps = params();
  const m: (Float32Array | null)[] = ps.map((_, i) => (f.has(`m.${i}`) ? f.toF32(`m.${i}`) : null));
  const v: (Float32Array | null)[] = ps.map((_, i) => (f.has(`v.${i}`) ? f.toF32(`v.${i}`) : null));
  let optimizer: AdamWState;
  try {
    optimizer = importAdamWState({ step: state.adamStep, m, v }, ps);
  } catch (e) {
    throw new UserError(`${file}: the optimizer state does not fit the LoRA (${(e as Error).message})`);
  }
  return { state, optimizer, path };
}
