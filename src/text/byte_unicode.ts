// The reversible byte <-> character mapping of byte-level BPE (GPT-2 / CLIP): printable Latin-1
// bytes ('!'..'~', '¡'..'¬', '®'..'ÿ') stand for themselves; the other 68 bytes (controls, space,
// soft hyphen, …) are mapped, in byte order, to U+0100, U+0101, …, so no symbol is whitespace.

function isPrintableByte(b: number): boolean {
  return (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
}

/** BYTE_TO_CHAR[b] is the character standing for byte b. */
export const BYTE_TO_CHAR: readonly string[] = (() => {
  const out: string[] = new Array(256);
  let next = 0x100;
  for (let b = 0; b < 256; b++) out[b] = String.fromCharCode(isPrintableByte(b) ? b : next++);
  return out;
})();

export const CHAR_TO_BYTE: ReadonlyMap<string, number> = new Map(BYTE_TO_CHAR.map((c, b) => [c, b]));

const utf8 = new TextEncoder();

/** The UTF-8 bytes of `text`, each written as its stand-in character. */
export function bytesToSymbols(text: string): string {
  let out = "";
  for (const b of utf8.encode(text)) out += BYTE_TO_CHAR[b];
  return out;
}

/** Inverse of `bytesToSymbols` (unknown characters are dropped; invalid UTF-8 becomes U+FFFD). */
export function symbolsToText(symbols: string): string {
  const bytes: number[] = [];
  for (const c of symbols) {
    const b = CHAR_TO_BYTE.get(c);
    if (b !== undefined) bytes.push(b);
  }
  return new TextDecoder("utf-8").decode(Uint8Array.from(bytes));
}
