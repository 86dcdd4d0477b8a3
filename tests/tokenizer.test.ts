// CLIP tokenizer against transformers' slow CLIPTokenizer (4.30.2, ftfy 6.1.1 installed): the 42
// golden prompts, the text-encoder golden's input ids, ftfy's individual fixes, and bad tokenizer folders.
import { afterAll, describe, expect, test } from "bun:test";
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { UserError } from "../src/errors.ts";
import { openSafetensors } from "../src/io/safetensors.ts";
import { ClipTokenizer } from "../src/text/clip_tokenizer.ts";
import { fixText } from "../src/text/ftfy.ts";

const GOLDENS = fileURLToPath(new URL("../../shared/goldens/", import.meta.url));
const TOKENIZER_DIR = join(GOLDENS, "tiny-ip2p", "tokenizer");

interface GoldenEntry {
  prompt: string;
  input_ids: number[];
  attention_mask: number[];
  tokens: string[];
  untruncated_length: number;
}
const golden = JSON.parse(readFileSync(join(GOLDENS, "tokenizer.json"), "utf8")) as {
  special_ids: { bos: number; eos: number; pad: number; vocab_size: number };
  entries: GoldenEntry[];
};

const loadStart = performance.now();
const tok = ClipTokenizer.fromDir(TOKENIZER_DIR);
const loadMs = performance.now() - loadStart;

const tmp = mkdtempSync(join(tmpdir(), "rl4pix-tok-"));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe("golden prompts (transformers CLIPTokenizer + ftfy)", () => {
  test("special ids and vocabulary size come from the files", () => {
    expect(golden.entries.length).toBe(42);
    expect(tok.bosId).toBe(golden.special_ids.bos);
    expect(tok.eosId).toBe(golden.special_ids.eos);
    expect(tok.padId).toBe(golden.special_ids.pad);
    expect(tok.vocabSize).toBe(golden.special_ids.vocab_size);
    expect(tok.modelMaxLength).toBe(77);
    expect(loadMs).toBeLessThan(1000);
  });

  for (const [i, e] of golden.entries.entries()) {
    test(`#${i} ${JSON.stringify(e.prompt.length > 40 ? e.prompt.slice(0, 40) + "…" : e.prompt)}`, () => {
      expect(tok.tokenize(e.prompt)).toEqual(e.tokens);
      const enc = tok.encode(e.prompt);
      expect(enc.inputIds).toEqual(e.input_ids);
      expect(enc.attentionMask).toEqual(e.attention_mask);
      expect(enc.untruncatedLength).toBe(e.untruncated_length);
      expect(tok.untruncatedLength(e.prompt)).toBe(e.untruncated_length);
    });
  }

  test("long prompts keep bos + the first 75 tokens + eos", () => {
    const long = golden.entries.filter((e) => e.untruncated_length > 77);
    expect(long.map((e) => e.untruncated_length)).toEqual([86, 82]);
    for (const e of long) {
      const full = tok.encodeUntruncated(e.prompt);
      expect(full.length).toBe(e.untruncated_length);
      const enc = tok.encode(e.prompt);
      expect(enc.inputIds).toEqual([...full.slice(0, 76), tok.eosId]);
      expect(enc.attentionMask.every((m) => m === 1)).toBe(true);
    }
  });

  test("the text-encoder golden was fed these ids", () => {
    const f = openSafetensors(join(GOLDENS, "components.safetensors"));
    const ids = f.toI32("te.input_ids");
    const prompts = ["turn the sky purple", "", "make it look like a watercolor painting, with soft edges!"];
    const enc = tok.encodeBatch(prompts);
    prompts.forEach((_, b) => expect(enc[b].inputIds).toEqual(Array.from(ids.subarray(b * 77, (b + 1) * 77))));
  });

  test("decode inverts encode for plain text", () => {
    expect(tok.decode(tok.encode("Turn the sky purple, and add 3 birds!").inputIds)).toBe("turn the sky purple , and add 3 birds !");
    expect(tok.decode(tok.encode("café 日本").inputIds)).toBe("café 日本");
  });
});

