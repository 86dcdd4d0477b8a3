// Which checkpoint a resumed run starts from, and whether it is whole. The newest checkpoint is
// checked before anything else starts (state.json's fields, the safetensors headers and, for
// checkpoints that have one, every file against SHA256SUMS); a damaged one stops the run with the
// file and the problem named. An earlier checkpoint is used only when the user asks for it
// (`--resume-from EPOCH|DIR`); the newer ones are then moved aside, never deleted.
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync } from "node:fs";
import { basename, join, resolve } from "node:path";
import { UserError } from "../errors.ts";
import { openSafetensors } from "../io/safetensors.ts";
import type { TrainerState } from "./checkpoint.ts";
import { CHECKSUMS_FILE, checkpointsDir, listCheckpoints, LORA_FILE, STATE_FILE, TRAINER_FILE } from "./checkpoint_files.ts";

/** Hex SHA-256 of a file's bytes. */
export function sha256File(path: string): string {
  return createHash("sha256").update(readFileSync(path)).digest("hex");
}

/** SHA256SUMS text (the `sha256sum` format, so `sha256sum -c SHA256SUMS` works in the folder too). */
export function checksumsText(dir: string, files: readonly string[]): string {
  return files.map((f) => `${sha256File(join(dir, f))}  ${f}\n`).join("");
}

function isNat(x: unknown): x is number {
  return typeof x === "number" && Number.isSafeInteger(x) && x >= 0;
}

function isNumberArray(x: unknown): x is number[] {
  return Array.isArray(x) && x.every((v) => typeof v === "number" && Number.isFinite(v));
}

/** The first thing wrong with a parsed state.json, or null. */
function stateProblem(s: Record<string, unknown>, folderEpoch: number | null): string | null {
  if (!isNat(s.epoch)) return `"epoch" must be an integer >= 0, got ${JSON.stringify(s.epoch)}`;
  if (folderEpoch !== null && s.epoch !== folderEpoch) return `"epoch" is ${s.epoch} but the folder is checkpoint_${folderEpoch}`;
  if (typeof s.configHash !== "string" || !/^[0-9a-f]{64}$/.test(s.configHash)) return `"configHash" must be a hex SHA-256`;
  if (!isNat(s.adamStep)) return `"adamStep" must be an integer >= 0, got ${JSON.stringify(s.adamStep)}`;
  if (!isNumberArray(s.rng) || s.rng.length !== 4) return `"rng" must be 4 numbers`;
  const st = s.stream as Record<string, unknown> | null;
  if (typeof st !== "object" || st === null || !isNat(st.consumed) || !isNumberArray(st.buffer) || !isNumberArray(st.rng)) {
    return `"stream" must be {consumed, buffer, rng}`;
  }
  const tr = s.tracker as Record<string, unknown> | null;
  if (typeof tr !== "object" || tr === null || !isNat(tr.buffer_size) || !isNat(tr.min_count) || typeof tr.buffers !== "object" || tr.buffers === null) {
    return `"tracker" must be {buffer_size, min_count, buffers}`;
  }
  for (const [k, v] of Object.entries(tr.buffers as Record<string, unknown>)) {
    if (!isNumberArray(v)) return `"tracker.buffers" entry ${JSON.stringify(k)} must be a list of numbers`;
  }
  if (s.gradScaler !== undefined) {
    const gs = s.gradScaler as Record<string, unknown> | null;
    if (typeof gs !== "object" || gs === null || typeof gs.scale !== "number" || !(gs.scale > 0) || !Number.isFinite(gs.scale) || !isNat(gs.growthTracker)) {
      return `"gradScaler" must be {scale > 0, growthTracker >= 0}`;
    }
  }
  return null;
}

function epochOfFolder(dir: string): number | null {
  const m = /^checkpoint_(\d+)$/.exec(basename(dir));
  return m ? Number(m[1]) : null;
}

/**
 * Check a checkpoint folder and return its state; a UserError names the damaged file and the
 * problem. Checkpoints written before SHA256SUMS existed get the structural checks only.
 */
