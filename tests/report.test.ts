// The HTML run report: built from a fake run folder (tests/fake_run.ts), checked for its charts,
// embedded images, evaluation table, escaping, and the absence of any external URL.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { UserError } from "../src/errors.ts";
import { escapeHtml, lineChart, niceTicks, readRunDir, reportCommand, writeReport } from "../src/eval/report.ts";
import { writePng } from "../src/io/image.ts";
import { makeFakeRun } from "./fake_run.ts";

const root = mkdtempSync(join(tmpdir(), "rl4pix-report-"));
const run = join(root, "run");
let html = "";

beforeAll(async () => {
  mkdirSync(run);
  await makeFakeRun(run, { epochs: 12, imageSize: 16 });
  // an index entry that tries to leave its folder must not be embedded
  await writePng(join(root, "secret.png"), { width: 2, height: 2, channels: 1, data: new Float32Array([0, 1, 1, 0]) });
  const e = join(run, "samples", "epoch_5");
  mkdirSync(e);
  writeFileSync(join(e, "index.json"), JSON.stringify([{ id: "x", instruction: "escape", input: "../../../secret.png" }]));
  const out = writeReport(run);
  expect(out).toBe(join(run, "report.html"));
  html = readFileSync(out, "utf8");
});
afterAll(() => rmSync(root, { recursive: true, force: true }));

function svgs(): string[] {
  return [...html.matchAll(/<svg[\s\S]*?<\/svg>/g)].map((m) => m[0]);
}
function svgTitled(title: string): string {
  const s = svgs().find((x) => x.includes(`aria-label="${title}"`));
  expect(s).toBeDefined();
  return s!;
}
function points(svg: string): [number, number][][] {
  return [...svg.matchAll(/<polyline[^>]*points="([^"]*)"/g)].map((m) => m[1].split(" ").map((p) => p.split(",").map(Number) as [number, number]));
}

