// How distinct the text encoder keeps the instruction's words (docs/learning-notes.md E11): pairwise cosines
// of the final hidden states of the real tokens, against padding, and of different words at one place.
// Usage: bun scripts/text_probe.ts [MODEL_DIR]
import { initGpu } from "../src/gpu/device.ts";
import { defaultModelDir } from "../src/models/default_model.ts";
import { loadIP2P, encodePrompts } from "../src/diffusion/pipeline.ts";
await initGpu();
const m = loadIP2P(process.argv[2] ?? (await defaultModelDir()));
const prompts = ["make the red circle blue", "erase the yellow square", "draw a green star"];
const enc = encodePrompts(m, prompts);
const h = await enc.embeds.readF32(); // [3, 77, D]
const D = enc.embeds.shape[2];
const vec = (p: number, t: number) => h.subarray((p * 77 + t) * D, (p * 77 + t + 1) * D);
const cos = (a: Float32Array, b: Float32Array) => { let ab = 0, aa = 0, bb = 0; for (let i = 0; i < a.length; i++) { ab += a[i] * b[i]; aa += a[i] * a[i]; bb += b[i] * b[i]; } return ab / Math.sqrt(aa * bb); };
for (let p = 0; p < 3; p++) {
  const n = enc.tokenCounts[p];
  const rows: string[] = [];
  for (let t = 1; t <= n; t++) rows.push(Array.from({ length: n }, (_, u) => cos(vec(p, t), vec(p, u + 1)).toFixed(2)).join(" "));
  console.log(prompts[p], "tokens", n, "\n " + rows.join("\n "));
  console.log("  token1 vs padding(40):", cos(vec(p, 1), vec(p, 40)).toFixed(3), " padding 40 vs 60:", cos(vec(p, 40), vec(p, 60)).toFixed(3));
}
console.log("'red' (p0 t3) vs 'yellow' (p1 t3):", cos(vec(0, 3), vec(1, 3)).toFixed(3), " 'circle' p0t4 vs 'square' p1t4:", cos(vec(0, 4), vec(1, 4)).toFixed(3));
