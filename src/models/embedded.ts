// The trained model the program carries, if one is shipped: scripts/ship_model.ts rewrites this file
// to import weights/<name>.bundle.json (a JSON import, so Bun, Deno and the single binary all carry
// it). null: no trained model is shipped yet, and the commands' default is the random tiny model.
import type { ModelBundle } from "./bundle.ts";

export const EMBEDDED_MODEL: { name: string; bundle: ModelBundle } | null = null;
