// Ship a trained model as the embedded default: copy a diffusers folder (e.g. RUN_DIR/model from
// `rl4pix pretrain`) to weights/<name>/ with every weight tensor stored as F16 (the loader computes
// in f32), write weights/<name>.bundle.json, the same files as one JSON document, and point
// src/models/embedded.ts at it (the program's default model from then on). The model card
// (weights/<name>/README.md) is written by hand and is not part of the bundle; add a test of the
// shipped model's edits with it.
// Usage: bun scripts/ship_model.ts SRC_DIR NAME
import { cpSync, existsSync, mkdirSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { openSafetensors, writeSafetensors, type TensorToWrite } from "../src/io/safetensors.ts";
import { f32ArrayToF16 } from "../src/tensor/f16.ts";
import { bundleFolder } from "../src/models/bundle.ts";

const [src, name] = process.argv.slice(2);
if (!src || !name) throw new Error("usage: bun scripts/ship_model.ts SRC_DIR NAME");
const dest = join(import.meta.dir, "..", "weights", name);
const card = join(dest, "README.md");
const keepCard = existsSync(card) ? Bun.file(card) : null;
const cardText = keepCard ? await keepCard.text() : null;
rmSync(dest, { recursive: true, force: true });
mkdirSync(dest, { recursive: true });
for (const part of ["model_index.json", "scheduler", "tokenizer"]) cpSync(join(src, part), join(dest, part), { recursive: true });
for (const part of ["unet", "vae", "text_encoder"]) {
  mkdirSync(join(dest, part), { recursive: true });
  for (const f of readdirSync(join(src, part))) {
    if (!f.endsWith(".safetensors")) {
      cpSync(join(src, part, f), join(dest, part, f));
      continue;
    }
    const file = openSafetensors(join(src, part, f));
    const tensors = new Map<string, TensorToWrite>();
    for (const n of file.names()) tensors.set(n, { dtype: "F16", shape: file.info(n).shape, data: f32ArrayToF16(file.toF32(n)) });
    writeSafetensors(join(dest, part, f), tensors, file.metadata ?? undefined);
  }
}
if (cardText !== null) writeFileSync(card, cardText);
writeFileSync(join(dest, "..", `${name}.bundle.json`), JSON.stringify(bundleFolder(dest, ["README.md"])) + "\n");
writeFileSync(join(import.meta.dir, "..", "src", "models", "embedded.ts"), `// The trained model the program carries (written by scripts/ship_model.ts): weights/${name}/, as
// weights/${name}.bundle.json (a JSON import, so Bun, Deno and the single binary all carry it).
import type { ModelBundle } from "./bundle.ts";
import bundle from "../../weights/${name}.bundle.json" with { type: "json" };

export const EMBEDDED_MODEL: { name: string; bundle: ModelBundle } | null = { name: ${JSON.stringify(name)}, bundle: bundle as ModelBundle };
`);
console.log(dest);
