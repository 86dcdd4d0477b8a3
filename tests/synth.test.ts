// Synthetic dataset: determinism, exact masks, vocabulary closure, and the written manifest.
import { describe, expect, test } from "bun:test";
import {
  EDIT_KINDS,
  SHAPE_COLORS,
  SYNTH_VOCABULARY,
  captionOf,
  renderScene,
  shapeMask,
  synthSample,
  type Scene,
  type SynthSample,
} from "../src/data/synth.ts";

const N = 48;
const SIZE = 40;
const samples: SynthSample[] = Array.from({ length: N }, (_, i) => synthSample(7, i, { size: SIZE }));

function diffMask(s: SynthSample): Uint8Array {
  const d = new Uint8Array(s.width * s.height);
  for (let i = 0; i < d.length; i++) {
    const o = 3 * i;
    d[i] = s.source[o] !== s.target[o] || s.source[o + 1] !== s.target[o + 1] || s.source[o + 2] !== s.target[o + 2] ? 1 : 0;
  }
  return d;
}

function count(m: Uint8Array): number {
  let n = 0;
  for (const v of m) n += v;
  return n;
}

describe("synthSample", () => {
  test("deterministic for (seed, index); different seeds differ", () => {
    const again = synthSample(7, 5, { size: SIZE });
    expect(again.instruction).toBe(samples[5]!.instruction);
    expect(again.caption).toBe(samples[5]!.caption);
    expect(again.source).toEqual(samples[5]!.source);
    expect(again.target).toEqual(samples[5]!.target);
    expect(again.mask).toEqual(samples[5]!.mask);
    const other = Array.from({ length: 8 }, (_, i) => synthSample(8, i, { size: SIZE }));
    const same = other.filter((o, i) => o.instruction === samples[i]!.instruction && o.caption === samples[i]!.caption);
    expect(same.length).toBeLessThan(4);
  });

  test("kinds cycle insert, remove, replace, transform", () => {
    expect(samples.slice(0, 8).map((s) => s.kind)).toEqual([...EDIT_KINDS, ...EDIT_KINDS]);
  });

  test("insert / remove / replace: mask == pixels where source and target differ", () => {
    for (const s of samples.filter((x) => x.kind !== "transform")) {
      const d = diffMask(s);
      expect(count(s.mask)).toBeGreaterThan(0);
      expect(Array.from(d)).toEqual(Array.from(s.mask));
    }
  });

  test("transform: mask covers every changed pixel and something changed", () => {
    for (const s of samples.filter((x) => x.kind === "transform")) {
      const d = diffMask(s);
      expect(count(d)).toBeGreaterThan(0);
      for (let i = 0; i < d.length; i++) if (d[i]) expect(s.mask[i]).toBe(1);
    }
  });

  test("insert mask is the new shape; remove mask is the removed shape (by geometry)", () => {
    for (const s of samples) {
      if (s.kind === "insert") {
        const added = s.targetScene.shapes[s.targetScene.shapes.length - 1]!;
        expect(s.targetScene.shapes.length).toBe(s.sourceScene.shapes.length + 1);
        expect(s.mask).toEqual(shapeMask(added, s.width, s.height));
        expect(s.instruction).toContain(`${added.color} ${added.kind}`);
      }
      if (s.kind === "remove") {
        const gone = s.sourceScene.shapes.find(
          (a) => !s.targetScene.shapes.some((b) => a.kind === b.kind && a.color === b.color),
        )!;
        expect(s.mask).toEqual(shapeMask(gone, s.width, s.height));
        expect(s.instruction).toContain(`the ${gone.color} ${gone.kind}`);
      }
    }
  });

  test("every instruction and caption word is in the exported vocabulary", () => {
    const vocab = new Set(SYNTH_VOCABULARY);
    expect(vocab.size).toBe(SYNTH_VOCABULARY.length);
    const more = Array.from({ length: 200 }, (_, i) => synthSample(11, i, { size: 32 }));
    for (const s of [...samples, ...more]) {
      for (const text of [s.instruction, s.caption]) {
        expect(text).toMatch(/^[a-z]+( [a-z]+)*$/);
        for (const w of text.split(" ")) expect(vocab.has(w) ? w : `missing: ${w}`).toBe(w);
      }
    }
    // The vocabulary is closed but small.
    expect(SYNTH_VOCABULARY.length).toBeLessThan(120);
    for (const c of Object.keys(SHAPE_COLORS)) expect(vocab.has(c)).toBe(true);
  });

  test("captions describe the target scene", () => {
    const scene: Scene = {
      width: 16,
      height: 16,
      background: { kind: "flat", colors: ["gray", "gray"], vertical: false, period: 4 },
      shapes: [
        { kind: "star", color: "yellow", cx: 8, cy: 8, r: 3 },
        { kind: "circle", color: "orange", cx: 4, cy: 4, r: 2 },
      ],
    };
    expect(captionOf(scene)).toBe("a yellow star and an orange circle on a gray background");
    expect(captionOf({ ...scene, shapes: [] })).toBe("a plain gray background");
    expect(
      captionOf({ ...scene, background: { kind: "stripes", colors: ["white", "black"], vertical: true, period: 3 } }),
    ).toContain("on a white and black striped background");
    for (const s of samples) expect(s.caption).toBe(captionOf(s.targetScene));
  });

  test("rendering: exact circle area and stripes by hand", () => {
    const scene: Scene = {
      width: 8,
      height: 4,
      background: { kind: "stripes", colors: ["white", "black"], vertical: false, period: 2 },
      shapes: [],
    };
    const img = renderScene(scene);
    // Columns 0-1 white, 2-3 black, 4-5 white, 6-7 black.
    const row = Array.from({ length: 8 }, (_, x) => img[3 * x]);
    expect(row).toEqual([245, 245, 25, 25, 245, 245, 25, 25]);
    // Circle of radius 1.5 centred on (4, 4): pixel centres within 1.5 → the 2x2 block around the
    // centre plus none of the ring at distance sqrt(0.5² + 1.5²) ≈ 1.58.
    const m = shapeMask({ kind: "circle", color: "red", cx: 4, cy: 4, r: 1.5 }, 8, 8);
    const on: number[] = [];
    m.forEach((v, i) => v && on.push(i));
    expect(on).toEqual([3 * 8 + 3, 3 * 8 + 4, 4 * 8 + 3, 4 * 8 + 4]);
    // Square of half side 0.7·r = 2.1 around (4, 4): pixel centres 2.5..5.5 → x, y in 2..5.
    const sq = shapeMask({ kind: "square", color: "red", cx: 4, cy: 4, r: 3 }, 8, 8);
    expect(count(sq)).toBe(16);
  });

  test("rejects bad sizes", () => {
    expect(() => synthSample(1, 0, { size: 8 })).toThrow(/size/);
  });
});
