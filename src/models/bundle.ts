// A model folder as one JSON document, so the program (and the single binary, through a JSON import)
// carries a trained model with no file-embedding feature Bun and Deno disagree on:
//   { "format": "rl4pix-bundle/1", "files": { "<relative path>": { "text": "…" } | { "base64": "…" } } }
// `bundleFolder` reads a folder into one; `writeBundle` writes it back byte for byte; `bundleHash`
// names its cache folder (src/models/tiny.ts `defaultModelDir`).
import { createHash } from "node:crypto";
import { mkdirSync, readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join, relative, sep } from "node:path";
import { UserError } from "../errors.ts";
import { writeFileAtomic } from "../io/atomic.ts";

export interface ModelBundle {
  format: "rl4pix-bundle/1";
  files: Record<string, { text: string } | { base64: string }>;
}

const TEXT = /\.(json|txt|md)$/;

function listFiles(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const name of readdirSync(d).sort()) {
      const p = join(d, name);
      if (statSync(p).isDirectory()) walk(p);
      else out.push(relative(dir, p).split(sep).join("/"));
    }
  };
  walk(dir);
  return out;
}

/** Every file under `dir` except `skip` (relative paths, forward slashes). */
export function bundleFolder(dir: string, skip: readonly string[] = []): ModelBundle {
  const files: ModelBundle["files"] = {};
  for (const rel of listFiles(dir)) {
    if (skip.includes(rel)) continue;
    const bytes = readFileSync(join(dir, rel));
    files[rel] = TEXT.test(rel) ? { text: bytes.toString("utf8") } : { base64: bytes.toString("base64") };
  }
  return { format: "rl4pix-bundle/1", files };
}

export function bundleBytes(entry: { text: string } | { base64: string }): Uint8Array {
  return "text" in entry ? new TextEncoder().encode(entry.text) : new Uint8Array(Buffer.from(entry.base64, "base64"));
}

/** Write every file of `bundle` under `dir` (each atomically). */
export function writeBundle(bundle: ModelBundle, dir: string): void {
  if (bundle.format !== "rl4pix-bundle/1") throw new UserError(`model bundle: unknown format ${JSON.stringify(bundle.format)}`);
  for (const [rel, entry] of Object.entries(bundle.files)) {
    if (rel.startsWith("/") || rel.split("/").includes("..")) throw new UserError(`model bundle: bad path ${rel}`);
    const path = join(dir, ...rel.split("/"));
    mkdirSync(dirname(path), { recursive: true });
    writeFileAtomic(path, bundleBytes(entry));
  }
}

/** A short content hash (file names and bytes). */
export function bundleHash(bundle: ModelBundle): string {
  const h = createHash("sha256");
  for (const rel of Object.keys(bundle.files).sort()) {
    h.update(rel);
    h.update("\0");
    h.update(bundleBytes(bundle.files[rel]));
    h.update("\0");
  }
  return h.digest("hex").slice(0, 16);
}
