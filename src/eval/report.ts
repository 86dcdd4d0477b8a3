// The run report: one self-contained HTML file (`RUN_DIR/report.html`) with inline CSS, inline SVG
// charts and every image embedded as a data URI, so it can be mailed or archived alone. Nothing in it
// refers to anything outside the file (no scripts, fonts, style sheets or images from elsewhere).
//
// Inputs, all optional and read defensively (what is missing or malformed is skipped and listed in
// a "Notes" section at the end):
//   config.json                 the run's configuration (shown as a table of dotted keys)
//   metrics.jsonl               one JSON object per epoch; every numeric key is charted against
//                               `epoch` (the line number when absent); the reward and its parts share
//                               one chart, with ±reward_std as a band around reward_mean
//   samples/epoch_<E>/index.json
//                               [{id, instruction, reward, cos, input, output, attention, mask}],
//                               image names relative to that folder: one row per sample (input, edited
//                               output, attention overlay, ground-truth mask), as the paper's Fig. 3
//   eval/<name>/results.json    {settings, n, table: [{setting, L1, L2, CLIP-T, SSIM, PSNR, CLIP-I?}]}:
//                               a table in the paper's layout (Table 1)
import { Buffer } from "node:buffer";
import { existsSync, readFileSync, readdirSync, statSync } from "node:fs";
import { basename, join, relative, resolve, sep } from "node:path";
import { UserError } from "../errors.ts";
import { writeFileAtomic } from "../io/atomic.ts";

// ---------------------------------------------------------------------------------------------------
// Text

/**
 * Escape text for HTML content and attribute values. "://" is written as ":&#47;&#47;" (it displays
 * the same) so that no URL-looking text from a config or an instruction appears in the file literally.
 */
