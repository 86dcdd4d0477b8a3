// The command line as a user meets it: exit codes, one-line errors naming the file, no partial output.
import { describe, expect, test } from "bun:test";
import { spawnSync } from "node:child_process";
import { copyFileSync, cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, truncateSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setDefaultTimeout } from "bun:test";
import { TINY_IP2P } from "./goldens.ts";
import { cliRunner, expectUserError } from "./cli_run.ts";

setDefaultTimeout(120_000);
const work = mkdtempSync(join(tmpdir(), "rl4pix-cli-"));
const { run, runEnv } = cliRunner(join(work, "cache"));
const userError = expectUserError;

const img = join(work, "in.png");

describe("edit", () => {
  test("a real edit writes the PNG and leaves no temporary files", () => {
    expect(run("synth", join(work, "data"), "--n", "1", "--size", "32").code).toBe(0);
    copyFileSync(join(work, "data", "images", "synth-0-00000-source.png"), img);
    const out = join(work, "out", "edited.png");
    rmSync(join(work, "out"), { recursive: true, force: true });
    spawnSync("mkdir", ["-p", join(work, "out")]);
    const r = run("edit", img, "add a red circle", "-o", out, "--steps", "2", "--attention-map", join(work, "out", "att.png"));
    expect(r.code).toBe(0);
    expect(existsSync(out)).toBe(true);
    expect(readdirSync(join(work, "out")).sort()).toEqual(["att.png", "edited.png"]);
  });
  test("missing input image", () => {
    const out = join(work, "missing-out.png");
    userError(run("edit", join(work, "nope.png"), "x", "-o", out), "nope.png");
    expect(existsSync(out)).toBe(false);
  });
  test("not an image", () => {
    const bad = join(work, "bad.png");
    writeFileSync(bad, "this is text, not a PNG");
    const out = join(work, "bad-out.png");
    userError(run("edit", bad, "x", "-o", out), "bad.png");
    expect(existsSync(out)).toBe(false);
  });
  test("empty instruction and bad numbers", () => {
    userError(run("edit", img, "  ", "-o", join(work, "o.png")), "INSTRUCTION");
    userError(run("edit", img, "x", "-o", join(work, "o.png"), "--steps", "abc"), "--steps");
  });
  test("usage mistakes are one line too", () => {
    userError(run("edit", img, "x", "-o", join(work, "o.png"), "--frobnicate"), "--frobnicate");
    userError(run("edit", img, "x", "-o", join(work, "o.png"), "--stesp", "2"), "--stesp", "--steps"); // with commander's suggestion
    userError(run("edit", img, "x"), "--output");
  });
  test("a checkpoint folder missing a component", () => {
    const m = join(work, "model-missing");
    cpSync(TINY_IP2P, m, { recursive: true });
    rmSync(join(m, "vae"), { recursive: true });
    userError(run("edit", img, "x", "-o", join(work, "o.png"), "--model", m), "vae");
  });
  test("a truncated safetensors file", () => {
    const m = join(work, "model-trunc");
    cpSync(TINY_IP2P, m, { recursive: true });
    const f = join(m, "unet", "diffusion_pytorch_model.safetensors");
    truncateSync(f, 1000);
    userError(run("edit", img, "x", "-o", join(work, "o.png"), "--model", m), "diffusion_pytorch_model.safetensors");
  });
  test("pickle weights are refused", () => {
    const m = join(work, "model-pickle");
    cpSync(TINY_IP2P, m, { recursive: true });
    rmSync(join(m, "unet", "diffusion_pytorch_model.safetensors"));
    rmSync(join(m, "unet", "diffusion_pytorch_model.fp16.safetensors"));
    writeFileSync(join(m, "unet", "diffusion_pytorch_model.bin"), "pickle");
    userError(run("edit", img, "x", "-o", join(work, "o.png"), "--model", m), "convert to safetensors");
  });
  test("a wrongly shaped tensor names the key and both shapes", () => {
    const m = join(work, "model-shape");
    cpSync(TINY_IP2P, m, { recursive: true });
    const cfgPath = join(m, "unet", "config.json");
    const cfg = JSON.parse(readFileSync(cfgPath, "utf8"));
    cfg.cross_attention_dim = 48;
    writeFileSync(cfgPath, JSON.stringify(cfg));
    userError(run("edit", img, "x", "-o", join(work, "o.png"), "--model", m), "attn2.to_k.weight", "[64,32]", "[64,48]");
  });
});

describe("other commands", () => {
  test("tokenize truncates long text to 77 ids with a warning", () => {
    const r = run("tokenize", Array(100).fill("red").join(" "), "--model", TINY_IP2P, "--json");
    expect(r.code).toBe(0);
    expect(JSON.parse(r.out).input_ids.length).toBe(77);
    expect(r.err).toContain("truncated");
  });
  test("train refuses unknown config keys", () => {
    userError(run("train", "--out", join(work, "run"), "--set", "train.learnig_rate=1"), "train.learnig_rate");
  });
  test("forward refuses an unknown component", () => {
    userError(run("forward", "transformer", "--inputs", img, "--out", join(work, "f.safetensors")), "transformer");
  });
  test("RL4PIX_PROFILE=1 prints the command's GPU time per kernel when it exits", () => {
    const r = runEnv({ RL4PIX_PROFILE: "1" }, "edit", img, "add a red circle", "-o", join(work, "profiled.png"), "--steps", "2");
    expect(r.code).toBe(0);
    const m = r.err.match(/^profile: ([\d.]+) ms GPU time in (\d+) dispatches$/m);
    expect(m).not.toBeNull();
    expect(Number(m![1])).toBeGreaterThan(0);
    expect(Number(m![2])).toBeGreaterThan(100); // 2 steps of a 3-branch UNet, the text encoder and the VAE
    expect(r.err).toMatch(/^  conv2d\S* +[\d.]+ ms +[\d.]+% +\d+ calls$/m);
    expect(run("edit", img, "add a red circle", "-o", join(work, "unprofiled.png"), "--steps", "2").err).not.toContain("profile:");
  });
  test("doctor reports the adapter, and a successful GPU command prints nothing to stderr", () => {
    const r = run("doctor", "--json");
    expect(r.code).toBe(0);
    expect(r.err).toBe(""); // Dawn's own limit warnings on lavapipe included (gpu/native_stderr.ts)
    const j = JSON.parse(r.out);
    expect(j.ok).toBe(true);
    expect(j.selfTest.length).toBeGreaterThan(1);
  });
});
