// Bad inputs as a user meets them on the command line: each is one "rl4pix:" line on stderr naming
// the file (or flag) and the problem, exit 2, no stack trace, and no output left behind — no edited
// image, no run folder. (Library-level checks of the same files: safetensors, datasets, config and
// diffusers_config tests; here the whole command is run.)
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { spawnSync } from "node:child_process";
import { copyFileSync, cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Jimp } from "jimp";
import { openSafetensors, type TensorToWrite, writeSafetensors } from "../src/io/safetensors.ts";
import { TINY_IP2P } from "./goldens.ts";

setDefaultTimeout(120_000);
const CLI = join(import.meta.dir, "..", "cli.ts");
const work = mkdtempSync(join(tmpdir(), "rl4pix-bad-"));
afterAll(() => rmSync(work, { recursive: true, force: true }));

function run(...args: string[]): { code: number; err: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: "utf8", env: { ...process.env, RL4PIX_CACHE_DIR: join(work, "cache"), RL4PIX_TEST_FAULT: "" } });
  return { code: r.status ?? -1, err: r.stderr.split("\n").filter((l) => !l.startsWith("Warning: max")).join("\n") };
}

/** Exit 2, exactly one "rl4pix:" line (returned), no stack trace. */
function userError(r: { code: number; err: string }, ...mustContain: string[]): string {
  if (r.code !== 2) throw new Error(`exit ${r.code}, expected 2:\n${r.err}`);
  expect(r.err).not.toContain("    at ");
  const lines = r.err.trim().split("\n").filter((l) => l.startsWith("rl4pix:"));
  expect(lines.length).toBe(1);
  for (const s of mustContain) expect(lines[0]).toContain(s);
  return lines[0];
}

/** A safetensors file from a raw header object and a data section of `dataBytes` bytes. */
function rawSafetensors(path: string, header: unknown, dataBytes: number, headerLength?: number): string {
  const json = new TextEncoder().encode(JSON.stringify(header));
  const out = new Uint8Array(8 + json.length + dataBytes);
  new DataView(out.buffer).setBigUint64(0, BigInt(headerLength ?? json.length), true);
  out.set(json, 8);
  writeFileSync(path, out);
  return path;
}

let img = "";
let data = "";
beforeAll(async () => {
  expect(run("synth", join(work, "synth"), "--n", "2", "--size", "32").code).toBe(0);
  data = join(work, "synth");
  img = join(work, "in.png");
  copyFileSync(join(data, "images", "synth-0-00000-source.png"), img);
});

describe("safetensors files that lie about themselves (edit --lora)", () => {
  const lora = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight";
  const cases: [string, () => string, string][] = [
    ["a header length beyond the end of the file", () => rawSafetensors(join(work, "hlen.safetensors"), { [lora]: { dtype: "F32", shape: [4, 4], data_offsets: [0, 64] } }, 64, 1_000_000), "header length 1000000 exceeds the file size"],
    ["a file cut short inside its header", () => {
      const p = rawSafetensors(join(work, "cut.safetensors"), { [lora]: { dtype: "F32", shape: [4, 4], data_offsets: [0, 64] } }, 64);
      writeFileSync(p, readFileSync(p).subarray(0, 20));
      return p;
    }, "exceeds the file size 20"],
    ["offsets beyond the data section", () => rawSafetensors(join(work, "beyond.safetensors"), { [lora]: { dtype: "F32", shape: [4, 4], data_offsets: [0, 64] } }, 16), "beyond the end of the data section"],
    ["a dtype and shape that do not fit the byte range", () => rawSafetensors(join(work, "shape.safetensors"), { [lora]: { dtype: "F32", shape: [4, 4], data_offsets: [0, 32] } }, 32), "needs 64 bytes"],
  ];
  for (const [what, make, fragment] of cases) {
    test(what, () => {
      const file = make();
      const out = join(work, "lora-out.png");
      userError(run("edit", img, "add a red circle", "-o", out, "--model", TINY_IP2P, "--lora", file, "--steps", "2"), file, fragment);
      expect(existsSync(out)).toBe(false);
    });
  }
});