export function escapeHtml(s: string): string {
  return s
    .replace(/&/g, "&amp;")
    .replace(/</g, "&lt;")
    .replace(/>/g, "&gt;")
    .replace(/"/g, "&quot;")
    .replace(/'/g, "&#39;")
    .replace(/:\/\//g, ":&#47;&#47;");
}

const esc = escapeHtml;

function fmtValue(v: unknown): string {
  if (typeof v === "string") return JSON.stringify(v);
  if (v === null || v === undefined) return "null";
  if (typeof v === "object") return JSON.stringify(v);
  return String(v);
}

/** A number for tables: 4 decimals as the paper's tables, an em dash for missing values. */
function fmtMetric(v: unknown): string {
  if (typeof v !== "number" || !Number.isFinite(v)) return "—";
  return v.toFixed(4);
}

/** A short human form of a value (summary cards, tooltips). */
function fmtShort(v: number): string {
  if (!Number.isFinite(v)) return String(v);
  const a = Math.abs(v);
  if (a !== 0 && (a < 1e-3 || a >= 1e6)) return v.toExponential(3);
  return Number(v.toPrecision(5)).toString();
}

// ---------------------------------------------------------------------------------------------------
// Reading the run folder

export interface MetricSeries {
  key: string;
  /** x (epoch) and y values; y is NaN where the row lacks the key or holds null. */
  xs: number[];
  ys: number[];
}

export interface SampleEntry {
  id: string;
  instruction: string;
  reward: number | null;
  cos: number | null;
  images: { input: string | null; output: string | null; attention: string | null; mask: string | null };
}

export interface EvalResult {
  name: string;
  settings: Record<string, unknown> | null;
  n: number | null;
  table: Record<string, unknown>[];
}

export interface ReportInput {
  runDir: string;
  config: unknown;
  metrics: { x: number[]; series: MetricSeries[] };
  samples: { epoch: number; entries: SampleEntry[] }[];
  evals: EvalResult[];
  notes: string[];
}

function readText(path: string, notes: string[], what: string): string | null {
  if (!existsSync(path)) return null;
  try {
    return readFileSync(path, "utf8");
  } catch (e) {
    notes.push(`${what}: cannot read (${(e as Error).message})`);
    return null;
  }
}

function readJson(path: string, notes: string[], what: string): unknown {
  const text = readText(path, notes, what);
  if (text === null) return undefined;
  try {
    return JSON.parse(text);
  } catch (e) {
    notes.push(`${what}: not valid JSON (${(e as Error).message})`);
    return undefined;
  }
}

function isObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === "object" && !Array.isArray(v);
}

function readMetrics(runDir: string, notes: string[]): ReportInput["metrics"] {
  const text = readText(join(runDir, "metrics.jsonl"), notes, "metrics.jsonl");
  const rows: Record<string, unknown>[] = [];
  if (text !== null) {
    let bad = 0;
    for (const line of text.split("\n")) {
      if (line.trim() === "") continue;
      try {
        const row = JSON.parse(line);
        if (isObject(row)) rows.push(row);
        else bad++;
      } catch {
        bad++;
      }
    }
    if (bad) notes.push(`metrics.jsonl: skipped ${bad} malformed line${bad > 1 ? "s" : ""}`);
  }
  const x = rows.map((r, i) => (typeof r.epoch === "number" && Number.isFinite(r.epoch) ? r.epoch : i));
  const keys: string[] = [];
  for (const r of rows) {
    for (const [k, v] of Object.entries(r)) {
      if (k !== "epoch" && typeof v === "number" && !keys.includes(k)) keys.push(k);
    }
  }
  const series = keys.map((key) => ({
    key,
    xs: x,
    ys: rows.map((r) => (typeof r[key] === "number" && Number.isFinite(r[key]) ? (r[key] as number) : NaN)),
  }));
  return { x, series };
}

/** An image name from an index.json, resolved inside `folder` (names escaping it are refused). */
function imagePath(folder: string, name: unknown): string | null {
  if (typeof name !== "string" || name === "") return null;
  const full = resolve(folder, name);
  const rel = relative(resolve(folder), full);
  if (rel.startsWith("..") || rel.startsWith(sep) || resolve(folder, rel) !== full) return null;
  return full;
}

function readSamples(runDir: string, notes: string[]): ReportInput["samples"] {
  const root = join(runDir, "samples");
  let names: string[] = [];
  try {
    names = readdirSync(root);
  } catch {
    return [];
  }
  const out: ReportInput["samples"] = [];
  for (const name of names) {
    const m = /^epoch_(\d+)$/.exec(name);
    if (!m) continue;
    const folder = join(root, name);
    const index = readJson(join(folder, "index.json"), notes, `samples/${name}/index.json`);
    if (index === undefined) continue;
    if (!Array.isArray(index)) {
      notes.push(`samples/${name}/index.json: expected a list of samples`);
      continue;
    }
    const entries: SampleEntry[] = [];
    for (const e of index) {
      if (!isObject(e)) continue;
      const num = (v: unknown) => (typeof v === "number" && Number.isFinite(v) ? v : null);
      const img = (k: string) => {
        const p = imagePath(folder, e[k]);
        if (e[k] !== undefined && p === null) notes.push(`samples/${name}/index.json: ignored image name ${JSON.stringify(e[k])}`);
        return p;
      };
      entries.push({
        id: e.id === undefined || e.id === null ? "" : String(e.id),
        instruction: typeof e.instruction === "string" ? e.instruction : "",
        reward: num(e.reward),
        cos: num(e.cos),
        images: { input: img("input"), output: img("output"), attention: img("attention"), mask: img("mask") },
      });
    }
    out.push({ epoch: Number(m[1]), entries });
  }
  return out.sort((a, b) => a.epoch - b.epoch);
}

function readEvals(runDir: string, notes: string[]): EvalResult[] {
  const root = join(runDir, "eval");
  let names: string[] = [];
  try {
    names = readdirSync(root).sort();
  } catch {
    return [];
  }
  const out: EvalResult[] = [];
  for (const name of names) {
    const file = join(root, name, "results.json");
    if (!existsSync(file)) continue;
    const json = readJson(file, notes, `eval/${name}/results.json`);
    if (json === undefined) continue;
    if (!isObject(json) || !Array.isArray(json.table)) {
      notes.push(`eval/${name}/results.json: no "table" list`);
      continue;
    }
    out.push({
      name,
      settings: isObject(json.settings) ? json.settings : null,
      n: typeof json.n === "number" ? json.n : null,
      table: json.table.filter(isObject),
    });
  }
  return out;
}

/** Gather everything the report shows from a run folder (missing parts are empty). */
export function readRunDir(runDir: string): ReportInput {
  const notes: string[] = [];
  const config = readJson(join(runDir, "config.json"), notes, "config.json");
  return {
    runDir,
    config: config === undefined ? null : config,
    metrics: readMetrics(runDir, notes),
    samples: readSamples(runDir, notes),
    evals: readEvals(runDir, notes),
    notes,
  };
}

// ---------------------------------------------------------------------------------------------------
// Images

/** Width and height from a PNG's IHDR chunk (null when the bytes are not a PNG). */
function pngSize(b: Uint8Array): [number, number] | null {
  const sig = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];
  if (b.length < 24 || !sig.every((x, i) => b[i] === x)) return null;
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  return [v.getUint32(16), v.getUint32(20)];
}

function embedImage(path: string | null, alt: string, notes: string[], runDir: string): string {
  if (path === null) return `<div class="missing">no image</div>`;
  let bytes: Uint8Array;
  try {
    bytes = readFileSync(path);
  } catch {
    notes.push(`${relative(runDir, path)}: image missing`);
    return `<div class="missing">missing</div>`;
  }
  const size = pngSize(bytes);
  const isJpeg = bytes.length > 3 && bytes[0] === 0xff && bytes[1] === 0xd8 && bytes[2] === 0xff;
  if (!size && !isJpeg) {
    notes.push(`${relative(runDir, path)}: not a PNG or JPEG image`);
    return `<div class="missing">not an image</div>`;
  }
  const mime = size ? "image/png" : "image/jpeg";
  const b64 = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("base64");
  // small images (the tiny model's 64 px) are enlarged without blurring
  const cls = size && Math.max(size[0], size[1]) < 192 ? ` class="px"` : "";
  return `<img${cls} alt="${esc(alt)}" src="data:${mime};base64,${b64}">`;
}

// ---------------------------------------------------------------------------------------------------
// Charts

const PALETTE = ["#1f6feb", "#d4582a", "#2e9e5b", "#8a4fd3", "#c9a227", "#c23b7a"];

/** Round tick positions covering [lo, hi]: about `count` steps of 1, 2 or 5 × 10^k. */
export function niceTicks(lo: number, hi: number, count = 4): { lo: number; hi: number; step: number; ticks: number[] } {
  if (!(hi > lo)) {
    const pad = lo === 0 ? 1 : Math.abs(lo) * 0.1;
    lo -= pad;
    hi += pad;
  }
  const raw = (hi - lo) / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const f = raw / mag;
  const step = (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * mag;
  const start = Math.floor(lo / step + 1e-9);
  const end = Math.ceil(hi / step - 1e-9);
  const ticks: number[] = [];
  for (let i = start; i <= end; i++) ticks.push(Number((i * step).toPrecision(12)));
  return { lo: start * step, hi: end * step, step, ticks };
}

function tickLabel(v: number, step: number): string {
  if (v === 0) return "0";
  const a = Math.max(Math.abs(v), step);
  if (a < 1e-3 || a >= 1e6) return v.toExponential(Math.max(0, Math.min(3, Math.ceil(-Math.log10(step / a) - 1e-9))));
  const decimals = Math.max(0, Math.ceil(-Math.log10(step) - 1e-9));
  return v.toFixed(Math.min(decimals, 8));
}

interface ChartSeries {
  name: string;
  xs: number[];
  ys: number[];
  /** Half-width of a shaded band around the line (e.g. a std), same length as ys. */
  band?: number[];
}

/** A line chart as inline SVG with axes, ticks, labels, a legend and hover titles on the points. */
export function lineChart(title: string, series: ChartSeries[], xLabel = "epoch"): string {
  const W = 380;
  const L = 58;
  const R = 12;
  const B = 40;
  // legend rows (only when several series share the chart), laid out above the plot
  const legend: { name: string; x: number; row: number; color: string }[] = [];
  if (series.length > 1 || (series.length === 1 && series[0].name !== title)) {
    let lx = L;
    let row = 0;
    series.forEach((s, si) => {
      const w = 26 + s.name.length * 6.3;
      if (lx + w > W - R && lx > L) {
        lx = L;
        row++;
      }
      legend.push({ name: s.name, x: lx, row, color: PALETTE[si % PALETTE.length] });
      lx += w;
    });
  }
  const legendRows = legend.length ? legend[legend.length - 1].row + 1 : 0;
  const T = 30 + legendRows * 13;
  const H = 222; // every chart the same height; a legend takes room from the plot
  let xmin = Infinity;
  let xmax = -Infinity;
  let ymin = Infinity;
  let ymax = -Infinity;
  for (const s of series) {
    s.ys.forEach((y, i) => {
      if (!Number.isFinite(y)) return;
      const x = s.xs[i];
      xmin = Math.min(xmin, x);
      xmax = Math.max(xmax, x);
      const b = s.band && Number.isFinite(s.band[i]) ? s.band[i] : 0;
      ymin = Math.min(ymin, y - b);
      ymax = Math.max(ymax, y + b);
    });
  }
  const parts: string[] = [];
  parts.push(`<svg class="chart" viewBox="0 0 ${W} ${H}" role="img" aria-label="${esc(title)}">`);
  parts.push(`<text class="ctitle" x="${L}" y="16">${esc(title)}</text>`);
  if (!Number.isFinite(xmin)) {
    parts.push(`<text class="axis" x="${W / 2}" y="${H / 2}" text-anchor="middle">no values</text></svg>`);
    return parts.join("");
  }
  // x: the data's range exactly (padded when there is one x), ticks inside it
  if (xmax === xmin) {
    xmin -= 1;
    xmax += 1;
  }
  const xt = niceTicks(xmin, xmax, 5);
  if (xt.step < 1 && series.every((s) => s.xs.every(Number.isInteger))) xt.step = 1; // integer epochs
  xt.lo = xmin;
  xt.hi = xmax;
  xt.ticks = [];
  for (let i = Math.ceil(xmin / xt.step - 1e-9); i * xt.step <= xmax + 1e-9 * xt.step; i++) xt.ticks.push(Number((i * xt.step).toPrecision(12)));
  const yt = niceTicks(ymin, ymax, 4);
  const px = (x: number) => L + ((x - xt.lo) / (xt.hi - xt.lo)) * (W - L - R);
  const py = (y: number) => H - B - ((y - yt.lo) / (yt.hi - yt.lo)) * (H - T - B);
  const f = (v: number) => v.toFixed(1);
  // grid and ticks
  for (const t of yt.ticks) {
    parts.push(`<line class="grid" x1="${L}" x2="${W - R}" y1="${f(py(t))}" y2="${f(py(t))}"/>`);
    parts.push(`<text class="axis" x="${L - 6}" y="${f(py(t) + 3.5)}" text-anchor="end">${esc(tickLabel(t, yt.step))}</text>`);
  }
  for (const t of xt.ticks) {
    parts.push(`<line class="tick" x1="${f(px(t))}" x2="${f(px(t))}" y1="${H - B}" y2="${H - B + 4}"/>`);
    parts.push(`<text class="axis" x="${f(px(t))}" y="${H - B + 16}" text-anchor="middle">${esc(tickLabel(t, xt.step))}</text>`);
  }
  parts.push(`<line class="frame" x1="${L}" x2="${L}" y1="${T - 4}" y2="${H - B}"/>`);
  parts.push(`<line class="frame" x1="${L}" x2="${W - R}" y1="${H - B}" y2="${H - B}"/>`);
  parts.push(`<text class="axis" x="${(L + W - R) / 2}" y="${H - 6}" text-anchor="middle">${esc(xLabel)}</text>`);
  // series
  series.forEach((s, si) => {
    const color = PALETTE[si % PALETTE.length];
    // runs of finite values (missing values break the line)
    const runs: number[][] = [];
    let cur: number[] = [];
    s.ys.forEach((y, i) => {
      if (Number.isFinite(y)) cur.push(i);
      else if (cur.length) {
        runs.push(cur);
        cur = [];
      }
    });
    if (cur.length) runs.push(cur);
    if (s.band) {
      const band = s.band;
      for (const run of runs) {
        const upper = run.map((i) => `${f(px(s.xs[i]))},${f(py(s.ys[i] + (Number.isFinite(band[i]) ? band[i] : 0)))}`);
        const lower = run.map((i) => `${f(px(s.xs[i]))},${f(py(s.ys[i] - (Number.isFinite(band[i]) ? band[i] : 0)))}`).reverse();
        parts.push(`<polygon class="band" fill="${color}" points="${[...upper, ...lower].join(" ")}"/>`);
      }
    }
    for (const run of runs) {
      const pts = run.map((i) => `${f(px(s.xs[i]))},${f(py(s.ys[i]))}`).join(" ");
      parts.push(`<polyline fill="none" stroke="${color}" stroke-width="1.8" points="${pts}"/>`);
    }
    const few = s.ys.filter(Number.isFinite).length <= 40;
    s.ys.forEach((y, i) => {
      if (!Number.isFinite(y)) return;
      const r = few ? 2.4 : 0; // many points: hover targets only
      parts.push(
        `<circle cx="${f(px(s.xs[i]))}" cy="${f(py(y))}" r="${r || 3}" fill="${color}"${r ? "" : ` fill-opacity="0"`}>` +
          `<title>${esc(`${s.name} @ ${xLabel} ${s.xs[i]}: ${fmtShort(y)}`)}</title></circle>`,
      );
    });
  });
  for (const item of legend) {
    const y = 30 + item.row * 13;
    parts.push(`<rect x="${f(item.x)}" y="${f(y - 6)}" width="11" height="3" fill="${item.color}"/>`);
    parts.push(`<text class="legend" x="${f(item.x + 14)}" y="${f(y - 1.5)}">${esc(item.name)}</text>`);
  }
  parts.push("</svg>");
  return parts.join("");
}

/** Group metric keys into charts: the reward with its parts (and its std as a band), then one per key. */
function metricCharts(m: ReportInput["metrics"]): string[] {
  const byKey = new Map(m.series.map((s) => [s.key, s]));
  const used = new Set<string>();
  const charts: string[] = [];
  const rewardKeys = m.series.map((s) => s.key).filter((k) => /^reward(_|$)/.test(k) && !/_std$/.test(k));
  // the reward's own std is drawn as a band around it
  const stdFor = (k: string) => byKey.get(k.replace(/_mean$/, "") + "_std");
  if (rewardKeys.length) {
    const series: ChartSeries[] = rewardKeys.map((k) => {
      const s = byKey.get(k)!;
      used.add(k);
      const std = stdFor(k);
      if (std) used.add(std.key);
      return { name: k, xs: s.xs, ys: s.ys, band: std?.ys };
    });
    const hasBand = series.some((s) => s.band);
    charts.push(lineChart(hasBand ? "reward (band: ± std)" : "reward", series));
  }
  for (const s of m.series) {
    if (used.has(s.key)) continue;
    charts.push(lineChart(s.key, [{ name: s.key, xs: s.xs, ys: s.ys }]));
  }
  return charts;
}

// ---------------------------------------------------------------------------------------------------
// HTML

const CSS = `
:root { color-scheme: light; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; color: #1d2330; background: #f4f5f7; }
header { background: #1d2330; color: #fff; padding: 18px 28px; }
header h1 { margin: 0 0 4px; font-size: 22px; font-weight: 600; }
header .sub { color: #b9c0cc; font-size: 13px; word-break: break-all; }
main { padding: 8px 28px 40px; max-width: 1500px; }
section { margin-top: 22px; }
h2 { font-size: 17px; margin: 0 0 10px; border-bottom: 1px solid #d5d9e0; padding-bottom: 4px; }
h3 { font-size: 15px; margin: 14px 0 8px; }
.cards { display: flex; flex-wrap: wrap; gap: 10px; }
.card { background: #fff; border: 1px solid #dde1e7; border-radius: 6px; padding: 8px 14px; min-width: 130px; }
.card .k { color: #5b6475; font-size: 12px; }
.card .v { font-size: 18px; font-weight: 600; font-variant-numeric: tabular-nums; }
.charts { display: grid; grid-template-columns: repeat(auto-fill, minmax(330px, 1fr)); gap: 12px; }
.chart { width: 100%; height: auto; background: #fff; border: 1px solid #dde1e7; border-radius: 6px; }
.chart .ctitle { font-size: 13px; font-weight: 600; fill: #1d2330; }
.chart .axis { font-size: 10.5px; fill: #5b6475; font-variant-numeric: tabular-nums; }
.chart .legend { font-size: 10.5px; fill: #1d2330; }
.chart .grid { stroke: #eceef2; stroke-width: 1; }
.chart .frame, .chart .tick { stroke: #8a92a3; stroke-width: 1; }
.chart .band { opacity: 0.15; stroke: none; }
table { border-collapse: collapse; background: #fff; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #dde1e7; padding: 4px 10px; text-align: right; }
th { background: #eef0f4; font-weight: 600; }
td:first-child, th:first-child { text-align: left; }
.config { columns: 3 300px; column-gap: 24px; background: #fff; border: 1px solid #dde1e7; border-radius: 6px; padding: 10px 14px; font-size: 12.5px; }
.config div { break-inside: avoid; display: flex; justify-content: space-between; gap: 10px; border-bottom: 1px dotted #e3e6eb; padding: 1px 0; }
.config .ck { color: #5b6475; }
.config .cv { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; word-break: break-all; text-align: right; }
details > summary { cursor: pointer; font-weight: 600; margin: 10px 0 6px; }
.sample { background: #fff; border: 1px solid #dde1e7; border-radius: 6px; padding: 8px 10px; margin-bottom: 10px; }
.sample .cap { margin-bottom: 6px; }
.sample .instr { font-weight: 600; }
.sample .meta { color: #5b6475; font-size: 12.5px; margin-left: 8px; font-variant-numeric: tabular-nums; }
.imgs { display: grid; grid-template-columns: repeat(4, minmax(0, 200px)); gap: 8px; }
figure { margin: 0; }
figure img, figure .missing { width: 100%; aspect-ratio: 1 / 1; object-fit: contain; background: #e9ebef; border-radius: 3px; display: block; }
figure img.px { image-rendering: pixelated; }
figure .missing { display: flex; align-items: center; justify-content: center; color: #8a92a3; font-size: 12px; }
figcaption { font-size: 12px; color: #5b6475; text-align: center; margin-top: 2px; }
.settings { color: #5b6475; font-size: 12.5px; margin: 4px 0 8px; }
.notes { color: #8a4b00; font-size: 12.5px; }
.empty { color: #8a92a3; font-style: italic; }
`;

function flatten(v: unknown, prefix: string, out: [string, unknown][]): void {
  if (isObject(v)) {
    for (const [k, w] of Object.entries(v)) {
      if (k === "_comment") continue;
      flatten(w, prefix ? `${prefix}.${k}` : k, out);
    }
  } else {
    out.push([prefix, v]);
  }
}

function configSection(config: unknown): string {
  if (config === null) return "";
  const rows: [string, unknown][] = [];
  flatten(config, "", rows);
  const body = rows.map(([k, v]) => `<div><span class="ck">${esc(k)}</span><span class="cv">${esc(fmtValue(v))}</span></div>`).join("");
  return `<section id="config"><h2>Configuration</h2><div class="config">${body || `<span class="empty">empty</span>`}</div></section>`;
}

function summarySection(input: ReportInput): string {
  const m = input.metrics;
  if (m.x.length === 0) return "";
  const cards: [string, string][] = [["epochs logged", String(m.x.length)], ["last epoch", String(m.x[m.x.length - 1])]];
  const get = (k: string) => m.series.find((s) => s.key === k);
  const reward = get("reward_mean") ?? get("reward");
  if (reward) {
    const finite = reward.ys.map((y, i) => [y, reward.xs[i]] as const).filter(([y]) => Number.isFinite(y));
    if (finite.length) {
      cards.push([`${reward.key} (first)`, fmtShort(finite[0][0])]);
      cards.push([`${reward.key} (last)`, fmtShort(finite[finite.length - 1][0])]);
      const best = finite.reduce((a, b) => (b[0] > a[0] ? b : a));
      cards.push([`best ${reward.key}`, `${fmtShort(best[0])} @ ${best[1]}`]);
    }
  }
  const seconds = get("seconds");
  if (seconds) {
    const total = seconds.ys.filter(Number.isFinite).reduce((a, b) => a + b, 0);
    cards.push(["training time", total >= 3600 ? `${(total / 3600).toFixed(2)} h` : total >= 60 ? `${(total / 60).toFixed(1)} min` : `${total.toFixed(1)} s`]);
  }
  const body = cards.map(([k, v]) => `<div class="card"><div class="k">${esc(k)}</div><div class="v">${esc(v)}</div></div>`).join("");
  return `<section id="summary"><h2>Summary</h2><div class="cards">${body}</div></section>`;
}

function metricsSection(input: ReportInput): string {
  if (input.metrics.series.length === 0) return "";
  return `<section id="metrics"><h2>Training metrics</h2><div class="charts">${metricCharts(input.metrics).join("")}</div></section>`;
}

function samplesSection(input: ReportInput, notes: string[]): string {
  if (input.samples.length === 0) return "";
  // the first and the last saved epoch are open, to compare the start with the end
  const first = input.samples[0].epoch;
  const last = input.samples[input.samples.length - 1].epoch;
  const parts: string[] = [`<section id="samples"><h2>Samples</h2>`];
  for (const { epoch, entries } of input.samples) {
    parts.push(`<details${epoch === last || epoch === first ? " open" : ""}><summary>Epoch ${epoch} (${entries.length} sample${entries.length === 1 ? "" : "s"})</summary>`);
    if (entries.length === 0) parts.push(`<p class="empty">no samples</p>`);
    for (const e of entries) {
      const meta: string[] = [];
      if (e.id) meta.push(`id ${e.id}`);
      if (e.reward !== null) meta.push(`reward ${e.reward.toFixed(4)}`);
      if (e.cos !== null) meta.push(`cos ${e.cos.toFixed(4)}`);
      const fig = (p: string | null, cap: string) => `<figure>${embedImage(p, `${cap}: ${e.instruction}`, notes, input.runDir)}<figcaption>${esc(cap)}</figcaption></figure>`;
      parts.push(
        `<div class="sample"><div class="cap"><span class="instr">${esc(e.instruction ? `“${e.instruction}”` : "(no instruction)")}</span>` +
          `<span class="meta">${esc(meta.join(" · "))}</span></div><div class="imgs">` +
          fig(e.images.input, "input") +
          fig(e.images.output, "edited") +
          fig(e.images.attention, "attention") +
          fig(e.images.mask, "ground-truth mask") +
          `</div></div>`,
      );
    }
    parts.push(`</details>`);
  }
  parts.push(`</section>`);
  return parts.join("");
}

const EVAL_COLUMNS: [string, string][] = [
  ["L1", "L1↓"],
  ["L2", "L2↓"],
  ["CLIP-T", "CLIP-T↑"],
  ["SSIM", "SSIM↑"],
  ["PSNR", "PSNR↑"],
  ["CLIP-I", "CLIP-I↑"],
  ["DINO", "DINO↑"],
];
/** Columns shown only when some row has them. */
const OPTIONAL_COLUMNS = new Set(["CLIP-I", "DINO"]);

function evalSection(input: ReportInput): string {
  if (input.evals.length === 0) return "";
  const parts: string[] = [`<section id="eval"><h2>Evaluation</h2>`];
  for (const ev of input.evals) {
    const cols = EVAL_COLUMNS.filter(([k]) => !OPTIONAL_COLUMNS.has(k) || ev.table.some((r) => k in r));
    parts.push(`<h3>${esc(ev.name)}</h3>`);
    const settings: string[] = [];
    if (ev.n !== null) settings.push(`n = ${ev.n}`);
    if (ev.settings) for (const [k, v] of Object.entries(ev.settings)) settings.push(`${k}: ${fmtValue(v)}`);
    if (settings.length) parts.push(`<div class="settings">${esc(settings.join(" · "))}</div>`);
    parts.push(`<table><thead><tr><th>Setting</th>${cols.map(([, h]) => `<th>${esc(h)}</th>`).join("")}</tr></thead><tbody>`);
    for (const row of ev.table) {
      const name = row.setting === undefined ? "" : String(row.setting);
      parts.push(`<tr><td>${esc(name)}</td>${cols.map(([k]) => `<td>${esc(fmtMetric(row[k]))}</td>`).join("")}</tr>`);
    }
    parts.push(`</tbody></table>`);
  }
  parts.push(`</section>`);
  return parts.join("");
}

/** The report's HTML for gathered inputs. Images are read (and embedded) here. */
export function buildReportHtml(input: ReportInput, generatedAt = new Date()): string {
  const notes = [...input.notes];
  const body = [summarySection(input), metricsSection(input), samplesSection(input, notes), evalSection(input), configSection(input.config)].filter(Boolean);
  if (body.length === 0) body.push(`<section><p class="empty">Nothing to show yet: no config.json, metrics.jsonl, samples/ or eval/ results in this folder.</p></section>`);
  if (notes.length) {
    body.push(`<section id="notes"><h2>Notes</h2><ul class="notes">${notes.map((n) => `<li>${esc(n)}</li>`).join("")}</ul></section>`);
  }
  const title = `rl4pix report: ${basename(resolve(input.runDir))}`;
  return [
    `<!DOCTYPE html>`,
    `<html lang="en"><head><meta charset="utf-8">`,
    `<meta name="viewport" content="width=device-width, initial-scale=1">`,
    `<title>${esc(title)}</title>`,
    `<style>${CSS}</style></head><body>`,
    `<header><h1>${esc(title)}</h1><div class="sub">${esc(resolve(input.runDir))} · generated ${esc(generatedAt.toISOString().replace("T", " ").slice(0, 19))} UTC</div></header>`,
    `<main>${body.join("\n")}</main>`,
    `</body></html>`,
    ``,
  ].join("\n");
}

/** Write `runDir/report.html` from whatever the run folder holds; returns its path. */
export function writeReport(runDir: string): string {
  const html = buildReportHtml(readRunDir(runDir));
  const out = join(runDir, "report.html");
  writeFileAtomic(out, html);
  return out;
}

/** `rl4pix report RUN_DIR`: check the folder, write the report, return the path written. */
export function reportCommand(runDir: string): string {
  let st;
  try {
    st = statSync(runDir);
  } catch {
    throw new UserError(`${runDir}: no such folder`);
  }
  if (!st.isDirectory()) throw new UserError(`${runDir}: not a folder (expected a run folder)`);
  const known = ["config.json", "metrics.jsonl", "samples", "eval"];
  if (!known.some((k) => existsSync(join(runDir, k)))) {
    throw new UserError(`${runDir}: not a run folder (none of ${known.join(", ")} found)`);
  }
  return writeReport(runDir);
}
