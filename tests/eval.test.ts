// The MagicBrush evaluation runner end to end with the embedded tiny InstructPix2Pix and a tiny
// random CLIP, on a synthetic 3-turn dataset made into two sessions (s1: turns 1-2, s2: turn 1 with
// a ground truth of another size): MagicBrush's file names, results.json's shape (what the report
// reads), numbers equal to pairMetrics / CLIP recomputed from the written PNGs, resuming without
// recomputation, multi-turn editing the previous output, --limit, and one-line errors.
import { afterAll, describe, expect, spyOn, test } from "bun:test";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve as resolvePath } from "node:path";
import { useGpu } from "./helpers.ts";
import { UserError } from "../src/errors.ts";
import { synthDataset } from "../src/data/synth_dataset.ts";
import { tinyModelDir, writeTinyCheckpoint } from "../src/models/tiny.ts";
import { writeTinyClip } from "../src/models/tiny_clip.ts";
import { loadIP2P, type IP2PModels } from "../src/diffusion/pipeline.ts";
import { editImage } from "../src/diffusion/edit.ts";
import { readImage, resize, toUint8, writePng } from "../src/io/image.ts";
import { pairMetrics } from "../src/eval/metrics.ts";
import { loadClip, type ClipBundle } from "../src/nn/clip_model.ts";
import { clipI, clipT } from "../src/eval/clip_score.ts";
import { outputName, runEval, sessionStem, type EvalOptions } from "../src/eval/runner.ts";
import { formatTable, summarise, type SampleRecord } from "../src/eval/table.ts";
import { buildReportHtml, readRunDir } from "../src/eval/report.ts";
import { evalCommand } from "../src/cli/eval.ts";

useGpu();

const root = mkdtempSync(join(tmpdir(), "rl4pix-eval-"));
afterAll(() => rmSync(root, { recursive: true, force: true }));
const STEPS = 2;
const SEED = 7;
/** The synthetic images' side; every edit runs at it (no resize: the independent edits below match exactly). */
const SIZE = 32;

interface Line {
  id: string;
  source: string;
  target: string;
  mask: string;
  instruction: string;
  caption: string;
}

let prepared: { manifest: string; lines: Line[]; modelDir: string; models: IP2PModels; clipDir: string; clip: ClipBundle } | null = null;
async function setup() {
  if (prepared) return prepared;
  const synthDir = join(root, "synth");
  const synthManifest = await synthDataset(synthDir, { n: 3, seed: 5, size: SIZE });
  const lines = readFileSync(synthManifest, "utf8").trim().split("\n").map((l) => JSON.parse(l) as Line);
  // s2's ground truth at another size (48x40): the output is resized to it before scoring.
  const t2 = await readImage(join(synthDir, lines[2].target));
  await writePng(join(synthDir, "images", "s2-target-48x40.png"), resize({ width: t2.width, height: t2.height, channels: 3, data: t2.data }, 48, 40));
  const entries = [
    // MagicBrush-like: turn 2's source is turn 1's ground truth.
    { id: "a", img_id: "s1", turn: 1, source: lines[0].source, target: lines[0].target, mask: lines[0].mask, instruction: lines[0].instruction, caption: lines[0].caption },
    { id: "b", img_id: "s1", turn: 2, source: lines[0].target, target: lines[1].target, mask: lines[1].mask, instruction: lines[1].instruction, caption: lines[1].caption },
    { id: "c", img_id: "s2", turn: 1, source: lines[2].source, target: "images/s2-target-48x40.png", mask: lines[2].mask, instruction: lines[2].instruction },
  ];
  const manifest = join(synthDir, "sessions.jsonl");
  writeFileSync(manifest, entries.map((e) => JSON.stringify(e)).join("\n") + "\n");
  const modelDir = await tinyModelDir();
  const models = loadIP2P(modelDir);
  const clipDir = writeTinyClip(join(root, "clip"));
  prepared = { manifest, lines, modelDir, models, clipDir, clip: loadClip(clipDir) };
  return prepared;
}

