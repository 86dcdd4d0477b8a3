// Writes the synthetic dataset to a folder: images/<id>-{source,target,mask}.png and a JSONL
// manifest (manifest.jsonl, paths relative to it) that `openDataset` reads. Every file is written
// atomically and the manifest last, so an interrupted run never leaves a manifest that points at
// missing images. Masks are greyscale PNGs, white = edit region.
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { UserError } from "../errors.ts";
import { writeFileAtomic } from "../io/atomic.ts";
import { writePng } from "../io/image.ts";
import { rgbToPlanar, synthSample, type EditKind } from "./synth.ts";

export interface SynthDatasetOptions {
  /** Number of samples. */
  n: number;
  seed: number;
  /** Image side in pixels (default 64). */
  size?: number;
  /** Grounded scenes (synthSample's `grounded`: 2–3 shapes of distinct colours). */
  grounded?: boolean;
  /** Called after each sample is written. */
  onProgress?: (done: number, total: number) => void;
}

export interface SynthManifestLine {
  id: string;
  source: string;
  target: string;
  mask: string;
  instruction: string;
  caption: string;
  kind: EditKind;
}

/** Generate `n` samples into `dir`; returns the manifest's path. */
export async function synthDataset(dir: string, opts: SynthDatasetOptions): Promise<string> {
  const { n, seed } = opts;
  const size = opts.size ?? 64;
  if (!Number.isInteger(n) || n < 1) throw new UserError(`synth: the number of samples must be a positive integer, got ${n}`);
  if (!Number.isInteger(seed)) throw new UserError(`synth: the seed must be an integer, got ${seed}`);
  if (!Number.isInteger(size) || size < 16) throw new UserError(`synth: the image size must be an integer >= 16, got ${size}`);
  try {
    mkdirSync(join(dir, "images"), { recursive: true });
  } catch (e) {
    throw new UserError(`${dir}: cannot create the folder: ${(e as Error).message}`);
  }
  const lines: string[] = [];
  for (let i = 0; i < n; i++) {
    const s = synthSample(seed, i, { size, grounded: opts.grounded });
    const rel = (what: string) => `images/${s.id}-${what}.png`;
    const rgb = (pixels: Uint8Array) => ({ width: s.width, height: s.height, channels: 3, data: rgbToPlanar(pixels, s.width, s.height) });
    await writePng(join(dir, rel("source")), rgb(s.source));
    await writePng(join(dir, rel("target")), rgb(s.target));
    await writePng(join(dir, rel("mask")), { width: s.width, height: s.height, channels: 1, data: Float32Array.from(s.mask) });
    const line: SynthManifestLine = {
      id: s.id,
      source: rel("source"),
      target: rel("target"),
      mask: rel("mask"),
      instruction: s.instruction,
      caption: s.caption,
      kind: s.kind,
    };
    lines.push(JSON.stringify(line));
    opts.onProgress?.(i + 1, n);
  }
  const manifest = join(dir, "manifest.jsonl");
  writeFileAtomic(manifest, lines.join("\n") + "\n");
  return manifest;
}
