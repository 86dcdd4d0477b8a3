// A small CLIP-style byte-level BPE vocabulary built from a word list, in the files of a CLIP
// tokenizer folder (what transformers' CLIPTokenizer reads):
//   vocab.json    the 256 byte stand-in symbols, the same 256 with "</w>", one entry per merge (the
//                 concatenation of its two sides), then <|startoftext|> and <|endoftext|>;
//   merges.txt    "#version: 0.2", then one "left right" merge per line, in priority order;
//   special_tokens_map.json, tokenizer_config.json  (bos/eos/pad/unk as CLIP's, model_max_length 77).
// Merges are chosen so that every vocabulary word becomes ONE token under the BPE algorithm; words
// outside the vocabulary still tokenize, into whatever merges apply and single byte symbols.
//
// Construction: words are taken one by one (sorted). A word is segmented with the merges made so far;
// while it is more than one piece, the merge of its first two pieces is appended (lowest priority) and
// the word is segmented again. A new merge ranks below every earlier one, so it can only act on a word
// once no earlier merge applies: words already finished (one piece, no pairs left) are unaffected, and
// each round shortens the current word, so the loop ends with every word a single token.
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { writeFileAtomic } from "../io/atomic.ts";
import { SYNTH_VOCABULARY } from "../data/synth.ts";
import { BYTE_TO_CHAR, bytesToSymbols } from "./byte_unicode.ts";
import { fixText } from "./ftfy.ts";
import { applyBpe } from "./clip_tokenizer.ts";

export const BOS_TOKEN = "<|startoftext|>";
export const EOS_TOKEN = "<|endoftext|>";
const WORD_END = "</w>";
/** CLIP's maximum number of merges read from merges.txt (see clip_tokenizer.ts). */
const CLIP_MERGE_LIMIT = 49152 - 256 - 2;

export interface BpeVocabulary {
  /** token -> id, in id order (byte symbols, byte symbols + "</w>", merges, bos, eos). */
  vocab: Map<string, number>;
  /** "left right" merge rules in priority order. */
  merges: string[];
  /** The normalised words that are single tokens, in construction order. */
  words: string[];
}

// CLIP's pre-tokenisation pattern (contractions, letter runs, single digits, other non-space runs).
const PIECES = /'s|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}|[^\s\p{L}\p{N}]+/giu;

/**
 * The pieces CLIP's tokenizer would make of `text` (ftfy, whitespace clean, lower case, CLIP's
 * pattern), without the special tokens. A vocabulary "word" like "don't" gives "don" and "'t".
 */
export function wordPieces(text: string): string[] {
  const clean = fixText(text).replace(/\s+/gu, " ").trim().toLowerCase();
  const out: string[] = [];
  for (const m of clean.matchAll(PIECES)) {
    if (m[0] === BOS_TOKEN || m[0] === EOS_TOKEN) continue;
    out.push(m[0]);
  }
  return out;
}

/** The words of the default tokenizer: the synthetic instruction vocabulary plus `extra`, as pieces. */
export function tokenizerWords(extra: readonly string[] = [], includeSynthetic = true): string[] {
  const set = new Set<string>();
  for (const w of [...(includeSynthetic ? SYNTH_VOCABULARY : []), ...extra]) for (const p of wordPieces(w)) set.add(p);
  return [...set].sort(compareCodePoints);
}

/** Order by Unicode code points (Python's string order), not UTF-16 units. */
export function compareCodePoints(a: string, b: string): number {
  const x = [...a];
  const y = [...b];
  for (let i = 0; i < Math.min(x.length, y.length); i++) {
    const d = x[i].codePointAt(0)! - y[i].codePointAt(0)!;
    if (d !== 0) return d;
  }
  return x.length - y.length;
}

/** The 256 byte stand-in symbols in CLIP's vocabulary order: printable bytes first, then the rest. */
export function byteSymbolsInVocabOrder(): string[] {
  const printable: string[] = [];
  const other: string[] = [];
  for (let b = 0; b < 256; b++) (BYTE_TO_CHAR[b].codePointAt(0)! < 0x100 ? printable : other).push(BYTE_TO_CHAR[b]);
  return [...printable, ...other];
}


