// CLIP's byte-level BPE tokenizer, behaving like transformers' slow `CLIPTokenizer` (4.30) with ftfy
// installed:
//   1. special tokens written literally in the text ("<|endoftext|>") are split out and kept whole;
//   2. every other piece: text = whitespace_clean(ftfy.fix_text(piece)).lower();
//   3. split with CLIP's pattern (special tokens, contractions, letter runs, single digits, other runs);
//   4. each piece's UTF-8 bytes -> stand-in characters -> BPE with "</w>" marking the word end;
//   5. ids: [bos] + first (max_length - 2) tokens + [eos], padded with the pad token to max_length.
// Vocabulary, merges and special tokens come from the tokenizer folder's files.
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { UserError } from "../errors.ts";
import { bytesToSymbols, symbolsToText } from "./byte_unicode.ts";
import { fixText } from "./ftfy.ts";

export interface SpecialTokens {
  bos: string;
  eos: string;
  pad: string;
  unk: string;
  /** Further tokens that are never split (additional_special_tokens, added tokens). */
  extra: string[];
}

export interface EncodedText {
  /** maxLength ids: bos, tokens, eos, then padding. */
  inputIds: number[];
  /** 1 for bos, tokens and eos; 0 for padding. */
  attentionMask: number[];
  /** bos + all tokens + eos before truncation (longer than maxLength means the prompt was cut). */
  untruncatedLength: number;
}

// transformers reads at most this many merges (lines 1..48894 after the "#version" line): CLIP's
// vocabulary is 256 bytes x 2 + 48,894 merges + 2 special tokens = 49,408.
const CLIP_MERGE_LIMIT = 49152 - 256 - 2;

// Python `\s` (str.isspace): the separators collapsed by whitespace_clean.
const PY_WHITESPACE = "\\t-\\r\\x1c-\\x20\\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000";
const WHITESPACE_RUN = new RegExp(`[${PY_WHITESPACE}]+`, "g");
// Unicode White_Space (the `regex` module's \s inside CLIP's pattern).
const UNICODE_WHITESPACE = "\\t-\\r\\x20\\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000";
const CLIP_PATTERN = new RegExp(
  `<\\|startoftext\\|>|<\\|endoftext\\|>|'s|'t|'re|'ve|'m|'ll|'d|\\p{L}+|\\p{N}|[^${UNICODE_WHITESPACE}\\p{L}\\p{N}]+`,
  "giu",
);

function whitespaceClean(text: string): string {
  return text.replace(WHITESPACE_RUN, " ").replace(/^ +| +$/g, "");
}

export class ClipTokenizer {
  readonly vocabSize: number;
  readonly bosId: number;
  readonly eosId: number;
  readonly padId: number;
  readonly unkId: number;
  private readonly ranks = new Map<string, number>();
  private readonly cache = new Map<string, string[]>();
  private decoder: Map<number, string> | null = null;
  /** Tokens never split, longest first (so the longest match wins at a position). */
  private readonly unsplittable: string[];
  private readonly unsplittableStarts: Set<string>;

  constructor(
    private readonly vocab: ReadonlyMap<string, number>,
    /** Merge rules in priority order, each "left right" (the lines of merges.txt). */
    merges: readonly string[],
    readonly special: SpecialTokens,
    /** Sequence length of `encode` (77 for CLIP). */
    readonly modelMaxLength = 77,
    /** Names the source in error messages. */
    readonly source = "tokenizer",
  ) {
    for (let i = 0; i < merges.length; i++) if (!this.ranks.has(merges[i])) this.ranks.set(merges[i], i);
    this.vocabSize = vocab.size;
    const id = (role: string, tok: string): number => {
      const v = vocab.get(tok);
      if (v === undefined) throw new UserError(`${source}: the ${role} token ${JSON.stringify(tok)} is not in the vocabulary`);
      return v;
    };
    this.unkId = id("unk", special.unk);
    this.bosId = id("bos", special.bos);
    this.eosId = id("eos", special.eos);
    this.padId = id("pad", special.pad);
    for (const t of special.extra) id("added", t);
    this.unsplittable = [...new Set([special.bos, special.eos, special.unk, special.pad, ...special.extra])]
      .filter((t) => t.length > 0)
      .sort((a, b) => b.length - a.length);
    this.unsplittableStarts = new Set(this.unsplittable.map((t) => t[0]));
    // CLIP's pattern can also produce the two CLIP specials from lower-cased text: they map to themselves.
    for (const t of ["<|startoftext|>", "<|endoftext|>"]) this.cache.set(t, [t]);
  }

