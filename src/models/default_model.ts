// The commands' default model: the trained model shipped in weights/<name>/ when there is one
// (src/models/embedded.ts; its model card says how it was made), written once into the cache folder
// as <name>-<content hash>/ (built in a temporary sibling and renamed into place, so racing
// processes are safe) and reused afterwards; otherwise the random tiny model (src/models/tiny.ts),
// which also stays for tests and `rl4pix tiny`.
import { existsSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { discardFolder, publishCacheFolder, tempSibling } from "../io/atomic.ts";
import { bundleHash, type ModelBundle, writeBundle } from "./bundle.ts";
import { EMBEDDED_MODEL } from "./embedded.ts";
import { inCacheRoot, tinyModelDir } from "./tiny.ts";

function isComplete(dir: string, bundle: ModelBundle): boolean {
  return Object.keys(bundle.files).every((rel) => existsSync(join(dir, ...rel.split("/"))));
}

/** `bundle` written into `root/<name>-<hash>` unless it is there already. */
export function cachedBundle(root: string, name: string, bundle: ModelBundle): string {
  const final = join(root, `${name}-${bundleHash(bundle)}`);
  if (isComplete(final, bundle)) return final;
  mkdirSync(root, { recursive: true });
  discardFolder(final); // published folders appear whole, so an incomplete one was damaged later
  const tmp = tempSibling(final);
  writeBundle(bundle, tmp);
  publishCacheFolder(tmp, final, () => isComplete(final, bundle), "the default model");
  return final;
}

/** The default model's folder: the shipped trained model, else the random tiny one. */
export async function defaultModelDir(opts: { cacheDir?: string } = {}): Promise<string> {
  const shipped = EMBEDDED_MODEL;
  if (!shipped) return await tinyModelDir(opts);
  return inCacheRoot(opts.cacheDir, (root) => cachedBundle(root, shipped.name, shipped.bundle));
}