describe("model folders with something missing", () => {
  test("a state-dict key missing from the UNet's weights is named", () => {
    const m = join(work, "model-missing-key");
    cpSync(TINY_IP2P, m, { recursive: true });
    for (const name of readdirSync(join(m, "unet")).filter((n) => n.endsWith(".safetensors"))) {
      const path = join(m, "unet", name);
      const f = openSafetensors(path);
      const tensors = new Map<string, TensorToWrite>();
      for (const k of f.names()) tensors.set(k, { dtype: f.info(k).dtype, shape: f.info(k).shape, data: f.readTensor(k) });
      const gone = f.names().sort().find((k) => k.endsWith("conv_in.weight"))!;
      expect(gone).toBeDefined();
      tensors.delete(gone);
      writeSafetensors(path, tensors, f.metadata ?? undefined);
    }
    const out = join(work, "missing-key.png");
    userError(run("edit", img, "x", "-o", out, "--model", m, "--steps", "2"), "conv_in.weight", "missing");
    expect(existsSync(out)).toBe(false);
  });

  test("a config key missing from model_index.json is named", () => {
    const m = join(work, "model-missing-config");
    cpSync(TINY_IP2P, m, { recursive: true });
    const p = join(m, "model_index.json");
    const j = JSON.parse(readFileSync(p, "utf8"));
    delete j.text_encoder;
    writeFileSync(p, JSON.stringify(j));
    const out = join(work, "missing-config.png");
    userError(run("edit", img, "x", "-o", out, "--model", m, "--steps", "2"), "model_index.json", "\"text_encoder\" is missing");
    expect(existsSync(out)).toBe(false);
  });
});

describe("datasets with a bad line: refused before anything is written", () => {
  const SMALL = ["resolution=32", "sample.num_steps=2", "sample.batch_size=2", "train.batch_size=2", "reward.layers=res:2", "num_epochs=1"];
  function manifestWith(name: string, edit: (line: Record<string, string>) => void): string {
    const lines = readFileSync(join(data, "manifest.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l));
    edit(lines[1]);
    const p = join(data, `${name}.jsonl`);
    writeFileSync(p, lines.map((l) => JSON.stringify(l)).join("\n") + "\n");
    return p;
  }
  function trainOn(manifest: string): { code: number; err: string; runDir: string } {
    const runDir = join(work, `run-${manifest.replace(/\W+/g, "")}`);
    const r = run("train", "--out", runDir, ...[...SMALL, `data=${manifest}`].flatMap((kv) => ["--set", kv]));
    return { ...r, runDir };
  }

  beforeAll(async () => {
    writeFileSync(join(data, "images", "notes.png"), "just some text");
    await new Jimp({ width: 32, height: 16, color: 0xffffffff }).write(join(data, "images", "wide-mask.png") as `${string}.png`);
  });

  const cases: [string, (l: Record<string, string>) => void, string][] = [
    ["a missing mask file", (l) => (l.mask = "images/gone.png"), "manifest-missing.jsonl:2: mask file not found"],
    ["a source that is not an image", (l) => (l.source = "images/notes.png"), "manifest-text.jsonl:2: source"],
    ["a mask of another shape than its image", (l) => (l.mask = "images/wide-mask.png"), "the mask is 32x16 but its image is 32x32"],
  ];
  for (const [what, edit, fragment] of cases) {
    test(`train: ${what}`, () => {
      const name = what.includes("missing") ? "manifest-missing" : what.includes("not an image") ? "manifest-text" : "manifest-wide";
      const r = trainOn(manifestWith(name, edit));
      const line = userError(r, fragment);
      if (what.includes("not an image")) expect(line).toContain("not an image (starts with bytes 6a 75 73 74");
      expect(existsSync(r.runDir)).toBe(false); // the run folder it would have created is not left behind
    });
  }
});

describe("flags and configuration keys", () => {
  test("negative and non-numeric numbers name the flag or key", () => {
    const out = join(work, "flags.png");
    userError(run("edit", img, "x", "-o", out, "--steps", "-3"), "--steps", "-3");
    userError(run("edit", img, "x", "-o", out, "--text-guidance", "lots"), "--text-guidance", "lots");
    userError(run("synth", join(work, "neg"), "--n", "-2"), "--n");
    expect(existsSync(out)).toBe(false);
    expect(existsSync(join(work, "neg"))).toBe(false);
    const runDir = join(work, "run-flags");
    userError(run("train", "--out", runDir, "--set", "train.learning_rate=-1"), "train.learning_rate", "-1");
    userError(run("train", "--out", runDir, "--set", "num_epochs=many"), "num_epochs", "many");
    expect(existsSync(runDir)).toBe(false);
  });

  test("an unknown key gets a did-you-mean, from --set and from a config file", () => {
    const runDir = join(work, "run-keys");
    userError(run("train", "--out", runDir, "--set", "lerning_rate=1"), "unknown config key \"lerning_rate\"", "did you mean \"train.learning_rate\"?");
    const cfg = join(work, "typo.json");
    writeFileSync(cfg, JSON.stringify({ sample: { num_step: 3 } }));
    userError(run("train", "--config", cfg, "--out", runDir), "typo.json", "did you mean \"sample.num_steps\"?");
    expect(existsSync(runDir)).toBe(false);
  });
});