  /** Load vocab.json, merges.txt and the special tokens (special_tokens_map.json, tokenizer_config.json). */
  static fromDir(dir: string): ClipTokenizer {
    const vocabPath = join(dir, "vocab.json");
    const mergesPath = join(dir, "merges.txt");
    const vocabJson = readJson(vocabPath, true) as Record<string, unknown>;
    if (vocabJson === null || typeof vocabJson !== "object" || Array.isArray(vocabJson)) {
      throw new UserError(`${vocabPath}: expected a JSON object of token -> id`);
    }
    const vocab = new Map<string, number>();
    for (const tok in vocabJson) {
      const id = vocabJson[tok];
      if (!Number.isInteger(id) || (id as number) < 0) throw new UserError(`${vocabPath}: token ${JSON.stringify(tok)} has id ${JSON.stringify(id)}, not a non-negative integer`);
      vocab.set(tok, id as number);
    }
    const merges = readMerges(mergesPath);

    const config = (readJson(join(dir, "tokenizer_config.json"), false) ?? {}) as Record<string, unknown>;
    const map = (readJson(join(dir, "special_tokens_map.json"), false) ?? {}) as Record<string, unknown>;
    const role = (key: string, def: string): string => {
      // special_tokens_map.json overrides tokenizer_config.json, as in transformers' from_pretrained
      for (const [file, src] of [["special_tokens_map.json", map], ["tokenizer_config.json", config]] as const) {
        if (!Object.hasOwn(src, key) || src[key] === null) continue;
        const content = tokenContent(src[key]);
        if (content === null) throw new UserError(`${join(dir, file)}: "${key}" must be a string or an object with "content"`);
        return content;
      }
      return def;
    };
    const extra: string[] = [];
    for (const src of [config, map]) {
      const list = src.additional_special_tokens;
      if (Array.isArray(list)) for (const t of list) { const c = tokenContent(t); if (c !== null) extra.push(c); }
    }
    // Tokens added after training: added_tokens.json (token -> id) or tokenizer_config's added_tokens_decoder.
    const added = (readJson(join(dir, "added_tokens.json"), false) ?? {}) as Record<string, unknown>;
    for (const [tok, id] of Object.entries(added)) {
      if (Number.isInteger(id)) { vocab.set(tok, id as number); extra.push(tok); }
    }
    const decoderEntries = config.added_tokens_decoder;
    if (decoderEntries && typeof decoderEntries === "object") {
      for (const [id, t] of Object.entries(decoderEntries as Record<string, unknown>)) {
        const c = tokenContent(t);
        if (c !== null && /^\d+$/.test(id)) { if (!vocab.has(c)) vocab.set(c, Number(id)); extra.push(c); }
      }
    }
    const special: SpecialTokens = {
      bos: role("bos_token", "<|startoftext|>"),
      eos: role("eos_token", "<|endoftext|>"),
      pad: role("pad_token", "<|endoftext|>"),
      unk: role("unk_token", "<|endoftext|>"),
      extra: [...new Set(extra)],
    };
    // Files without a usable model_max_length (absent, or transformers' "unlimited" 1e30) get CLIP's 77.
    const mml = config.model_max_length;
    const modelMaxLength = typeof mml === "number" && Number.isInteger(mml) && mml >= 2 && mml <= 1e6 ? mml : 77;
    return new ClipTokenizer(vocab, merges, special, modelMaxLength, dir);
  }

  /** BPE of one pre-token given as stand-in characters; returns the subword strings. */
  private bpe(token: string): string[] {
    const cached = this.cache.get(token);
    if (cached) return cached;
    const word = applyBpe(token, this.ranks);
    this.cache.set(token, word);
    return word;
  }

  /** Split the raw text around special tokens written in it (case-sensitive, longest match first). */
  private splitOnSpecial(text: string): { piece: string; special: boolean }[] {
    const out: { piece: string; special: boolean }[] = [];
    let start = 0;
    let i = 0;
    while (i < text.length) {
      const hit = this.unsplittableStarts.has(text[i])
        ? this.unsplittable.find((t) => text.startsWith(t, i))
        : undefined;
      if (hit) {
        if (i > start) out.push({ piece: text.slice(start, i), special: false });
        out.push({ piece: hit, special: true });
        i += hit.length;
        start = i;
      } else {
        i++;
      }
    }
    if (start < text.length) out.push({ piece: text.slice(start), special: false });
    return out;
  }

  /** The BPE strings of `text` (no bos/eos), as transformers' `tokenizer.tokenize(text)`. */
  tokenize(text: string): string[] {
    const tokens: string[] = [];
    for (const { piece, special } of this.splitOnSpecial(text)) {
      if (special) {
        tokens.push(piece);
        continue;
      }
      const clean = whitespaceClean(fixText(piece)).toLowerCase();
      for (const m of clean.matchAll(CLIP_PATTERN)) tokens.push(...this.bpe(bytesToSymbols(m[0])));
    }
    return tokens;
  }

