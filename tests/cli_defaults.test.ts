// Every command with its defaults, on the embedded model, as a first-time user runs it: only the
// required arguments (and, where a default run takes minutes, fewer epochs/steps/samples). The values
// the defaults must come to are derived here from the model folder's own config files.
import { HELDOUT_SEED } from "../src/pretrain/data.ts";
import { describe, expect, test } from "bun:test";
import { copyFileSync, existsSync, mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setDefaultTimeout } from "bun:test";
import { cliRunner } from "./cli_run.ts";
import { defaultModelDir } from "../src/models/default_model.ts";
import { readImage } from "../src/io/image.ts";

setDefaultTimeout(180_000);
const work = mkdtempSync(join(tmpdir(), "rl4pix-defaults-"));
const cache = join(work, "cache");
const { run } = cliRunner(cache);
const model = await defaultModelDir({ cacheDir: cache }); // the folder the commands use (made on the host)
const json = (p: string) => JSON.parse(readFileSync(join(model, p), "utf8"));
const unetCfg = json("unet/config.json");
const vaeCfg = json("vae/config.json");

/** diffusers' default size: UNet sample_size x 2^(VAE blocks - 1). */
const native = unetCfg.sample_size * 2 ** (vaeCfg.block_out_channels.length - 1);

/** docs/decisions.md's rule, from config.json: attn2 maps closest to latent/4 per side, the finer on a tie. */
function expectedRewardLayers(): string {
  const n = unetCfg.block_out_channels.length;
  const factors = new Set<number>();
  unetCfg.down_block_types.forEach((t: string, i: number) => t.includes("CrossAttn") && factors.add(2 ** i));
  unetCfg.up_block_types.forEach((t: string, i: number) => t.includes("CrossAttn") && factors.add(2 ** (n - 1 - i)));
  if ((unetCfg.mid_block_type ?? "UNetMidBlock2DCrossAttn") === "UNetMidBlock2DCrossAttn") factors.add(2 ** (n - 1));
  const best = [...factors].sort((a, b) => Math.abs(Math.log2(a) - 2) - Math.abs(Math.log2(b) - 2) || a - b)[0];
  return `res:${best}`;
}

const img = join(work, "in.png");
const runDir = join(work, "run");

describe("defaults on the embedded model", () => {
  test("synth, then edit: 50 steps at the image's own size", async () => {
    expect(run("synth", join(work, "data"), "--n", "1", "--size", "32").code).toBe(0);
    copyFileSync(join(work, "data", "images", "synth-0-00000-source.png"), img);
    const out = join(work, "edited.png");
    const r = run("edit", img, "add a red circle", "-o", out);
    expect([r.code, r.out]).toEqual([0, `${out}\n`]);
    expect(r.err).toMatch(/^edit: 50 in [\d.]+ s \([\d.]+ it\/s\)\n$/); // the progress summary, nothing else
    const o = await readImage(out);
    expect([o.width, o.height]).toEqual([32, 32]);
  });

  test("train: the model's native resolution and reward layers, recorded in config.json", () => {
    const r = run("train", "--out", runDir, "--set", "num_epochs=1", "sample.num_steps=2", "report.num_samples=1");
    expect(r.code).toBe(0);
    expect(r.out).toContain(join(runDir, "report.html"));
    const cfg = JSON.parse(readFileSync(join(runDir, "config.json"), "utf8"));
    expect([cfg.resolution, cfg.reward.layers]).toEqual([native, expectedRewardLayers()]);
    expect(existsSync(join(runDir, "checkpoints"))).toBe(true);
  });

  test("report", () => {
    const r = run("report", runDir);
    expect([r.code, r.out]).toEqual([0, `${join(runDir, "report.html")}\n`]);
  });

  test("eval: 96x96 photos are edited at the model's native size, --resolution overrides", async () => {
    expect(run("synth", join(work, "d96"), "--n", "1", "--size", "96").code).toBe(0);
    const manifest = join(work, "d96", "manifest.jsonl");
    const r = run("eval", "--data", manifest, "--out", join(work, "ev"), "--limit", "1");
    expect(r.code).toBe(0);
    expect(r.out).toContain(`· DDIM 50 steps · s_T 7.5 · s_I 1.5 · seed 0 · resolution ${native} (the model's native size) ·`);
    const o = await readImage(join(work, "ev", "synth-0-00000", "synth-0-00000_1.png"));
    expect([o.width, o.height]).toEqual([native, native]);
    const r32 = run("eval", "--data", manifest, "--out", join(work, "ev32"), "--limit", "1", "--steps", "2", "--resolution", "32");
    expect(r32.code).toBe(0);
    expect(r32.out).toContain("· resolution 32 ·");
    const o32 = await readImage(join(work, "ev32", "synth-0-00000", "synth-0-00000_1.png"));
    expect([o32.width, o32.height]).toEqual([32, 32]);
  });

  test("demo, one short epoch", () => {
    const r = run("demo", "--out", join(work, "demo"), "--epochs", "1", "--samples", "1", "--held-out", "2");
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/^before +\d\.\d{4} ± /m);
    expect(r.out).toMatch(/^after +\d\.\d{4} ± /m);
    expect(r.out).toMatch(/after − before [+-]\d\.\d{4} ± \d\.\d{4} \(paired s\.e\.\); a constant map scores \d\.\d{4}/);
    // before and after are measured on the held-out split, not on the training edits
    expect(readFileSync(join(work, "demo", "heldout", "manifest.jsonl"), "utf8")).toContain(`"id":"synth-${HELDOUT_SEED}-00001"`);
    expect(existsSync(join(work, "demo", "report.html"))).toBe(true);
  }, 600_000); // one epoch is 32 sampled edits (four batches of eight): about a minute alone on 2 CPU cores

  test("pretrain, a few steps of each stage (default architecture, batch and seed)", () => {
    const out = join(work, "pretrain");
    const r = run("pretrain", "--out", out, "--vae-steps", "1", "--t2i-steps", "1", "--editor-steps", "1", "--eval-every", "0", "--held-out", "2");
    expect(r.code).toBe(0);
    // stderr holds only the stages' progress lines (no warnings, no stack traces)
    for (const line of r.err.trim().split("\n")) expect(line).toMatch(/^(vae|t2i|editor)[ :]/);
    expect(r.out.trim()).toBe(join(out, "model"));
    for (const stage of ["vae", "t2i", "editor"]) expect(JSON.parse(readFileSync(join(out, stage, "done.json"), "utf8")).steps).toBe(1);
    const vae = JSON.parse(readFileSync(join(out, "model", "vae", "config.json"), "utf8"));
    expect(vae.scaling_factor).not.toBe(1); // measured from the trained encoder
    expect(JSON.parse(readFileSync(join(out, "settings.json"), "utf8")).batch).toBe(16);
  });

  test("tokenize, metrics, pretrain --help, help", () => {
    const t = run("tokenize", "make it snowy", "--json");
    expect(t.code).toBe(0);
    // padded to the default model's tokenizer length (its tokenizer_config.json)
    expect(JSON.parse(t.out).input_ids.length).toBe(json("tokenizer/tokenizer_config.json").model_max_length);
    const m = run("metrics", img, img, "--json");
    expect(m.code).toBe(0);
    const mj = JSON.parse(m.out);
    expect([mj.l1, mj.l2]).toEqual([0, 0]);
    expect(mj.ssim).toBeCloseTo(1, 6);
    for (const args of [["pretrain", "--help"], ["--help"]]) {
      const h = run(...args);
      expect([args, h.code, h.err]).toEqual([args, 0, ""]);
    }
  });
});
