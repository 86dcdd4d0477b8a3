// Source-level loop unrolling for kernels that keep per-thread arrays (attention's queries and
// accumulators). lavapipe lowers a dynamically indexed per-thread array into if-ladders over every
// element, which made such kernels take minutes to compile and run slowly; with the loops unrolled
// in the source every index is a constant and the arrays become plain registers.
//
//   #unroll NAME COUNT        COUNT: a number or the name of a numeric define
//     ... $NAME ...           replaced by 0, 1, ..., COUNT-1 (nestable; outer names are visible)
//   #endunroll
import { type Defines, preprocess } from "../../gpu/kernels.ts";

function expand(lines: string[], defines: Defines): string[] {
  const out: string[] = [];
  for (let i = 0; i < lines.length; i++) {
    const m = lines[i].trim().match(/^#unroll\s+(\w+)\s+(\w+)$/);
    if (!m) {
      if (lines[i].trim() === "#endunroll") throw new Error("#endunroll without #unroll");
      out.push(lines[i]);
      continue;
    }
    const [, name, countText] = m;
    const count = /^\d+$/.test(countText) ? Number(countText) : Number(defines[countText]);
    if (!Number.isInteger(count) || count < 0) throw new Error(`#unroll ${name} ${countText}: count is not a non-negative integer`);
    let depth = 1;
    let j = i + 1;
    for (; j < lines.length; j++) {
      const t = lines[j].trim();
      if (t.startsWith("#unroll ")) depth++;
      else if (t === "#endunroll" && --depth === 0) break;
    }
    if (depth !== 0) throw new Error(`#unroll ${name}: missing #endunroll`);
    const body = lines.slice(i + 1, j);
    const re = new RegExp(`\\$${name}\\b`, "g");
    for (let k = 0; k < count; k++) out.push(...expand(body.map((l) => l.replace(re, String(k))), defines));
    i = j;
  }
  return out;
}

const cache = new Map<string, string>();

/** Preprocess `source` with `defines` (#if, {{NAME}}), then expand its #unroll blocks. Cached. */
export function unrolledSource(name: string, source: string, defines: Defines): string {
  const key = name + "|" + JSON.stringify(defines, Object.keys(defines).sort());
  let s = cache.get(key);
  if (s === undefined) {
    s = expand(preprocess(source, defines).split("\n"), defines).join("\n");
    cache.set(key, s);
  }
  return s;
}
