// State-dict key handling shared by the model loaders: the rename of old VAE attention keys, and the
// strict comparison of the keys/shapes a model expects with those a file provides.
import { UserError } from "../errors.ts";

const LEGACY_ATTENTION = /^(.*\.attentions\.\d+\.)(query|key|value|proj_attn)\.(weight|bias)$/;
const LEGACY_TO_CURRENT: Record<string, string> = { query: "to_q", key: "to_k", value: "to_v", proj_attn: "to_out.0" };

/**
 * The current diffusers name of an old-style attention key (as in the VAE files on the Hub):
 * `….attentions.N.query|key|value|proj_attn.(weight|bias)` -> `….attentions.N.to_q|to_k|to_v|to_out.0.…`.
 * Other keys are returned unchanged.
 */
export function remapLegacyAttentionKey(name: string): string {
  const m = LEGACY_ATTENTION.exec(name);
  return m ? `${m[1]}${LEGACY_TO_CURRENT[m[2]]}.${m[3]}` : name;
}

/**
 * Current name -> name in the file, for every key of a file. An old and a new spelling of the same
 * key in one file is a UserError naming the file.
 */
export function remapLegacyAttentionKeys(names: Iterable<string>, file: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const name of names) {
    const current = remapLegacyAttentionKey(name);
    const previous = out.get(current);
    if (previous !== undefined) {
      throw new UserError(`${file}: both '${previous}' and '${name}' map to '${current}'`);
    }
    out.set(current, name);
  }
  return out;
}

function shapeText(shape: readonly number[]): string {
  return `[${shape.join(",")}]`;
}

export interface StrictMatchReport {
  missing: { name: string; expected: readonly number[] }[];
  unexpected: { name: string; found: readonly number[] }[];
  misShaped: { name: string; expected: readonly number[]; found: readonly number[] }[];
}

/** Compare expected and found keys/shapes without throwing. */
export function compareStateDict(
  expected: ReadonlyMap<string, readonly number[]>,
  found: ReadonlyMap<string, readonly number[]>,
): StrictMatchReport {
  const report: StrictMatchReport = { missing: [], unexpected: [], misShaped: [] };
  for (const [name, shape] of expected) {
    const got = found.get(name);
    if (got === undefined) report.missing.push({ name, expected: shape });
    else if (got.length !== shape.length || got.some((d, i) => d !== shape[i])) {
      report.misShaped.push({ name, expected: shape, found: got });
    }
  }
  for (const [name, shape] of found) if (!expected.has(name)) report.unexpected.push({ name, found: shape });
  return report;
}

/**
 * Strict loading: every expected key present with the expected shape and nothing else. Otherwise a
 * UserError naming the file, each offending key and both shapes (the first `limit` problems).
 */
export function strictMatch(
  expected: ReadonlyMap<string, readonly number[]>,
  found: ReadonlyMap<string, readonly number[]>,
  file: string,
  limit = 8,
): void {
  const r = compareStateDict(expected, found);
  const problems = [
    ...r.misShaped.map((p) => `'${p.name}' has shape ${shapeText(p.found)} but the model expects ${shapeText(p.expected)}`),
    ...r.missing.map((p) => `missing '${p.name}' (expected shape ${shapeText(p.expected)})`),
    ...r.unexpected.map((p) => `unexpected '${p.name}' (shape ${shapeText(p.found)})`),
  ];
  if (problems.length === 0) return;
  const counts = [
    r.missing.length ? `${r.missing.length} missing` : "",
    r.unexpected.length ? `${r.unexpected.length} unexpected` : "",
    r.misShaped.length ? `${r.misShaped.length} mis-shaped` : "",
  ].filter(Boolean).join(", ");
  const shown = problems.slice(0, limit).join("; ");
  const more = problems.length > limit ? `; … and ${problems.length - limit} more` : "";
  throw new UserError(`${file}: weights do not match the model (${counts}): ${shown}${more}`);
}
