// The MagicBrush test/dev folder layout (SPEC §7):
//   edit_sessions.json   {"<img_id>": [{"input": "<id>-input.png", "output": "<id>-output1.png",
//                          "mask": "<id>-mask1.png", "instruction": "..."}, …turns in order], …}
//   images/<img_id>/<img_id>-input.png, <img_id>-output<k>.png, <img_id>-mask<k>.png
//   local_captions.json  optional: {"<img_id>": {"<img_id>-output<k>.png": "caption"}} (the form
//                        MagicBrush's evaluation script reads) or flat {"<file name>": "caption"};
//                        local_descriptions.json is read when local_captions.json is absent.
// A turn's "input" is the session's input image for turn 1 and the previous turn's ground truth
// afterwards (the single-turn setting); `sessionSource` is turn 1's input (the multi-turn setting).
// Sessions come in the order of edit_sessions.json's keys as JavaScript orders them (numeric ids
// ascending), turns in list order. Everything is checked when the folder is opened.
import { existsSync, statSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { UserError } from "../../errors.ts";
import { fileRef } from "./manifest.ts";
import type { EditDataset, EditSample } from "./types.ts";

interface Turn {
  imgId: string;
  turn: number;
  turns: number;
  input: string;
  output: string;
  mask: string;
  instruction: string;
  caption?: string;
}

async function readJson(path: string): Promise<unknown> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (e) {
    throw new UserError(`${path}: cannot read: ${(e as Error).message}`);
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new UserError(`${path}: not valid JSON (${(e as Error).message})`);
  }
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** Resolve a file of session `imgId`: images/<imgId>/<name>, else images/<name's prefix>/<name>. */
function imagePath(root: string, imgId: string, name: string, where: string): string {
  const direct = join(root, "images", imgId, name);
  if (existsSync(direct)) return direct;
  const prefix = name.split("-")[0]!;
  const byPrefix = join(root, "images", prefix, name);
  if (prefix !== imgId && existsSync(byPrefix)) return byPrefix;
  throw new UserError(`${where}: image not found: ${direct}`);
}

/** True when `dir` looks like a MagicBrush folder (has edit_sessions.json). */
export function isMagicBrushFolder(dir: string): boolean {
  try {
    return statSync(join(dir, "edit_sessions.json")).isFile();
  } catch {
    return false;
  }
}

export async function openMagicBrushFolder(root: string): Promise<EditDataset> {
  const sessionsPath = join(root, "edit_sessions.json");
  const sessions = await readJson(sessionsPath);
  if (!isObject(sessions)) {
    throw new UserError(`${sessionsPath}: expected an object mapping image ids to lists of turns`);
  }
  let captions: Record<string, unknown> = {};
  let captionsPath: string | undefined;
  for (const name of ["local_captions.json", "local_descriptions.json"]) {
    if (existsSync(join(root, name))) {
      captionsPath = join(root, name);
      const c = await readJson(captionsPath);
      if (!isObject(c)) throw new UserError(`${captionsPath}: expected a JSON object`);
      captions = c;
      break;
    }
  }
  const captionFor = (imgId: string, output: string): string | undefined => {
    const nested = captions[imgId];
    const v = isObject(nested) ? nested[output] : captions[output];
    if (v === undefined || v === null) return undefined;
    if (typeof v !== "string") throw new UserError(`${captionsPath}: caption of ${output} is not a string`);
    return v;
  };

  const turns: Turn[] = [];
  for (const [imgId, list] of Object.entries(sessions)) {
    if (!Array.isArray(list) || list.length === 0) {
      throw new UserError(`${sessionsPath}: session "${imgId}" must be a non-empty list of turns`);
    }
    list.forEach((t: unknown, k: number) => {
      const where = `${sessionsPath}: session "${imgId}" turn ${k + 1}`;
      if (!isObject(t)) throw new UserError(`${where}: expected an object`);
      const field = (key: string): string => {
        const v = t[key];
        if (typeof v !== "string" || v.trim() === "") throw new UserError(`${where}: missing or empty "${key}"`);
        return v;
      };
      const [input, output, mask, instruction] = ["input", "output", "mask", "instruction"].map(field) as [
        string,
        string,
        string,
        string,
      ];
      turns.push({
        imgId,
        turn: k + 1,
        turns: list.length,
        input: imagePath(root, imgId, input, where),
        output: imagePath(root, imgId, output, where),
        mask: imagePath(root, imgId, mask, where),
        instruction: instruction.trim(),
        caption: captionFor(imgId, output),
      });
    });
  }
  if (turns.length === 0) throw new UserError(`${sessionsPath}: no sessions`);
  const first = new Map<string, string>();
  for (const t of turns) if (t.turn === 1) first.set(t.imgId, t.input);

  async function* samples(): AsyncGenerator<EditSample> {
    let index = 0;
    for (const t of turns) {
      yield {
        id: `${t.imgId}_${t.turn}`,
        imgId: t.imgId,
        turn: t.turn,
        turns: t.turns,
        index: index++,
        instruction: t.instruction,
        caption: t.caption,
        source: fileRef(t.input),
        sessionSource: fileRef(first.get(t.imgId)!),
        mask: fileRef(t.mask),
        target: fileRef(t.output),
      };
    }
  }
  return { kind: "magicbrush-folder", path: root, size: turns.length, samples, [Symbol.asyncIterator]: samples };
}
