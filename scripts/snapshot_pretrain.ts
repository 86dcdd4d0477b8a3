// Copy what a `rl4pix pretrain` run needs to resume into DEST (to commit it between sessions):
// settings.json, and per stage its metrics.jsonl, done.json and newest checkpoint. A finished stage
// that a later stage has started from can no longer be lengthened (pretrain refuses), so its
// checkpoint keeps the weights only (its AdamW moments are dropped); the stage in progress keeps
// everything. base/ is left out: pretrain writes it again from settings.json's spec, byte for byte.
// Resume: copy DEST to a run folder and run the same `rl4pix pretrain --out <folder> …` command.
// Usage: bun scripts/snapshot_pretrain.ts RUN_DIR DEST
import { copyFileSync, existsSync, mkdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import { listStageCheckpoints } from "../src/pretrain/checkpoint.ts";
import { openSafetensors, writeSafetensors, type TensorToWrite } from "../src/io/safetensors.ts";

const [run, dest] = process.argv.slice(2);
if (!run || !dest) throw new Error("usage: bun scripts/snapshot_pretrain.ts RUN_DIR DEST");
rmSync(dest, { recursive: true, force: true });
mkdirSync(dest, { recursive: true });
copyFileSync(join(run, "settings.json"), join(dest, "settings.json"));
const stages = ["vae", "decoder", "t2i", "editor"].filter((s) => listStageCheckpoints(join(run, s)).length > 0);
stages.forEach((stage, i) => {
  const out = join(dest, stage);
  mkdirSync(out, { recursive: true });
  for (const f of ["metrics.jsonl", "done.json"]) if (existsSync(join(run, stage, f))) copyFileSync(join(run, stage, f), join(out, f));
  const ckpts = listStageCheckpoints(join(run, stage));
  const [, ck] = ckpts[ckpts.length - 1];
  const name = ck.split("/").pop()!;
  mkdirSync(join(out, name));
  copyFileSync(join(ck, "state.json"), join(out, name, "state.json"));
  const started = i < stages.length - 1; // a later stage exists
  const f = openSafetensors(join(ck, "weights.safetensors"));
  const keep = new Map<string, TensorToWrite>();
  for (const n of f.names()) {
    if (started && n.startsWith("adam_")) continue;
    keep.set(n, { dtype: "F32", shape: f.info(n).shape, data: f.toF32(n) });
  }
  writeSafetensors(join(out, name, "weights.safetensors"), keep, f.metadata ?? undefined);
});
console.log(dest);
