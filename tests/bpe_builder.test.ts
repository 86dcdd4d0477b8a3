// The BPE vocabulary builder: CLIP's file layout (checked against the real CLIP tokenizer folder of the
// golden checkpoint), every vocabulary word one token when read back by our CLIP tokenizer, and
// unknown words falling back to byte-level pieces.
import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { SYNTH_VOCABULARY } from "../src/data/synth.ts";
import { ClipTokenizer } from "../src/text/clip_tokenizer.ts";
import { buildBpeVocabulary, tokenizerWords, wordPieces, writeBpeTokenizer } from "../src/text/bpe_builder.ts";
import { TINY_IP2P } from "./goldens.ts";

const tmp = mkdtempSync(join(tmpdir(), "rl4pix-bpe-"));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const readJson = (path: string) => JSON.parse(readFileSync(path, "utf8"));

describe("synthetic vocabulary tokenizer", () => {
  const dir = join(tmp, "synth");
  const bpe = writeBpeTokenizer(dir);
  const tok = ClipTokenizer.fromDir(dir);
  const vocab = readJson(join(dir, "vocab.json")) as Record<string, number>;

  test("vocab.json has CLIP's layout: bytes, bytes + </w>, one entry per merge, then bos and eos", () => {
    const lines = readFileSync(join(dir, "merges.txt"), "utf8").split("\n");
    expect(lines[0]).toBe("#version: 0.2");
    expect(lines[lines.length - 1]).toBe(""); // trailing newline
    const merges = lines.slice(1, -1);
    expect(merges.length).toBe(bpe.merges.length);
    const size = Object.keys(vocab).length;
    expect(size).toBe(512 + merges.length + 2);
    expect(tok.vocabSize).toBe(size);
    // The first 512 ids are the same tokens as in the real CLIP vocabulary.
    const real = readJson(join(TINY_IP2P, "tokenizer", "vocab.json")) as Record<string, number>;
    const realById = new Map(Object.entries(real).map(([t, i]) => [i, t]));
    const oursById = new Map(Object.entries(vocab).map(([t, i]) => [i, t]));
    for (let i = 0; i < 512; i++) expect(oursById.get(i)).toBe(realById.get(i)!);
    expect(vocab["!"]).toBe(0);
    expect(vocab["!</w>"]).toBe(256);
    // Merge k is the token 512 + k (the concatenation of its two sides).
    merges.forEach((m, k) => {
      const parts = m.split(" ");
      expect(parts.length).toBe(2);
      expect(vocab[parts[0] + parts[1]]).toBe(512 + k);
    });
    expect(vocab["<|startoftext|>"]).toBe(size - 2);
    expect(vocab["<|endoftext|>"]).toBe(size - 1);
    expect(new Set(Object.values(vocab)).size).toBe(size);
  });

  test("files are written like transformers' save_pretrained (special token files byte for byte, sorted vocab keys)", () => {
    for (const f of ["special_tokens_map.json", "tokenizer_config.json"]) {
      expect(readFileSync(join(dir, f), "utf8")).toBe(readFileSync(join(TINY_IP2P, "tokenizer", f), "utf8"));
    }
    // vocab.json lists keys in code-point order (Python's sort_keys): compare the order of the 512 byte
    // tokens, which both files share, as they appear in the text (JSON.parse would reorder "0".."9").
    const keyOrder = (text: string) => [...text.matchAll(/^  ("(?:[^"\\]|\\.)*"): (\d+),?$/gm)].map((m) => [JSON.parse(m[1]) as string, Number(m[2])] as const);
    const ours = keyOrder(readFileSync(join(dir, "vocab.json"), "utf8"));
    expect(ours.length).toBe(Object.keys(vocab).length);
    const real = keyOrder(readFileSync(join(TINY_IP2P, "tokenizer", "vocab.json"), "utf8"));
    expect(ours.filter(([, i]) => i < 512).map(([t]) => t)).toEqual(real.filter(([, i]) => i < 512).map(([t]) => t));
    expect(readFileSync(join(dir, "vocab.json"), "utf8").endsWith("}\n")).toBe(true);
    expect(tok.modelMaxLength).toBe(77);
    expect(tok.padId).toBe(tok.eosId);
    expect(tok.unkId).toBe(tok.eosId);
  });

  test("every vocabulary word is one token: [bos, id, eos, pad...]", () => {
    const ids = new Set<number>();
    expect(SYNTH_VOCABULARY.length).toBeGreaterThan(20);
    for (const w of SYNTH_VOCABULARY) {
      const e = tok.encode(w);
      expect(e.inputIds.length).toBe(77);
      expect(e.inputIds[0]).toBe(tok.bosId);
      expect(e.inputIds[2]).toBe(tok.eosId);
      expect(e.inputIds.slice(3).every((i) => i === tok.padId)).toBe(true);
      expect(tok.tokenize(w)).toEqual([w + "</w>"]);
      const id = e.inputIds[1];
      expect(id).toBe(vocab[w + "</w>"]);
      expect(id).toBeLessThan(tok.vocabSize - 2);
      ids.add(id);
    }
    expect(ids.size).toBe(SYNTH_VOCABULARY.length);
    // Upper case and extra spaces are normalised by the tokenizer as CLIP does.
    expect(tok.encode("  Make THE circle   red ").untruncatedLength).toBe(6);
  });

  test("words outside the vocabulary fall back to smaller pieces and bytes", () => {
    const pieces = tok.tokenize("zebra");
    expect(pieces.length).toBeGreaterThan(1);
    expect(pieces.join("")).toBe("zebra</w>");
    for (const p of pieces) expect(vocab[p]).toBeDefined();
    // ü is UTF-8 C3 BC, whose byte stand-ins are "Ã" and "¼"; no merge joins them.
    expect(tok.tokenize("ü")).toEqual(["Ã", "¼</w>"]);
    // A digit is its own piece: '7' is byte 0x37, the 23rd printable byte.
    expect(tok.encode("7").inputIds.slice(0, 3)).toEqual([tok.bosId, 256 + 0x37 - 0x21, tok.eosId]);
    const e = tok.encode("a zebra with ümlauts 42 🎉 on the left");
    for (const id of e.inputIds) {
      expect(id).toBeGreaterThanOrEqual(0);
      expect(id).toBeLessThan(tok.vocabSize);
    }
    expect(tok.decode(e.inputIds)).toBe("a zebra with ümlauts 4 2 🎉 on the left");
  });
});

describe("extra words", () => {
  test("are normalised like CLIP's pre-tokenizer and become single tokens", () => {
    expect(wordPieces("Hello-World don't  42")).toEqual(["hello", "-", "world", "don", "'t", "4", "2"]);
    const dir = join(tmp, "extra");
    writeBpeTokenizer(dir, { extraWords: ["Zebra", "hello-world", "Café"] });
    const tok = ClipTokenizer.fromDir(dir);
    for (const w of ["zebra", "hello", "world", "-", "café", "make"]) expect(tok.tokenize(w).length).toBe(1);
    expect(tok.tokenize("hello-world")).toEqual(["hello</w>", "-</w>", "world</w>"]);
    // Without the synthetic vocabulary only the extra words are merged.
    const only = join(tmp, "only");
    writeBpeTokenizer(only, { extraWords: ["zebra"], includeSynthetic: false });
    const t2 = ClipTokenizer.fromDir(only);
    expect(t2.tokenize("zebra")).toEqual(["zebra</w>"]);
    expect(t2.tokenize("make").length).toBeGreaterThan(1);
  });

  test("overlapping words that interfere under BPE all end as one token", () => {
    // Prefixes, suffixes, repeated letters and words that are parts of other words.
    const words = ["abcy", "bcx", "abcd", "xbc", "bc", "b", "aaaaa", "aaaa", "aa", "abab", "bab", "ababab", "cabc", "abc"];
    const bpe = buildBpeVocabulary(words);
    const dir = join(tmp, "overlap");
    writeBpeTokenizer(dir, { extraWords: words, includeSynthetic: false });
    const tok = ClipTokenizer.fromDir(dir);
    for (const w of words) expect(tok.tokenize(w)).toEqual([w + "</w>"]);
    expect(bpe.words.length).toBe(new Set(words).size);
    expect(tokenizerWords(["B", "b"], false)).toEqual(["b"]);
  });

  test("the same words give the same files", () => {
    const a = join(tmp, "same-a");
    const b = join(tmp, "same-b");
    writeBpeTokenizer(a, { extraWords: ["zebra", "giraffe"] });
    writeBpeTokenizer(b, { extraWords: ["giraffe", "zebra"] });
    for (const f of ["vocab.json", "merges.txt", "special_tokens_map.json", "tokenizer_config.json"]) {
      expect(readFileSync(join(a, f), "utf8")).toBe(readFileSync(join(b, f), "utf8"));
    }
  });
});
