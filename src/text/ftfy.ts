// The text clean-up that transformers' CLIPTokenizer applies when the Python package ftfy is installed:
// `ftfy.fix_text(text)` with ftfy 6.1's default settings. Implemented from ftfy's documented behaviour:
//
//   per line (split after each "\n"), repeated until nothing changes:
//     unescape HTML entities  (skipped for this and all later lines once a line contains "<")
//     fix mojibake            (UTF-8 that was decoded as Windows-1252 / Latin-1: "cafÃ©" -> "café")
//     C1 controls -> their Windows-1252 characters
//     Latin ligatures -> letters ("ﬁ" -> "fi"), full-width forms -> normal width ("Ｆ" -> "F", U+3000 -> " ")
//     curly quotes -> straight quotes, line breaks (\r\n, \r, U+2028/2029/0085) -> "\n"
//     lone surrogates -> U+FFFD, terminal escapes and control characters removed, NFC normalisation
//
// Approximation (documented in docs/tokenizer.md): ftfy decides whether text is mojibake with a
// heuristic over ~400 characters and also tries other codepages (Windows-1250/1251/1253/1254,
// ISO-8859-2, MacRoman, CP437), restores spaces that were non-breaking spaces inside mojibake and
// marks lossy sequences. Here every run of characters that, read back as Windows-1252/Latin-1 bytes,
// spells a UTF-8 character is decoded, except runs that look like genuine text (an accented capital
// or ß before closing punctuation: "«CAFÉ»", "JOSÉ’S") in a word without clearer mojibake. This agrees with ftfy on ordinary text
// and on typical Windows-1252/Latin-1 mojibake; it differs on mojibake from other codepages or with
// damaged bytes (left alone here) and on some fragments ftfy's heuristic judges differently.
import { unescapeHtml } from "./html_entities.ts";

// Windows-1252 bytes 0x80..0x9F; the five bytes it leaves undefined keep their C1 character ("sloppy").
const WINDOWS_1252_HIGH =
  "\u20ac\x81\u201a\u0192\u201e\u2026\u2020\u2021\u02c6\u2030\u0160\u2039\u0152\x8d\u017d\x8f" +
  "\x90\u2018\u2019\u201c\u201d\u2022\u2013\u2014\u02dc\u2122\u0161\u203a\u0153\x9d\u017e\u0178";

/** Character -> byte under "sloppy" Windows-1252 or Latin-1 (whichever has the character). */
const SINGLE_BYTE = (() => {
  const m = new Map<string, number>();
  for (let b = 0x80; b <= 0xff; b++) m.set(String.fromCharCode(b), b); // Latin-1 (C1 controls included)
  for (let i = 0; i < 32; i++) m.set(WINDOWS_1252_HIGH[i], 0x80 + i);
  return m;
})();

const strictUtf8 = new TextDecoder("utf-8", { fatal: true });

/** Length of the UTF-8 sequence a lead byte starts (0 if it cannot start a multi-byte sequence). */
function utf8SequenceLength(lead: number): number {
  if (lead >= 0xc2 && lead <= 0xdf) return 2;
  if (lead >= 0xe0 && lead <= 0xef) return 3;
  if (lead >= 0xf0 && lead <= 0xf4) return 4;
  return 0;
}

interface Candidate {
  at: number;
  length: number;
  decoded: string;
  /** Could be genuine text: a word-final accented capital or ß before closing punctuation. */
  weak: boolean;
}

// Characters that genuinely follow a word ("JOSÉ’S", "«CAFÉ»", "Fuß°"): a 2-byte sequence ending in one
// of them is only mojibake if the text shows stronger evidence elsewhere.
// Capitals that end words in genuine Western European text. Left out on purpose: Â Ã (the usual mojibake
// leads) and Ä Å Î Ï Ð Ñ × Ø Ù, which lead the mojibake of Central European, Greek, Cyrillic, Hebrew
// and Arabic letters ("Ä…" = ą, "Ñ–" = і, "Ù…" = م).
const WORD_END_LETTERS = new Set("ÀÁÆÇÈÉÊËÌÍÒÓÔÕÖÚÛÜÝÞß");
const CLOSING = new Set("\u2019\u201d\u00bb\u203a\u2026\u2013\u2014\u00a0\u2122\u00ae\u00b0\u00b2\u00b3\u00b9");

/** Every place where characters, read back as Windows-1252/Latin-1 bytes, spell one UTF-8 character. */
function mojibakeCandidates(text: string): Candidate[] {
  const out: Candidate[] = [];
  let i = 0;
  while (i < text.length) {
    const lead = SINGLE_BYTE.get(text[i]);
    const len = lead === undefined ? 0 : utf8SequenceLength(lead);
    if (len > 0 && i + len <= text.length) {
      const bytes = new Uint8Array(len);
      bytes[0] = lead!;
      let ok = true;
      for (let k = 1; k < len && ok; k++) {
        const b = SINGLE_BYTE.get(text[i + k]);
        if (b === undefined || b < 0x80 || b > 0xbf) ok = false;
        else bytes[k] = b;
      }
      if (ok) {
        let decoded: string | null = null;
        try {
          decoded = strictUtf8.decode(bytes);
        } catch {
          // overlong or surrogate encodings are not UTF-8
        }
        if (decoded !== null) {
          const weak = len === 2 && WORD_END_LETTERS.has(text[i]) && CLOSING.has(text[i + 1]);
          out.push({ at: i, length: len, decoded, weak });
          i += len;
          continue;
        }
      }
    }
    i++;
  }
  return out;
}

