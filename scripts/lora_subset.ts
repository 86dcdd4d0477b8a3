// Which of a trained LoRA's adapters does what? Writes a copy of a checkpoint's LoRA file that keeps
// only some of its adapted modules (or all but some), so that `learning_evidence.ts --lora` can
// measure each part's share of a run's change (learning notes E35). A diagnosis of a trained run,
// not a way to make one: the parts were trained together.
// Usage:
//   bun scripts/lora_subset.ts --from CHECKPOINT_DIR --out DIR (--keep M1,M2 | --drop M1,M2)
// M are module names as in lora.target_modules (e.g. up_blocks.1.resnets.0.conv1); DIR gets the
// subset as pytorch_lora_weights.safetensors, a checkpoint folder that --lora accepts.
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { readLoraFile, writeLoraFile, type LoraLayer } from "../src/io/lora_format.ts";
import { LORA_FILE } from "../src/rl/checkpoint.ts";

const { values } = parseArgs({
  options: { from: { type: "string" }, out: { type: "string" }, keep: { type: "string" }, drop: { type: "string" } },
});
if (!values.from || !values.out || (values.keep === undefined) === (values.drop === undefined)) {
  throw new Error("usage: --from CHECKPOINT_DIR --out DIR and one of --keep M1,M2 or --drop M1,M2");
}
const listed = new Set((values.keep ?? values.drop)!.split(",").filter((m) => m !== ""));
const path = join(values.from, LORA_FILE);
const { layers } = readLoraFile(path);
for (const m of listed) if (!layers.has(m)) throw new Error(`${path}: has no adapter on '${m}' (it has ${[...layers.keys()].join(", ")})`);
const kept = new Map<string, LoraLayer>([...layers].filter(([m]) => listed.has(m) === (values.keep !== undefined)));
if (kept.size === 0) throw new Error("the subset is empty");
mkdirSync(values.out, { recursive: true });
writeLoraFile(join(values.out, LORA_FILE), kept);
console.log(`${values.out}: ${kept.size} of ${layers.size} adapters`);
