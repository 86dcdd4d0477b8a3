// HTML entity decoding as ftfy 6.1 does it (`unescape_html`): only complete references that end in ';'
// (`&amp;`, `&#233;`, `&#x41;`) are replaced, plus upper-cased spellings of lower-case names
// (`&EACUTE;` -> `É`) where the upper-cased spelling is not itself a reference. Anything else stays.
import table from "./html_entities.json" with { type: "json" };

const NAMED = new Map<string, string>(Object.entries(table.named));

/** Does Python's html.unescape change `&NAME;`? (it also accepts legacy names without ';' as a prefix) */
function pythonUnescapes(nameWithSemicolon: string, legacy: Set<string>): boolean {
  if (NAMED.has(nameWithSemicolon.slice(0, -1))) return true;
  for (let x = nameWithSemicolon.length - 1; x > 1; x--) {
    if (legacy.has(nameWithSemicolon.slice(0, x))) return true;
  }
  return false;
}

/** "&name;" -> characters, with ftfy's extra upper-case spellings. */
const ENTITIES: Map<string, string> = (() => {
  const legacy = new Set(table.legacy);
  const out = new Map<string, string>();
  for (const [name, chars] of NAMED) {
    out.set(`&${name};`, chars);
    if (name === name.toLowerCase()) {
      const upper = name.toUpperCase();
      if (!pythonUnescapes(`${upper};`, legacy)) out.set(`&${upper};`, chars.toUpperCase());
    }
  }
  return out;
})();

// Numeric references to these code points decode to a replacement (as Python's html.unescape does).
const WINDOWS_1252_C1 =
  "\u20ac\x81\u201a\u0192\u201e\u2026\u2020\u2021\u02c6\u2030\u0160\u2039\u0152\x8d\u017d\x8f" +
  "\x90\u2018\u2019\u201c\u201d\u2022\u2013\u2014\u02dc\u2122\u0161\u203a\u0153\x9d\u017e\u0178";

function isInvalidCodePoint(n: number): boolean {
  return (n >= 0x1 && n <= 0x8) || n === 0xb || (n >= 0xe && n <= 0x1f) || (n >= 0x7f && n <= 0x9f) ||
    (n >= 0xfdd0 && n <= 0xfdef) || (n & 0xfffe) === 0xfffe;
}

function numericReference(ref: string): string | null {
  const m = /^&#(?:([0-9]+)|[xX]([0-9a-fA-F]+));$/.exec(ref);
  if (!m) return null;
  const n = m[1] !== undefined ? Number.parseInt(m[1], 10) : Number.parseInt(m[2], 16);
  if (n === 0) return "\ufffd";
  if (n === 0x0d) return "\r";
  if (n >= 0x80 && n <= 0x9f) return WINDOWS_1252_C1[n - 0x80];
  if ((n >= 0xd800 && n <= 0xdfff) || n > 0x10ffff) return "\ufffd";
  if (isInvalidCodePoint(n)) return "";
  return String.fromCodePoint(n);
}

const REFERENCE = /&#?[0-9A-Za-z]{1,24};/g;

export function unescapeHtml(text: string): string {
  if (!text.includes("&")) return text;
  return text.replace(REFERENCE, (ref) => ENTITIES.get(ref) ?? numericReference(ref) ?? ref);
}