describe("ftfy.fix_text behaviours (ftfy 6.1 defaults)", () => {
  const cases: [string, string, string][] = [
    ["mojibake (UTF-8 read as Windows-1252)", "cafÃ© â€œquotedâ€\u009d", "café \"quoted\""],
    ["mojibake in a mixed string", "Ã³ and 日本", "ó and 日本"],
    ["double mojibake", "cafÃƒÂ©", "café"],
    ["genuine accents are kept", "naïve façade, Ångström, Straße, Ümlaut", "naïve façade, Ångström, Straße, Ümlaut"],
    ["genuine capitals before closing punctuation are kept", "«CAFÉ» JOSÉ’S Fuß°", "«CAFÉ» JOSÉ'S Fuß°"],
    ["Cyrillic and Greek mojibake", "ÐŸÑ€Ð¸Ð²ÐµÑ‚ Î±Î²Î³", "Привет αβγ"],
    ["HTML entities", "&amp; &lt;b&gt; &eacute; &#233; &#x41; &EACUTE; &bogus; &#12ab;", "& <b> é é A É &bogus; &#12ab;"],
    ["no HTML unescaping once a line has a literal <", "a &amp; b\n<p> &amp;\n&amp;", "a & b\n<p> &amp;\n&amp;"],
    ["ligatures", "ﬁne ﬂour ﬀ ĳ", "fine flour ff ij"],
    ["full width", "Ｆｕｌｌ\u3000ｗｉｄｔｈ！", "Full width!"],
    ["curly quotes", "“double” ‘single’ ‛rev‟", "\"double\" 'single' 'rev\""],
    ["C1 controls as Windows-1252", "a\u0080b\u0085c", "a€b…c"],
    ["line breaks", "a\r\nb\rc\u2028d", "a\nb\nc\nd"],
    ["terminal escapes and control characters", "\u001b[36mcolor\u001b[0m\u0000x\u0007\ufeff", "colorx"],
    ["NFC", "e\u0301", "é"],
    ["lone surrogates", "a\ud800b", "a\ufffdb"],
    ["zero-width space is kept", "a\u200bb", "a\u200bb"],
  ];
  for (const [what, input, expected] of cases) {
    test(what, () => expect(fixText(input)).toBe(expected));
  }
});

describe("tokenizer folders", () => {
  function copyTokenizer(name: string): string {
    const d = join(tmp, name);
    mkdirSync(d);
    for (const f of ["vocab.json", "merges.txt", "special_tokens_map.json", "tokenizer_config.json"]) {
      copyFileSync(join(TOKENIZER_DIR, f), join(d, f));
    }
    return d;
  }
  function userError(fn: () => unknown): string {
    try {
      fn();
    } catch (e) {
      expect(e).toBeInstanceOf(UserError);
      return (e as Error).message;
    }
    throw new Error("expected a UserError");
  }

  test("special tokens are read from the files", () => {
    const d = copyTokenizer("custom");
    const cfg = JSON.parse(readFileSync(join(d, "tokenizer_config.json"), "utf8"));
    cfg.model_max_length = 20;
    writeFileSync(join(d, "tokenizer_config.json"), JSON.stringify(cfg));
    const map = JSON.parse(readFileSync(join(d, "special_tokens_map.json"), "utf8"));
    map.pad_token = "!"; // id 0
    writeFileSync(join(d, "special_tokens_map.json"), JSON.stringify(map));
    const t = ClipTokenizer.fromDir(d);
    expect(t.padId).toBe(0);
    const enc = t.encode("turn the sky purple");
    expect(enc.inputIds).toEqual([49406, 2105, 518, 2390, 5496, 49407, ...new Array(14).fill(0)]);
  });

  test("missing files, bad JSON, bad merges, unknown special token", () => {
    const a = copyTokenizer("novocab");
    rmSync(join(a, "vocab.json"));
    expect(userError(() => ClipTokenizer.fromDir(a))).toContain(`${join(a, "vocab.json")}: file not found`);
    const b = copyTokenizer("badjson");
    writeFileSync(join(b, "vocab.json"), "{\"a\": 1,");
    expect(userError(() => ClipTokenizer.fromDir(b))).toContain(`${join(b, "vocab.json")}: not valid JSON`);
    const c = copyTokenizer("badmerges");
    writeFileSync(join(c, "merges.txt"), "#version: 0.2\ni n\nthree symbols here\n");
    expect(userError(() => ClipTokenizer.fromDir(c))).toContain(`${join(c, "merges.txt")}: line 3 is not a merge of two symbols`);
    const d = copyTokenizer("badspecial");
    writeFileSync(join(d, "special_tokens_map.json"), JSON.stringify({ bos_token: "<|notthere|>" }));
    expect(userError(() => ClipTokenizer.fromDir(d))).toContain("the bos token \"<|notthere|>\" is not in the vocabulary");
  });
});