/**
 * Decode the UTF-8 that was read as Windows-1252/Latin-1. A sequence that could be genuine text (see
 * `weak`) is decoded only when its word also holds a sequence that could not.
 */
export function fixMojibake(text: string): string {
  const found = mojibakeCandidates(text);
  if (found.length === 0) return text;
  // word index of every position: words are separated by whitespace
  const words = new Int32Array(text.length);
  for (let i = 1, w = 0; i < text.length; i++) {
    if (/\s/.test(text[i - 1]) && !/\s/.test(text[i])) w++;
    words[i] = w;
  }
  const wordOf = (at: number): number => words[at];
  const strongWords = new Set(found.filter((c) => !c.weak).map((c) => wordOf(c.at)));
  let out = "";
  let pos = 0;
  for (const c of found) {
    if (c.weak && !strongWords.has(wordOf(c.at))) continue;
    out += text.slice(pos, c.at) + c.decoded;
    pos = c.at + c.length;
  }
  return pos === 0 ? text : out + text.slice(pos);
}

function fixEncoding(text: string): string {
  for (;;) {
    const fixed = fixMojibake(text);
    if (fixed === text) return text;
    text = fixed;
  }
}

function fixC1Controls(text: string): string {
  return text.replace(/[\x80-\x9f]/g, (c) => WINDOWS_1252_HIGH[c.charCodeAt(0) - 0x80]);
}

const LIGATURES: Record<string, string> = {
  "Ĳ": "IJ", "ĳ": "ij", "ŉ": "ʼn", "Ǳ": "DZ", "ǲ": "Dz", "ǳ": "dz", "Ǆ": "DŽ", "ǅ": "Dž", "ǆ": "dž",
  "Ǉ": "LJ", "ǈ": "Lj", "ǉ": "lj", "Ǌ": "NJ", "ǋ": "Nj", "ǌ": "nj",
  "ﬀ": "ff", "ﬁ": "fi", "ﬂ": "fl", "ﬃ": "ffi", "ﬄ": "ffl", "ﬅ": "ſt", "ﬆ": "st",
};
const LIGATURE_RE = new RegExp(`[${Object.keys(LIGATURES).join("")}]`, "g");

function fixLatinLigatures(text: string): string {
  return text.replace(LIGATURE_RE, (c) => LIGATURES[c]);
}

/** Full-width and half-width forms (U+FF01..U+FFEF) -> their compatibility equivalents; U+3000 -> space. */
const WIDTH_MAP = (() => {
  const m = new Map<string, string>([["\u3000", " "]]);
  for (let cp = 0xff01; cp < 0xfff0; cp++) {
    const c = String.fromCharCode(cp);
    const alt = c.normalize("NFKC");
    if (alt !== c) m.set(c, alt);
  }
  return m;
})();

function fixCharacterWidth(text: string): string {
  return text.replace(/[\u3000\uff01-\uffef]/g, (c) => WIDTH_MAP.get(c) ?? c);
}

function uncurlQuotes(text: string): string {
  return text.replace(/[\u201c-\u201f]/g, '"').replace(/[\u02bc\u2018-\u201b]/g, "'");
}

function fixLineBreaks(text: string): string {
  return text.replace(/\r\n|[\r\u2028\u2029\u0085]/g, "\n");
}

function fixSurrogates(text: string): string {
  return text.replace(/[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g, "\ufffd");
}

function removeTerminalEscapes(text: string): string {
  return text.replace(/\x1b\[[\p{Nd};]*[a-zA-Z]/gu, "");
}

function removeControlChars(text: string): string {
  return text.replace(/[\x00-\x08\x0b\x0e-\x1f\x7f\u206a-\u206f\ufeff\ufff9-\ufffc]/g, "");
}

function fixSegment(segment: string, htmlEntities: boolean): string {
  let text = segment;
  for (;;) {
    const before = text;
    if (htmlEntities) text = unescapeHtml(text);
    text = fixEncoding(text);
    text = fixC1Controls(text);
    text = fixLatinLigatures(text);
    text = fixCharacterWidth(text);
    text = uncurlQuotes(text);
    text = fixLineBreaks(text);
    text = fixSurrogates(text);
    text = removeTerminalEscapes(text);
    text = removeControlChars(text);
    text = text.normalize("NFC");
    if (text === before) return text;
  }
}

/** ftfy.fix_text(text) with ftfy 6.1's defaults (see the header for what is approximated). */
export function fixText(text: string): string {
  let out = "";
  let htmlEntities = true;
  let pos = 0;
  while (pos < text.length) {
    const nl = text.indexOf("\n", pos);
    const end = nl < 0 ? text.length : nl + 1;
    const segment = text.slice(pos, end);
    // A literal "<" means the text is HTML: its entities are kept, here and in every later line.
    if (segment.includes("<")) htmlEntities = false;
    out += fixSegment(segment, htmlEntities);
    pos = end;
  }
  return out;
}
