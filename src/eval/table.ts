// The evaluation table (the paper's Table 1 layout: L1↓ L2↓ CLIP-T↑ SSIM↑ PSNR↑, then CLIP-I↑):
// per-setting averages of per-sample metrics, and their text rendering.
//
// Averages are plain means over the setting's samples. Two choices:
//  - PSNR is Infinity for a pair of identical images (scikit-image's value). Averaging it would make
//    the whole mean Infinity, so the table's PSNR is the mean over the finite values and the row's
//    `PSNR_infinite` counts the identical pairs left out (PSNR is null when every pair is identical).
//    In per-sample records an infinite PSNR is written as the string "Infinity" (JSON has no
//    Infinity; `Number("Infinity")` reads it back).
//  - CLIP-T is averaged over the samples that have a caption (`captioned` counts them); CLIP-T and
//    CLIP-I are null when no CLIP model was given (or no sample has a caption).

export type SettingName = "single-turn" | "multi-turn";

/** One evaluated (setting, sample) pair, as written to results.json's `per_sample`. */
export interface SampleRecord {
  setting: SettingName;
  id: string;
  img_id: string;
  turn: number;
  turns: number;
  instruction: string;
  caption: string | null;
  /** The generated image, relative to the output folder. */
  output: string;
  /** The ground truth (file path or dataset reference). */
  target: string;
  L1: number;
  L2: number;
  /** A number, or "Infinity" for identical images. */
  PSNR: number | "Infinity";
  SSIM: number;
  "CLIP-T": number | null;
  "CLIP-I": number | null;
  /** cos(a_pred, a_gt), the paper's reward term; null without a mask or an attention file. */
  attention_cos: number | null;
  /** cos(constant map, a_gt): what a map with no grounding scores. */
  attention_cos_uniform: number | null;
}

export interface TableRow {
  setting: SettingName;
  L1: number | null;
  L2: number | null;
  "CLIP-T": number | null;
  SSIM: number | null;
  PSNR: number | null;
  "CLIP-I": number | null;
  /** Means over the samples with an attention score (`attention_n`). */
  attention_cos: number | null;
  attention_cos_uniform: number | null;
  attention_n: number;
  n: number;
  /** Pairs with infinite PSNR (identical images), left out of the PSNR mean. */
  PSNR_infinite: number;
  /** Samples with a caption (the CLIP-T mean's count). */
  captioned: number;
}

function mean(xs: readonly number[]): number | null {
  if (xs.length === 0) return null;
  let s = 0;
  for (const x of xs) s += x;
  return s / xs.length;
}

/** The PSNR value of a record as a number (Infinity for "Infinity"). */
export function psnrValue(r: Pick<SampleRecord, "PSNR">): number {
  return r.PSNR === "Infinity" ? Infinity : r.PSNR;
}

/** JSON-safe PSNR: finite numbers as they are, +Infinity as "Infinity". */
export function psnrJson(v: number): number | "Infinity" {
  if (v === Infinity) return "Infinity";
  if (!Number.isFinite(v)) throw new Error(`psnrJson: PSNR ${v} is not a number or +Infinity`);
  return v;
}

/** The row of one setting from its sample records. */
export function summarise(setting: SettingName, records: readonly SampleRecord[]): TableRow {
  const rs = records.filter((r) => r.setting === setting);
  const psnr = rs.map(psnrValue);
  const finite = psnr.filter((v) => Number.isFinite(v));
  const clipT = rs.map((r) => r["CLIP-T"]).filter((v): v is number => v !== null);
  const clipI = rs.map((r) => r["CLIP-I"]).filter((v): v is number => v !== null);
  const withAttention = rs.filter((r) => r.attention_cos != null && r.attention_cos_uniform != null);
  return {
    setting,
    L1: mean(rs.map((r) => r.L1)),
    L2: mean(rs.map((r) => r.L2)),
    "CLIP-T": mean(clipT),
    SSIM: mean(rs.map((r) => r.SSIM)),
    PSNR: mean(finite),
    "CLIP-I": mean(clipI),
    attention_cos: mean(withAttention.map((r) => r.attention_cos!)),
    attention_cos_uniform: mean(withAttention.map((r) => r.attention_cos_uniform!)),
    attention_n: withAttention.length,
    n: rs.length,
    PSNR_infinite: psnr.length - finite.length,
    captioned: rs.filter((r) => r.caption !== null).length,
  };
}

const COLUMNS: [keyof TableRow, string][] = [
  ["L1", "L1↓"],
  ["L2", "L2↓"],
  ["CLIP-T", "CLIP-T↑"],
  ["SSIM", "SSIM↑"],
  ["PSNR", "PSNR↑"],
  ["CLIP-I", "CLIP-I↑"],
  ["attention_cos", "attn cos↑"],
  ["attention_cos_uniform", "uniform"],
];

function fmt(v: unknown): string {
  return typeof v === "number" && Number.isFinite(v) ? v.toFixed(4) : "—";
}

/** The table as aligned text: a header line, then one line per setting (4 decimals, — for missing). */
export function formatTable(rows: readonly TableRow[]): string {
  const head = ["Setting", ...COLUMNS.map(([, h]) => h), "n"];
  const body = rows.map((r) => [r.setting, ...COLUMNS.map(([k]) => fmt(r[k])), String(r.n)]);
  const widths = head.map((h, i) => Math.max([...h].length, ...body.map((b) => [...b[i]].length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join("  ");
  const out = [line(head), ...body.map(line)];
  const notes: string[] = [];
  for (const r of rows) {
    if (r.PSNR_infinite > 0) notes.push(`${r.setting}: ${r.PSNR_infinite} identical pair(s) (PSNR = ∞) left out of the PSNR mean`);
    if (r.attention_cos !== null && r.attention_n < r.n) notes.push(`${r.setting}: attention cosine over the ${r.attention_n} of ${r.n} samples with a mask and an attention map`);
    if (r["CLIP-T"] !== null && r.captioned < r.n) notes.push(`${r.setting}: CLIP-T over the ${r.captioned} of ${r.n} samples with a caption`);
  }
  return [...out, ...notes.map((n) => `note: ${n}`)].join("\n");
}
