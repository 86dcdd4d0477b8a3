// scripts/lora_subset.ts (learning notes E35): a copy of a checkpoint's LoRA file with only some of
// its adapters, each kept one unchanged, and a clear failure for a module the file does not adapt.
import { afterAll, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { openSafetensors, writeSafetensors, type TensorToWrite } from "../src/io/safetensors.ts";

const SCRIPT = fileURLToPath(new URL("../scripts/lora_subset.ts", import.meta.url));
const dir = mkdtempSync(join(tmpdir(), "rl4pix-lora-subset-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const MODULES = ["up_blocks.0.upsamplers.0.conv", "up_blocks.1.resnets.0.conv1", "up_blocks.1.resnets.1.conv2"];
const checkpoint = join(dir, "checkpoint_0");
mkdirSync(checkpoint);
const tensors = new Map<string, TensorToWrite>();
MODULES.forEach((m, k) => {
  tensors.set(`unet.${m}.lora_A.weight`, { dtype: "F32", shape: [2, 3, 3, 3], data: Float32Array.from({ length: 54 }, (_, i) => k * 100 + i) });
  tensors.set(`unet.${m}.lora_B.weight`, { dtype: "F32", shape: [5, 2, 1, 1], data: Float32Array.from({ length: 10 }, (_, i) => -(k * 100 + i)) });
});
writeSafetensors(join(checkpoint, "pytorch_lora_weights.safetensors"), tensors, { format: "pt" });

function run(args: string[]) {
  return Bun.spawnSync([process.execPath, SCRIPT, "--from", checkpoint, ...args], { stdout: "pipe", stderr: "pipe" });
}

function modulesIn(folder: string): string[] {
  const file = openSafetensors(join(folder, "pytorch_lora_weights.safetensors"));
  for (const name of file.names()) expect(Array.from(file.toF32(name))).toEqual(Array.from(tensors.get(name)!.data as Float32Array));
  expect(file.metadata).toEqual({ format: "pt" });
  return [...new Set(file.names().map((n) => n.replace(/^unet\.|\.lora_[AB]\.weight$/g, "")))].sort();
}

test("--keep writes only the named adapters, both matrices, values unchanged", () => {
  const out = join(dir, "keep");
  const r = run(["--out", out, "--keep", `${MODULES[0]},${MODULES[2]}`]);
  expect(r.exitCode).toBe(0);
  expect(modulesIn(out)).toEqual([MODULES[0], MODULES[2]].sort());
});

test("--drop writes all but the named adapters", () => {
  const out = join(dir, "drop");
  const r = run(["--out", out, "--drop", MODULES[2]]);
  expect(r.exitCode).toBe(0);
  expect(modulesIn(out)).toEqual([MODULES[0], MODULES[1]].sort());
});

test("a module the file does not adapt is an error that names it", () => {
  const r = run(["--out", join(dir, "bad"), "--keep", "conv_out"]);
  expect(r.exitCode).not.toBe(0);
  expect(r.stderr.toString()).toContain("has no adapter on 'conv_out'");
});