describe("report from a fake run", () => {
  test("is one self-contained file: no URL, script, link or external source", () => {
    expect(html.startsWith("<!DOCTYPE html>")).toBe(true);
    expect(html).not.toMatch(/https?:\/\//i);
    expect(html).not.toMatch(/<script|<link|@import|url\(/i);
    // every src is a data URI
    const srcs = [...html.matchAll(/\ssrc="([^"]*)"/g)].map((m) => m[1]);
    expect(srcs.length).toBeGreaterThan(0);
    for (const s of srcs) expect(s.startsWith("data:image/")).toBe(true);
    expect(html).not.toMatch(/\shref=/);
    // the config's URL-looking value is shown, escaped
    expect(html).toContain("https:&#47;&#47;example.invalid/model");
  });

  test("charts every numeric metric against epoch, reward and its parts together", () => {
    const titles = svgs().map((s) => /aria-label="([^"]*)"/.exec(s)![1]);
    expect(titles).toEqual(["reward (band: ± std)", "mae_mean", "approx_kl", "clipfrac", "loss", "lr", "grad_norm", "samples_per_s", "seconds"]);
    const reward = svgTitled("reward (band: ± std)");
    expect(points(reward).length).toBe(3);
    for (const name of ["reward_mean", "reward_cos_mean", "reward_clip_mean"]) expect(reward).toContain(`>${name}</text>`);
    expect(reward).toContain(`<polygon class="band"`);
    // axes with tick labels and the x label
    expect(reward).toMatch(/<line class="frame"/);
    expect(reward).toContain(">epoch</text>");
    expect(reward).toContain(">0.8</text>"); // rewards run from 0.22 to 0.74 (+ std 0.05)
    // a null value breaks the line in two
    expect(points(svgTitled("clipfrac")).map((p) => p.length)).toEqual([3, 8]);
  });

  test("a rising series is drawn left to right and upwards, over the whole plot width", () => {
    const [line] = points(svgTitled("grad_norm"));
    expect(line.length).toBe(12);
    for (let i = 1; i < line.length; i++) {
      expect(line[i][0]).toBeGreaterThan(line[i - 1][0]);
      expect(line[i][1]).toBeLessThan(line[i - 1][1]); // SVG y grows downwards
    }
    // equal steps in x and (for a linear series) in y
    const dx = line.map((p, i) => (i ? p[0] - line[i - 1][0] : 0)).slice(1);
    const dy = line.map((p, i) => (i ? p[1] - line[i - 1][1] : 0)).slice(1);
    for (const d of dx) expect(Math.abs(d - dx[0])).toBeLessThan(0.11);
    for (const d of dy) expect(Math.abs(d - dy[0])).toBeLessThan(0.11);
    expect(line[line.length - 1][0] - line[0][0]).toBeGreaterThan(250);
  });

  test("embeds every sample image as a PNG data URI, byte for byte", () => {
    const uris = [...html.matchAll(/src="data:image\/png;base64,([^"]*)"/g)].map((m) => m[1]);
    // 2 saved epochs × 2 samples × 4 images, one mask missing
    expect(uris.length).toBe(15);
    const file = readFileSync(join(run, "samples", "epoch_11", "s0_output.png"));
    expect(uris).toContain(file.toString("base64"));
    expect(html).toContain(`class="missing">missing</div>`);
    // the name leaving its folder is refused, not embedded
    const secret = readFileSync(join(root, "secret.png")).toString("base64");
    expect(uris).not.toContain(secret);
    expect(html).toContain("ignored image name");
    // epochs in numeric order, each with its samples' instruction, reward and cos
    const epochs = [...html.matchAll(/<summary>Epoch (\d+)/g)].map((m) => Number(m[1]));
    expect(epochs).toEqual([0, 5, 11]);
    expect(html).toContain("reward 0.6100"); // 0.5 + 0.01·11
    expect(html).toContain("cos 0.6600");
    for (const cap of ["input", "edited", "attention", "ground-truth mask"]) expect(html).toContain(`<figcaption>${cap}</figcaption>`);
  });

  test("escapes text", () => {
    expect(html).toContain("put a yellow &lt;box&gt; &amp; make it &quot;shine&quot;");
    expect(html).not.toContain("<box>");
  });

  test("renders the evaluation table in the paper's layout", () => {
    const table = /<table>[\s\S]*?<\/table>/.exec(html.slice(html.indexOf('id="eval"')))![0];
    const headers = [...table.matchAll(/<th>([^<]*)<\/th>/g)].map((m) => m[1]);
    expect(headers).toEqual(["Setting", "L1↓", "L2↓", "CLIP-T↑", "SSIM↑", "PSNR↑", "CLIP-I↑"]);
    const rows = [...table.matchAll(/<tr><td>([\s\S]*?)<\/tr>/g)].map((m) => [...m[0].matchAll(/<td>([^<]*)<\/td>/g)].map((c) => c[1]));
    expect(rows).toEqual([
      ["single-turn", "0.0608", "0.0189", "0.2391", "0.7978", "24.2575", "0.9123"],
      ["multi-turn", "0.0811", "0.0302", "—", "0.7012", "21.5000", "—"],
    ]);
    expect(html).toContain("n = 535");
  });

  test("lists what it skipped", () => {
    expect(html).toContain("metrics.jsonl: skipped 1 malformed line");
    expect(html).toContain(`${join("samples", "epoch_0", "missing_mask.png")}: image missing`);
  });
});

describe("partial and bad folders", () => {
  test("a folder with only a config gets a report without charts", () => {
    const d = join(root, "only-config");
    mkdirSync(d);
    writeFileSync(join(d, "config.json"), JSON.stringify({ seed: 1, train: { learning_rate: 0.001 } }));
    const out = reportCommand(d);
    const h = readFileSync(out, "utf8");
    expect(h).not.toContain("<svg");
    expect(h).toContain("train.learning_rate");
    expect(h).toContain(">0.001<");
  });

  test("reportCommand refuses what is not a run folder", () => {
    expect(() => reportCommand(join(root, "nope"))).toThrow(UserError);
    expect(() => reportCommand(join(root, "nope"))).toThrow(/no such folder/);
    const empty = join(root, "empty");
    mkdirSync(empty);
    expect(() => reportCommand(empty)).toThrow(/not a run folder/);
    expect(() => reportCommand(join(root, "secret.png"))).toThrow(/not a folder/);
  });

  test("malformed inputs are noted, not fatal", () => {
    const d = join(root, "broken");
    mkdirSync(join(d, "samples", "epoch_1"), { recursive: true });
    mkdirSync(join(d, "eval", "a"), { recursive: true });
    writeFileSync(join(d, "config.json"), "{ nope");
    writeFileSync(join(d, "samples", "epoch_1", "index.json"), JSON.stringify({ not: "a list" }));
    writeFileSync(join(d, "eval", "a", "results.json"), JSON.stringify({ n: 3 }));
    const input = readRunDir(d);
    expect(input.notes.length).toBe(3);
    const h = readFileSync(reportCommand(d), "utf8");
    expect(h).toContain("config.json: not valid JSON");
    expect(h).toContain("expected a list of samples");
    expect(h).toContain("no &quot;table&quot; list");
  });
});

describe("pieces", () => {
  test("niceTicks", () => {
    expect(niceTicks(0.17, 0.79, 4)).toEqual({ lo: 0, hi: 0.8, step: 0.2, ticks: [0, 0.2, 0.4, 0.6, 0.8] });
    expect(niceTicks(-0.01, 0.01, 4).ticks).toEqual([-0.01, -0.005, 0, 0.005, 0.01]);
    // a constant series still gets a range
    const c = niceTicks(2e-4, 2e-4, 4);
    expect(c.lo).toBeLessThan(2e-4);
    expect(c.hi).toBeGreaterThan(2e-4);
  });

  test("escapeHtml", () => {
    expect(escapeHtml(`<a href="x">'&'</a> http://h`)).toBe("&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt; http:&#47;&#47;h");
  });

  test("lineChart with no finite values says so", () => {
    const s = lineChart("loss", [{ name: "loss", xs: [0, 1], ys: [NaN, NaN] }]);
    expect(s).toContain("no values");
    expect(s).not.toContain("<polyline");
  });
});