async function options(out: string, extra: Partial<EvalOptions> = {}): Promise<EvalOptions> {
  const p = await setup();
  return {
    data: p.manifest,
    out,
    turns: "both",
    steps: STEPS,
    textGuidance: 7.5,
    imageGuidance: 1.5,
    seed: SEED,
    resolution: SIZE, // the images' own size, as the command is told below (its default is the model's native size)
    models: p.models,
    clip: p.clip,
    labels: { model: resolvePath(p.modelDir), lora: null },
    ...extra,
  };
}

async function rgbOf(path: string) {
  const img = await readImage(path);
  return { width: img.width, height: img.height, channels: 3 as const, data: img.data };
}

async function editedBytes(input: Parameters<typeof editImage>[1], instruction: string): Promise<Uint8Array> {
  const p = await setup();
  const r = await editImage(p.models, input, instruction, { steps: STEPS, guidance: { text: 7.5, image: 1.5 }, eta: 0, seed: SEED });
  return toUint8(r.image.data);
}

const RUN = join(root, "run");
const OUT = join(RUN, "eval", "tiny");
const FILES = ["s1/s1_1.png", "s1/s1_inde_2.png", "s1/s1_iter_2.png", "s2/s2_1.png"];

describe("eval runner", () => {
  test("both settings: MagicBrush file names, results.json shape, numbers recomputed from the PNGs", async () => {
    const p = await setup();
    let shown = 0;
    const run = await runEval(await options(OUT, { progress: () => ({ update: (d) => (shown = d), stop() {} }) }));
    expect(run.edited).toBe(4);
    expect(run.reused).toBe(0);
    expect(shown).toBe(4);
    for (const f of FILES) expect(existsSync(join(OUT, f))).toBe(true);
    expect(existsSync(join(OUT, "s2", "s2_iter_1.png"))).toBe(false);

    const json = JSON.parse(readFileSync(join(OUT, "results.json"), "utf8"));
    expect(json).toEqual(JSON.parse(JSON.stringify(run.results)));
    expect(Object.keys(json).sort()).toEqual(["n", "per_sample", "settings", "table"]);
    expect(json.n).toBe(3);
    expect(json.settings.turns).toBe("both");
    expect(json.settings.steps).toBe(STEPS);
    expect(json.settings.sessions).toBe(2);
    expect(json.settings.truncated_sessions).toBe(0);
    expect(json.table.map((r: { setting: string; n: number }) => [r.setting, r.n])).toEqual([["single-turn", 3], ["multi-turn", 2]]);
    for (const row of json.table) {
      for (const k of ["L1", "L2", "CLIP-T", "SSIM", "PSNR", "CLIP-I"]) expect(typeof row[k]).toBe("number");
    }
    // single-turn scores every turn; multi-turn the final turn of each session (s1 turn 2, s2 turn 1).
    const per = json.per_sample as SampleRecord[];
    expect(per.map((r) => [r.setting, r.id, r.output])).toEqual([
      ["single-turn", "a", "s1/s1_1.png"],
      ["single-turn", "b", "s1/s1_inde_2.png"],
      ["single-turn", "c", "s2/s2_1.png"],
      ["multi-turn", "b", "s1/s1_iter_2.png"],
      ["multi-turn", "c", "s2/s2_1.png"],
    ]);

    // Every number from the files: pairMetrics (output resized to the target), CLIP-I, CLIP-T.
    for (const r of per) {
      const gen = await rgbOf(join(OUT, r.output));
      const gt = await rgbOf(r.target);
      const m = pairMetrics(gen, gt);
      expect(r.L1).toBe(m.l1);
      expect(r.L2).toBe(m.l2);
      expect(r.SSIM).toBe(m.ssim);
      expect(r.PSNR).toBe(m.psnr);
      const [ci] = await clipI(p.clip, [gen], [gt]);
      expect(Math.abs(r["CLIP-I"]! - ci)).toBeLessThan(1e-9);
      if (r.id === "c") {
        expect(r.caption).toBeNull();
        expect(r["CLIP-T"]).toBeNull();
        expect(gt.width).toBe(48);
        expect(gen.width).toBe(32);
      } else {
        const [ct] = await clipT(p.clip, [gen], [r.caption!]);
        expect(Math.abs(r["CLIP-T"]! - ct)).toBeLessThan(1e-9);
      }
    }
    // The attention cosine of each output: its own edit's map (recomputed here) against its mask,
    // resized to the edited image and area-averaged by hand, and a constant map's cosine.
    const byId = new Map(p.lines.map((l, i) => [["a", "b", "c"][i], l]));
    for (const r of per.filter((x) => x.setting === "single-turn")) {
      const line = byId.get(r.id)!;
      const input = await readImage(r.id === "b" ? join(root, "synth", p.lines[0].target) : join(root, "synth", line.source));
      const e = await editImage(p.models, input, r.instruction, { steps: STEPS, guidance: { text: 7.5, image: 1.5 }, eta: 0, seed: SEED, attentionLayers: "auto" });
      const att = e.attention!;
      const maskImg = await readImage(join(root, "synth", line.mask));
      const f = e.image.width / att.width; // the synthetic masks are at the edited size
      const gtMap = new Float64Array(att.width * att.height);
      for (let y = 0; y < maskImg.height; y++) for (let x = 0; x < maskImg.width; x++) {
        if (maskImg.data[y * maskImg.width + x] > 0.5) gtMap[Math.floor(y / f) * att.width + Math.floor(x / f)] += 1 / (f * f);
      }
      const cos = (a: ArrayLike<number>, b: ArrayLike<number>) => {
        let ab = 0, aa = 0, bb = 0;
        for (let i = 0; i < a.length; i++) (ab += a[i] * b[i]), (aa += a[i] * a[i]), (bb += b[i] * b[i]);
        return ab / Math.sqrt(aa * bb);
      };
      expect(r.attention_cos!).toBeCloseTo(cos(att.map, gtMap), 6);
      expect(r.attention_cos_uniform!).toBeCloseTo(cos(new Float64Array(gtMap.length).fill(1), gtMap), 9);
      expect(existsSync(join(OUT, `${r.output}.attention.json`))).toBe(true);
    }
    for (const row of json.table) {
      const rs = per.filter((r) => r.setting === row.setting);
      expect(row.attention_n).toBe(rs.length);
      expect(row.attention_cos).toBeCloseTo(rs.reduce((a, r) => a + r.attention_cos!, 0) / rs.length, 12);
    }

    // Row means.
    for (const row of json.table) {
      const rs = per.filter((r) => r.setting === row.setting);
      const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
      expect(row.L1).toBeCloseTo(mean(rs.map((r) => r.L1)), 12);
      expect(row.L2).toBeCloseTo(mean(rs.map((r) => r.L2)), 12);
      expect(row.SSIM).toBeCloseTo(mean(rs.map((r) => r.SSIM)), 12);
      expect(row.PSNR).toBeCloseTo(mean(rs.map((r) => r.PSNR as number)), 10);
      expect(row["CLIP-I"]).toBeCloseTo(mean(rs.map((r) => r["CLIP-I"]!)), 12);
      const captioned = rs.filter((r) => r["CLIP-T"] !== null);
      expect(row.captioned).toBe(captioned.length);
      expect(row["CLIP-T"]).toBeCloseTo(mean(captioned.map((r) => r["CLIP-T"]!)), 12);
    }

    // The report reads it (RUN/eval/<name>/results.json).
    const report = readRunDir(RUN);
    expect(report.evals.map((e) => [e.name, e.n, e.table.length])).toEqual([["tiny", 3, 2]]);
    const html = buildReportHtml(report);
    expect(html).toContain("single-turn");
    expect(html).toContain("CLIP-I↑");
  });

  test("multi-turn edits the previous output; single-turn edits the turn's own source", async () => {
    const p = await setup();
    const turn2 = p.lines[1].instruction;
    const fromPrevOutput = await editedBytes(await readImage(join(OUT, "s1/s1_1.png")), turn2);
    const fromGroundTruth = await editedBytes(await readImage(join(root, "synth", p.lines[0].target)), turn2);
    const iter = toUint8((await readImage(join(OUT, "s1/s1_iter_2.png"))).data);
    const inde = toUint8((await readImage(join(OUT, "s1/s1_inde_2.png"))).data);
    expect(Buffer.from(iter).equals(Buffer.from(fromPrevOutput))).toBe(true);
    expect(Buffer.from(inde).equals(Buffer.from(fromGroundTruth))).toBe(true);
    expect(Buffer.from(iter).equals(Buffer.from(inde))).toBe(false);
  });

  test("a rerun reuses every output (nothing recomputed, files untouched); a partial one redoes only what is missing", async () => {
    const mtimes = FILES.map((f) => statSync(join(OUT, f)).mtimeMs);
    const before = JSON.parse(readFileSync(join(OUT, "results.json"), "utf8"));
    let loads = 0;
    const again = await runEval(await options(OUT, { models: async () => (loads++, (await setup()).models) }));
    expect([again.edited, again.reused, loads]).toEqual([0, 4, 0]);
    expect(FILES.map((f) => statSync(join(OUT, f)).mtimeMs)).toEqual(mtimes);
    expect(again.results).toEqual(before);

    // Remove the multi-turn turn 2: it is recomputed from s1_1.png read back from disk.
    const old = readFileSync(join(OUT, "s1/s1_iter_2.png"));
    rmSync(join(OUT, "s1/s1_iter_2.png"));
    const partial = await runEval(await options(OUT, { models: async () => (loads++, (await setup()).models) }));
    expect([partial.edited, partial.reused, loads]).toEqual([1, 3, 1]);
    expect(readFileSync(join(OUT, "s1/s1_iter_2.png")).equals(old)).toBe(true);
    expect(partial.results.table).toEqual(before.table);
  });

  test("--limit and --turns: a session cut short scores its last edited turn; without CLIP the CLIP columns are null", async () => {
    const run = await runEval(await options(OUT, { turns: "multi", limit: 2, clip: null }));
    expect(run.edited).toBe(0);
    const r = run.results;
    expect(r.n).toBe(2);
    expect(r.settings.truncated_sessions).toBe(0);
    expect(r.table.map((t) => [t.setting, t.n, t["CLIP-T"], t["CLIP-I"]])).toEqual([["multi-turn", 1, null, null]]);
    expect(r.per_sample.map((s) => s.output)).toEqual(["s1/s1_iter_2.png"]);

    const cut = await runEval(await options(OUT, { turns: "multi", limit: 1, clip: null }));
    expect(cut.results.settings.truncated_sessions).toBe(1);
    expect(cut.results.per_sample.map((s) => [s.id, s.output])).toEqual([["a", "s1/s1_1.png"]]);
    const single = await runEval(await options(OUT, { turns: "single", limit: 2, clip: null }));
    expect(single.results.table.map((t) => [t.setting, t.n])).toEqual([["single-turn", 2]]);
    expect(JSON.parse(readFileSync(join(OUT, "results.json"), "utf8")).table[0].setting).toBe("single-turn");
  });

  test("the command prints the table in the paper's layout (outputs reused from the first run)", async () => {
    const p = await setup();
    // Restore the full results of the first test's settings, through the command this time.
    const log = spyOn(console, "log").mockImplementation(() => {});
    let text = "";
    try {
      await evalCommand({
        data: p.manifest, out: OUT, model: p.modelDir, clip: p.clipDir, turns: "both", steps: STEPS, textGuidance: 7.5, imageGuidance: 1.5, seed: SEED, resolution: SIZE,
      });
      text = log.mock.calls.map((c) => String(c[0])).join("\n");
    } finally {
      log.mockRestore();
    }
    expect(text).toMatch(/3 samples \(2 sessions\)/);
    expect(text).toMatch(/0 edited, 4 reused/);
    expect(text).toMatch(/Setting\s+L1↓\s+L2↓\s+CLIP-T↑\s+SSIM↑\s+PSNR↑\s+CLIP-I↑\s+attn cos↑\s+uniform\s+n/);
    expect(text).toMatch(/single-turn(\s+\d\.\d{4}){2}\s+\d\.\d{4}\s+-?\d\.\d{4}\s+\d+\.\d{4}\s+-?\d\.\d{4}(\s+\d\.\d{4}){2}\s+3/);
    expect(text).toMatch(/multi-turn .*\s2\n/);
    expect(text).toContain(join(OUT, "results.json"));
  });
});

