// The trained model the program carries (written by scripts/ship_model.ts): weights/editor-tiny/, as
// weights/editor-tiny.bundle.json (a JSON import, so Bun, Deno and the single binary all carry it).
import type { ModelBundle } from "./bundle.ts";
import bundle from "../../weights/editor-tiny.bundle.json" with { type: "json" };

export const EMBEDDED_MODEL: { name: string; bundle: ModelBundle } | null = { name: "editor-tiny", bundle: bundle as ModelBundle };
