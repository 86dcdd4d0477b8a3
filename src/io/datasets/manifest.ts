// A plain JSONL manifest (SPEC §7): one JSON object per line,
//   {"source": "...", "mask": "...", "instruction": "...", "target"?: "...", "caption"?: "...", "id"?: "..."}
// with paths relative to the manifest's folder (absolute paths are kept). Also accepted:
// "img_id" (session id, default the sample id) and "turn" (1-based, default 1); other fields are
// ignored. Blank lines are skipped. The whole manifest is checked when it is opened, so a bad line
// fails before any work starts: every file must exist and be a PNG or JPEG (its header is read, not
// its pixels), every mask must have its source's aspect ratio. Every error names the manifest and the line.
import { statSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { dirname, isAbsolute, resolve } from "node:path";
import { UserError } from "../../errors.ts";
import { maskShapeProblem, readImageHeader } from "../image_header.ts";
import type { EditDataset, EditSample, ImageRef } from "./types.ts";

/** One validated manifest line. */
export interface ManifestEntry {
  line: number;
  id: string;
  imgId: string;
  turn: number;
  source: string;
  mask: string;
  target?: string;
  instruction: string;
  caption?: string;
}

/** A file on disk as an ImageRef. */
export function fileRef(path: string): ImageRef {
  return {
    name: path,
    async bytes() {
      try {
        return new Uint8Array(await readFile(path));
      } catch (e) {
        throw new UserError(`${path}: cannot read: ${(e as Error).message}`);
      }
    },
  };
}

function isFile(path: string): boolean {
  try {
    return statSync(path).isFile();
  } catch {
    return false;
  }
}

/** Parse and check manifest text. `checkFiles` verifies that every referenced file exists. */
export function parseManifest(text: string, manifestPath: string, checkFiles = true): ManifestEntry[] {
  const base = dirname(resolve(manifestPath));
  const entries: ManifestEntry[] = [];
  const ids = new Map<string, number>();
  const lines = text.split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    const raw = lines[i]!.trim();
    if (raw === "") continue;
    const line = i + 1;
    const where = `${manifestPath}:${line}`;
    let obj: unknown;
    try {
      obj = JSON.parse(raw);
    } catch (e) {
      throw new UserError(`${where}: not valid JSON (${(e as Error).message})`);
    }
    if (typeof obj !== "object" || obj === null || Array.isArray(obj)) {
      throw new UserError(`${where}: expected a JSON object like {"source": …, "mask": …, "instruction": …}`);
    }
    const o = obj as Record<string, unknown>;
    const str = (key: string, required: boolean): string | undefined => {
      const v = o[key];
      if (v === undefined || v === null) {
        if (required) throw new UserError(`${where}: missing field "${key}"`);
        return undefined;
      }
      if (typeof v !== "string") throw new UserError(`${where}: field "${key}" must be a string, got ${JSON.stringify(v)}`);
      return v;
    };
    const path = (key: string, required: boolean): string | undefined => {
      const p = str(key, required);
      if (p === undefined) return undefined;
      if (p.trim() === "") throw new UserError(`${where}: field "${key}" is empty`);
      const full = isAbsolute(p) ? p : resolve(base, p);
      if (checkFiles && !isFile(full)) throw new UserError(`${where}: ${key} file not found: ${full}`);
      return full;
    };
    const source = path("source", true)!;
    const mask = path("mask", true)!;
    const target = path("target", false);
    const instruction = str("instruction", true)!.trim();
    if (instruction === "") throw new UserError(`${where}: empty instruction`);
    const caption = str("caption", false);
    let id: string;
    if (o.id === undefined || o.id === null) id = `line${line}`;
    else if (typeof o.id === "string" || typeof o.id === "number") id = String(o.id);
    else throw new UserError(`${where}: field "id" must be a string or a number`);
    if (id === "") throw new UserError(`${where}: field "id" is empty`);
    const prev = ids.get(id);
    if (prev !== undefined) throw new UserError(`${where}: duplicate id "${id}" (first on line ${prev})`);
    ids.set(id, line);
    let imgId = id;
    if (o.img_id !== undefined && o.img_id !== null) {
      if (typeof o.img_id !== "string" && typeof o.img_id !== "number") {
        throw new UserError(`${where}: field "img_id" must be a string or a number`);
      }
      imgId = String(o.img_id);
    }
    let turn = 1;
    if (o.turn !== undefined && o.turn !== null) {
      if (typeof o.turn !== "number" || !Number.isInteger(o.turn) || o.turn < 1) {
        throw new UserError(`${where}: field "turn" must be an integer >= 1`);
      }
      turn = o.turn;
    }
    if (checkFiles) {
      const src = readImageHeader(source, `${where}: source ${source}`);
      const m = readImageHeader(mask, `${where}: mask ${mask}`);
      if (target !== undefined) readImageHeader(target, `${where}: target ${target}`);
      const problem = maskShapeProblem(m, src);
      if (problem) throw new UserError(`${where}: mask ${mask}: ${problem}`);
    }
    entries.push({ line, id, imgId, turn, source, mask, target, instruction, caption });
  }
  if (entries.length === 0) throw new UserError(`${manifestPath}: the manifest has no samples`);
  return entries;
}

/** Open a JSONL manifest (checked as a whole) as a dataset. */
export async function openManifest(manifestPath: string): Promise<EditDataset> {
  let text: string;
  try {
    text = await readFile(manifestPath, "utf8");
  } catch (e) {
    throw new UserError(`${manifestPath}: cannot read the manifest: ${(e as Error).message}`);
  }
  const entries = parseManifest(text, manifestPath);
  // Sessions: turns per img_id, and each session's first-turn source.
  const turns = new Map<string, number>();
  const firstSource = new Map<string, { turn: number; source: string }>();
  for (const e of entries) {
    turns.set(e.imgId, Math.max(turns.get(e.imgId) ?? 0, e.turn));
    const f = firstSource.get(e.imgId);
    if (!f || e.turn < f.turn) firstSource.set(e.imgId, { turn: e.turn, source: e.source });
  }
  async function* samples(): AsyncGenerator<EditSample> {
    let index = 0;
    for (const e of entries) {
      yield {
        id: e.id,
        imgId: e.imgId,
        turn: e.turn,
        turns: turns.get(e.imgId)!,
        index: index++,
        instruction: e.instruction,
        caption: e.caption,
        source: fileRef(e.source),
        sessionSource: fileRef(firstSource.get(e.imgId)!.source),
        mask: fileRef(e.mask),
        target: e.target === undefined ? undefined : fileRef(e.target),
      };
    }
  }
  return {
    kind: "manifest",
    path: manifestPath,
    size: entries.length,
    samples,
    [Symbol.asyncIterator]: samples,
  };
}