  tokenToId(token: string): number {
    return this.vocab.get(token) ?? this.unkId;
  }

  /** bos + token ids + eos, without truncation or padding. */
  encodeUntruncated(text: string): number[] {
    return [this.bosId, ...this.tokenize(text).map((t) => this.tokenToId(t)), this.eosId];
  }

  untruncatedLength(text: string): number {
    return this.tokenize(text).length + 2;
  }

  /**
   * `tokenizer(text, padding="max_length", max_length=maxLength, truncation=True)`: bos + the first
   * maxLength-2 tokens + eos, padded with the pad token, and the attention mask.
   */
  encode(text: string, maxLength = this.modelMaxLength): EncodedText {
    if (!Number.isInteger(maxLength) || maxLength < 2) throw new Error(`encode: maxLength must be an integer >= 2, got ${maxLength}`);
    const ids = this.tokenize(text).map((t) => this.tokenToId(t));
    const kept = ids.slice(0, maxLength - 2);
    const inputIds = [this.bosId, ...kept, this.eosId];
    const attentionMask = inputIds.map(() => 1);
    while (inputIds.length < maxLength) {
      inputIds.push(this.padId);
      attentionMask.push(0);
    }
    return { inputIds, attentionMask, untruncatedLength: ids.length + 2 };
  }

  encodeBatch(texts: readonly string[], maxLength = this.modelMaxLength): EncodedText[] {
    return texts.map((t) => this.encode(t, maxLength));
  }

  /** Ids back to text (special tokens and padding dropped unless `keepSpecial`). */
  decode(ids: readonly number[], keepSpecial = false): string {
    const specialIds = new Set([this.bosId, this.eosId, this.padId]);
    if (!this.decoder) this.decoder = new Map([...this.vocab].map(([tok, id]) => [id, tok]));
    let symbols = "";
    for (const id of ids) {
      if (!keepSpecial && specialIds.has(id)) continue;
      symbols += this.decoder.get(id) ?? "";
    }
    return symbols.split("</w>").map(symbolsToText).join(" ").trim();
  }
}

function tokenContent(v: unknown): string | null {
  if (typeof v === "string") return v;
  if (v !== null && typeof v === "object" && typeof (v as { content?: unknown }).content === "string") {
    return (v as { content: string }).content;
  }
  return null;
}

function readJson(path: string, required: boolean): unknown {
  if (!existsSync(path)) {
    if (required) throw new UserError(`${path}: file not found`);
    return null;
  }
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (e) {
    throw new UserError(`${path}: cannot read: ${(e as Error).message}`);
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new UserError(`${path}: not valid JSON (${(e as Error).message})`);
  }
}

/** merges.txt -> "left right" rules (at most CLIP_MERGE_LIMIT, after the "#version" line). */
function readMerges(path: string): string[] {
  if (!existsSync(path)) throw new UserError(`${path}: file not found`);
  const lines = readFileSync(path, "utf8").trim().split("\n");
  const start = lines[0]?.startsWith("#version") ? 1 : 0;
  const body = lines.slice(start, start + CLIP_MERGE_LIMIT);
  for (let i = 0; i < body.length; i++) {
    let line = body[i];
    const space = line.indexOf(" ");
    if (space <= 0 || line.indexOf(" ", space + 1) >= 0 || /[\t\r]/.test(line)) {
      const parts = line.trim().split(/\s+/);
      if (parts.length !== 2) throw new UserError(`${path}: line ${start + i + 1} is not a merge of two symbols: ${JSON.stringify(line)}`);
      line = `${parts[0]} ${parts[1]}`;
    }
    body[i] = line;
  }
  return body;
}

/** The BPE algorithm on one pre-token given as stand-in symbols ("</w>" is added to its last symbol). */
export function applyBpe(symbols: string, ranks: ReadonlyMap<string, number>): string[] {
  const chars = [...symbols];
  if (chars.length === 0) return [];
  let word = chars.slice(0, -1);
  word.push(chars[chars.length - 1] + "</w>");
  while (word.length > 1) {
    let best = Infinity;
    let first = "";
    let second = "";
    for (let i = 0; i < word.length - 1; i++) {
      const r = ranks.get(`${word[i]} ${word[i + 1]}`);
      if (r !== undefined && r < best) {
        best = r;
        first = word[i];
        second = word[i + 1];
      }
    }
    if (best === Infinity) break;
    const merged: string[] = [];
    for (let i = 0; i < word.length; i++) {
      if (i < word.length - 1 && word[i] === first && word[i + 1] === second) {
        merged.push(first + second);
        i++;
      } else {
        merged.push(word[i]);
      }
    }
    word = merged;
  }
  return word;
}
