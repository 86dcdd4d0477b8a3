// Where a run's checkpoints live and what each holds (see checkpoint.ts for the contents).
import { existsSync, readdirSync } from "node:fs";
import { join } from "node:path";

export const LORA_FILE = "pytorch_lora_weights.safetensors";
export const TRAINER_FILE = "trainer.safetensors";
export const STATE_FILE = "state.json";
export const CHECKSUMS_FILE = "SHA256SUMS";

export function checkpointsDir(runDir: string): string {
  return join(runDir, "checkpoints");
}

/**
 * Existing checkpoints, oldest first: [epoch, folder]. A checkpoint_<E> folder only ever appears
 * complete (it is renamed into place), so every one is listed, damaged or not: a damaged newest one
 * must stop a resume, not be skipped silently.
 */
export function listCheckpoints(runDir: string): [number, string][] {
  const dir = checkpointsDir(runDir);
  if (!existsSync(dir)) return [];
  return readdirSync(dir)
    .map((n) => /^checkpoint_(\d+)$/.exec(n))
    .filter((m): m is RegExpExecArray => m !== null)
    .map((m) => [Number(m[1]), join(dir, m[0])] as [number, string])
    .sort((a, b) => a[0] - b[0]);
}