describe("eval runner: table and errors", () => {
  test("identical images: PSNR Infinity is kept out of the mean and written as \"Infinity\"", () => {
    const rec = (id: string, psnr: number | "Infinity"): SampleRecord => ({
      setting: "single-turn", id, img_id: id, turn: 1, turns: 1, instruction: "x", caption: null, output: "", target: "",
      L1: psnr === "Infinity" ? 0 : 0.1, L2: psnr === "Infinity" ? 0 : 0.01, PSNR: psnr, SSIM: 1, "CLIP-T": null, "CLIP-I": null,
      attention_cos: null, attention_cos_uniform: null,
    });
    const row = summarise("single-turn", [rec("a", "Infinity"), rec("b", 20), rec("c", 30)]);
    expect(row.PSNR).toBe(25);
    expect(row.PSNR_infinite).toBe(1);
    expect(row.L1).toBeCloseTo(0.2 / 3, 12);
    expect(row.n).toBe(3);
    expect(summarise("single-turn", [rec("a", "Infinity")]).PSNR).toBeNull();
    expect(formatTable([row])).toContain("1 identical pair(s)");
  });

  test("output names follow MagicBrush; unsafe session ids become safe, distinct folder names", () => {
    expect(outputName("139", 1, "single-turn")).toBe("139/139_1.png");
    expect(outputName("139", 1, "multi-turn")).toBe("139/139_1.png");
    expect(outputName("139", 3, "single-turn")).toBe("139/139_inde_3.png");
    expect(outputName("139", 3, "multi-turn")).toBe("139/139_iter_3.png");
    const a = sessionStem("../x y"), b = sessionStem("../x_y");
    expect(a).toMatch(/^x_y-[0-9a-f]{8}$/);
    expect(a).not.toBe(b);
  });

  const expectUserError = async (p: Promise<unknown>, pattern: RegExp) => {
    let err: unknown = null;
    try {
      await p;
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(UserError);
    expect((err as Error).message).toMatch(pattern);
    expect((err as Error).message.includes("\n")).toBe(false);
  };

  test("bad inputs are one-line UserErrors before any editing", async () => {
    const p = await setup();
    const dir = join(root, "bad");
    mkdirSync(dir, { recursive: true });
    const src = join(root, "synth", p.lines[0].source);
    const noModels = async (): Promise<IP2PModels> => {
      throw new Error("the model must not be loaded");
    };
    const manifest = (name: string, obj: Record<string, unknown> | null) => {
      const path = join(dir, name);
      writeFileSync(path, obj ? JSON.stringify(obj) + "\n" : "\n");
      return path;
    };
    const base = { source: src, mask: join(root, "synth", p.lines[0].mask), instruction: "add a red circle" };
    await expectUserError(runEval(await options(join(dir, "o1"), { data: manifest("empty.jsonl", null), models: noModels })), /empty\.jsonl: the manifest has no samples/);
    await expectUserError(runEval(await options(join(dir, "o2"), { data: manifest("nogt.jsonl", base), models: noModels })), /nogt\.jsonl: sample 'line1' has no ground-truth target/);
    await expectUserError(
      runEval(await options(join(dir, "o3"), { data: manifest("gone.jsonl", { ...base, target: "missing.png" }), models: noModels })),
      /gone\.jsonl:1: target file not found/,
    );
    // Outputs made with other settings are not mixed in.
    await expectUserError(runEval(await options(OUT, { steps: 3, models: noModels })), /generation\.json: the outputs in this folder were made with other settings \(steps 2 → 3\)/);
    writeFileSync(join(dir, "file"), "x");
    await expectUserError(runEval(await options(join(dir, "file"), { models: noModels })), /--out .*file: exists and is not a folder/);
    // The command checks the CLIP folder first.
    const ip2p = writeTinyCheckpoint(join(root, "ip2p")).dir;
    await expectUserError(
      evalCommand({ data: p.manifest, out: join(dir, "o4"), clip: ip2p, turns: "both", steps: 2, textGuidance: 7.5, imageGuidance: 1.5, seed: 0 }),
      /model_index\.json: this is a diffusers pipeline folder, not a CLIPModel folder/,
    );
    await expectUserError(
      evalCommand({ data: p.manifest, out: join(dir, "o5"), turns: "some", steps: 2, textGuidance: 7.5, imageGuidance: 1.5, seed: 0 }),
      /--turns: expected single, multi or both/,
    );
    expect(existsSync(join(dir, "o4"))).toBe(false);
  });
});