/** Build the vocabulary and merges that make each of `words` (already normalised pieces) one token. */
export function buildBpeVocabulary(words: readonly string[]): BpeVocabulary {
  const unique = [...new Set(words)].filter((w) => w.length > 0);
  const merges: string[] = [];
  const ranks = new Map<string, number>();
  for (const w of unique) {
    const symbols = bytesToSymbols(w);
    let seg = applyBpe(symbols, ranks);
    while (seg.length > 1) {
      const rule = `${seg[0]} ${seg[1]}`;
      // A pair still present after BPE is never an existing rule (BPE would have merged it).
      if (ranks.has(rule)) throw new Error(`buildBpeVocabulary: merge '${rule}' already exists but did not apply to '${w}'`);
      ranks.set(rule, merges.length);
      merges.push(rule);
      seg = applyBpe(symbols, ranks);
    }
  }
  if (merges.length > CLIP_MERGE_LIMIT) {
    throw new Error(`buildBpeVocabulary: ${merges.length} merges exceed CLIP's limit of ${CLIP_MERGE_LIMIT}`);
  }
  const vocab = new Map<string, number>();
  const add = (tok: string) => {
    // Two merges can concatenate to the same string; it is one token (one id) either way.
    if (!vocab.has(tok)) vocab.set(tok, vocab.size);
  };
  const bytes = byteSymbolsInVocabOrder();
  for (const s of bytes) add(s);
  for (const s of bytes) add(s + WORD_END);
  for (const m of merges) add(m.replace(" ", ""));
  add(BOS_TOKEN);
  add(EOS_TOKEN);
  // Every word must come out as one token (checked, not assumed).
  for (const w of unique) {
    const seg = applyBpe(bytesToSymbols(w), ranks);
    if (seg.length !== 1 || !vocab.has(seg[0])) throw new Error(`buildBpeVocabulary: '${w}' does not become one token (${seg.join(" ")})`);
  }
  return { vocab, merges, words: unique };
}

function addedToken(content: string, withType: boolean): Record<string, unknown> {
  return {
    ...(withType ? { __type: "AddedToken" } : {}),
    content,
    lstrip: false,
    normalized: true,
    rstrip: false,
    single_word: false,
  };
}

/** JSON like Python's `json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False)`. */
export function sortedJson(value: unknown, indent = ""): string {
  // Written out by hand: JS objects would list integer-like keys ("0", "1", …) first whatever the order.
  const inner = indent + "  ";
  if (Array.isArray(value)) {
    if (value.length === 0) return "[]";
    return `[\n${value.map((v) => inner + sortedJson(v, inner)).join(",\n")}\n${indent}]`;
  }
  if (value !== null && typeof value === "object") {
    const keys = Object.keys(value).sort(compareCodePoints);
    if (keys.length === 0) return "{}";
    const body = keys.map((k) => `${inner}${JSON.stringify(k)}: ${sortedJson((value as Record<string, unknown>)[k], inner)}`);
    return `{\n${body.join(",\n")}\n${indent}}`;
  }
  const text = JSON.stringify(value);
  if (text === undefined) throw new Error(`sortedJson: cannot write ${String(value)}`);
  return text;
}

/** The four files of a CLIP tokenizer folder for `bpe`, as name -> text. */
export function tokenizerFolderFiles(bpe: BpeVocabulary, modelMaxLength = 77): Record<string, string> {
  return {
    "vocab.json": sortedJson(Object.fromEntries(bpe.vocab)) + "\n",
    "merges.txt": ["#version: 0.2", ...bpe.merges].join("\n") + "\n",
    "special_tokens_map.json": sortedJson({
      bos_token: addedToken(BOS_TOKEN, false),
      eos_token: addedToken(EOS_TOKEN, false),
      pad_token: EOS_TOKEN,
      unk_token: addedToken(EOS_TOKEN, false),
    }) + "\n",
    "tokenizer_config.json": sortedJson({
      bos_token: addedToken(BOS_TOKEN, true),
      clean_up_tokenization_spaces: true,
      eos_token: addedToken(EOS_TOKEN, true),
      errors: "replace",
      model_max_length: modelMaxLength,
      pad_token: EOS_TOKEN,
      tokenizer_class: "CLIPTokenizer",
      unk_token: addedToken(EOS_TOKEN, true),
    }) + "\n",
  };
}

/**
 * Write a CLIP tokenizer folder whose vocabulary makes every word of `words` (the synthetic
 * vocabulary plus `extra` by default) one token. Each file is written atomically. Returns the vocabulary.
 */
export function writeBpeTokenizer(
  dir: string,
  opts: { extraWords?: readonly string[]; includeSynthetic?: boolean; modelMaxLength?: number } = {},
): BpeVocabulary {
  const bpe = buildBpeVocabulary(tokenizerWords(opts.extraWords ?? [], opts.includeSynthetic ?? true));
  mkdirSync(dir, { recursive: true });
  for (const [name, text] of Object.entries(tokenizerFolderFiles(bpe, opts.modelMaxLength ?? 77))) {
    writeFileAtomic(join(dir, name), text);
  }
  return bpe;
}
