// Editing datasets: one entry point that recognises what a path holds.
//
//   a .jsonl file                      → JSONL manifest (manifest.ts)
//   a .parquet file                    → MagicBrush parquet (magicbrush_parquet.ts)
//   a folder with edit_sessions.json   → MagicBrush test/dev folder (magicbrush_folder.ts)
//   a folder with manifest.jsonl       → that manifest (what `rl4pix synth` writes)
//   a folder with *.parquet files      → MagicBrush parquet, every file (or `split`'s files),
//                                        also looked for under data/ (the Hub's layout)
// Anything else is a UserError that says what was expected.
import { readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { UserError } from "../../errors.ts";
import { isMagicBrushFolder, openMagicBrushFolder } from "./magicbrush_folder.ts";
import { openMagicBrushParquet } from "./magicbrush_parquet.ts";
import { openManifest } from "./manifest.ts";
import type { EditDataset, ImageRef } from "./types.ts";
import { decodeImage, type RgbImage } from "../image.ts";
import { decodeMask, type Mask } from "../mask.ts";

export type { DatasetKind, EditDataset, EditSample, ImageRef } from "./types.ts";
export { fileRef, openManifest, parseManifest, type ManifestEntry } from "./manifest.ts";
export { isMagicBrushFolder, openMagicBrushFolder } from "./magicbrush_folder.ts";
export { openMagicBrushParquet, parquetFiles } from "./magicbrush_parquet.ts";

export interface OpenDatasetOptions {
  /** For parquet folders: only files named "<split>-…" (e.g. "train", "dev"). */
  split?: string;
}

function hasParquet(dir: string, split?: string): boolean {
  try {
    return readdirSync(dir).some(
      (n) => n.endsWith(".parquet") && (split === undefined || n.startsWith(`${split}-`) || n.startsWith(`${split}_`)),
    );
  } catch {
    return false;
  }
}

function isFile(p: string): boolean {
  try {
    return statSync(p).isFile();
  } catch {
    return false;
  }
}

/** Open a dataset, recognising its kind from the path (see the file header). */
export async function openDataset(path: string, opts: OpenDatasetOptions = {}): Promise<EditDataset> {
  let st;
  try {
    st = statSync(path);
  } catch {
    throw new UserError(`${path}: no such file or folder`);
  }
  if (st.isFile()) {
    const lower = path.toLowerCase();
    if (lower.endsWith(".jsonl")) return openManifest(path);
    if (lower.endsWith(".parquet")) return openMagicBrushParquet(path);
    throw new UserError(
      `${path}: unknown dataset file (expected a .jsonl manifest, a .parquet file, or a MagicBrush folder)`,
    );
  }
  if (!st.isDirectory()) throw new UserError(`${path}: not a file or folder`);
  if (isMagicBrushFolder(path)) return openMagicBrushFolder(path);
  const manifest = join(path, "manifest.jsonl");
  if (isFile(manifest)) return openManifest(manifest);
  if (hasParquet(path, opts.split)) return openMagicBrushParquet(path, { split: opts.split });
  const data = join(path, "data");
  if (hasParquet(data, opts.split)) return openMagicBrushParquet(data, { split: opts.split });
  throw new UserError(
    `${path}: not a dataset folder: expected edit_sessions.json (MagicBrush test/dev), manifest.jsonl, or ${
      opts.split === undefined ? "" : `"${opts.split}-…" `
    }.parquet files`,
  );
}

/** Decode a sample's image (source, target) to RGB planes in [0, 1]. */
export async function loadImage(ref: ImageRef): Promise<RgbImage> {
  return decodeImage(await ref.bytes(), ref.name);
}

/** Decode and binarise a sample's mask (1 = edit region), at the mask file's own size. */
export async function loadMask(ref: ImageRef): Promise<Mask> {
  return decodeMask(await ref.bytes(), ref.name);
}