export function verifyCheckpoint(dir: string): TrainerState {
  if (!existsSync(dir) || !statSync(dir).isDirectory()) throw new UserError(`${dir}: no such checkpoint folder`);
  const sums = join(dir, CHECKSUMS_FILE);
  if (existsSync(sums)) {
    const listed = new Map<string, string>();
    for (const line of readFileSync(sums, "utf8").split("\n")) {
      if (!line.trim()) continue;
      const m = /^([0-9a-f]{64}) [ *](.+)$/.exec(line);
      if (!m) throw new UserError(`${sums}: damaged (a line is not '<sha256>  <file>')`);
      listed.set(m[2], m[1]);
    }
    for (const f of [STATE_FILE, TRAINER_FILE, LORA_FILE]) {
      if (!listed.has(f)) throw new UserError(`${sums}: damaged (it does not list ${f})`);
    }
    for (const [f, want] of listed) {
      const p = join(dir, f);
      if (!existsSync(p)) throw new UserError(`${p}: missing from the checkpoint`);
      if (sha256File(p) !== want) throw new UserError(`${p}: damaged or edited (its SHA-256 differs from the one recorded in ${CHECKSUMS_FILE})`);
    }
  }
  const statePath = join(dir, STATE_FILE);
  if (!existsSync(statePath)) throw new UserError(`${statePath}: missing from the checkpoint`);
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(statePath, "utf8"));
  } catch (e) {
    throw new UserError(`${statePath}: not valid JSON (${(e as Error).message})`);
  }
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) throw new UserError(`${statePath}: not a JSON object`);
  const problem = stateProblem(raw as Record<string, unknown>, epochOfFolder(dir));
  if (problem) throw new UserError(`${statePath}: ${problem}`);
  const state = raw as TrainerState;
  for (const f of [TRAINER_FILE, LORA_FILE]) {
    if (!existsSync(join(dir, f))) throw new UserError(`${join(dir, f)}: missing from the checkpoint`);
  }
  const trainer = openSafetensors(join(dir, TRAINER_FILE)); // header and sizes checked here
  openSafetensors(join(dir, LORA_FILE));
  const step = trainer.metadata?.step;
  if (step !== undefined && Number(step) !== state.adamStep) {
    throw new UserError(`${statePath}: "adamStep" is ${state.adamStep} but ${TRAINER_FILE} holds the optimizer state of step ${step}`);
  }
  if (![...trainer.names()].some((n) => n.startsWith("lora."))) throw new UserError(`${join(dir, TRAINER_FILE)}: holds no LoRA adapters`);
  return state;
}

export interface ResumePoint {
  path: string;
  state: TrainerState;
  /** Checkpoints newer than `path` in the run folder (moved aside before training goes on). */
  newer: string[];
}

/**
 * The checkpoint to resume from: the newest one, or the one `resumeFrom` names (an epoch number or
 * a checkpoint folder). Null when the run folder has none and nothing was asked for.
 */
export function chooseCheckpoint(runDir: string, resumeFrom?: string): ResumePoint | null {
  const all = listCheckpoints(runDir);
  if (resumeFrom !== undefined && resumeFrom !== "") {
    let path: string;
    if (/^\d+$/.test(resumeFrom)) {
      path = join(checkpointsDir(runDir), `checkpoint_${Number(resumeFrom)}`);
      if (!existsSync(path)) {
        const have = all.map(([e]) => e).join(", ") || "none";
        throw new UserError(`--resume-from: ${runDir} has no checkpoint of epoch ${resumeFrom} (it has: ${have})`);
      }
    } else {
      path = resolve(resumeFrom);
      if (epochOfFolder(path) === null) throw new UserError(`--resume-from: ${resumeFrom} is neither an epoch number nor a checkpoint_<epoch> folder`);
    }
    const state = verifyCheckpoint(path);
    const newer = all.filter(([e, p]) => e > state.epoch && resolve(p) !== path).map(([, p]) => p);
    return { path, state, newer };
  }
  if (all.length === 0) return null;
  const [epoch, path] = all[all.length - 1];
  try {
    return { path, state: verifyCheckpoint(path), newer: [] };
  } catch (e) {
    if (!(e instanceof UserError)) throw e;
    const earlier = all.slice(0, -1).map(([x]) => x);
    const how = earlier.length > 0
      ? `rerun with --resume-from ${earlier[earlier.length - 1]} to resume from an earlier one (earlier checkpoints: ${earlier.join(", ")})`
      : `there is no earlier one: delete ${path} to start this run over`;
    throw new UserError(`${e.message}; the newest checkpoint (epoch ${epoch}) is damaged: ${how}`);
  }
}

/** Move checkpoints aside into checkpoints/abandoned/ (a resume from an earlier one). Returns the new paths. */
export function setAside(runDir: string, paths: readonly string[]): string[] {
  if (paths.length === 0) return [];
  const dir = join(checkpointsDir(runDir), "abandoned");
  mkdirSync(dir, { recursive: true });
  return paths.map((p) => {
    let to = join(dir, basename(p));
    for (let k = 1; existsSync(to); k++) to = join(dir, `${basename(p)}.${k}`);
    renameSync(p, to);
    return to;
  });
}

/**
 * Tidy up after a process that died while writing a checkpoint (call with the run lock held): a
 * half-written `.tmp-checkpoint_*` folder is removed; a checkpoint that was being replaced
 * (`.old-checkpoint_<E>-*`) is put back when its replacement never arrived, else removed.
 */
export function recoverInterruptedWrites(runDir: string): void {
  const dir = checkpointsDir(runDir);
  if (!existsSync(dir)) return;
  for (const n of readdirSync(dir)) {
    const old = /^\.old-(checkpoint_\d+)-/.exec(n);
    if (old && !existsSync(join(dir, old[1]))) renameSync(join(dir, n), join(dir, old[1]));
    else if (old || n.startsWith(".tmp-checkpoint_")) rmSync(join(dir, n), { recursive: true, force: true });
  }
}
