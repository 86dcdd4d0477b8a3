// Synthetic dataset: determinism, exact masks, vocabulary closure, and the written manifest.
import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { synthDataset } from "../src/data/synth_dataset.ts";
import { loadImage, loadMask, openDataset } from "../src/io/datasets/index.ts";
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

  test("grounded scenes: 2-3 shapes of distinct colours, and the instruction names an edited shape by colour and kind", () => {
    const grounded = Array.from({ length: 80 }, (_, i) => synthSample(5, i, { size: 32, grounded: true }));
    for (const s of grounded) {
      const src = s.sourceScene.shapes;
      const tgt = s.targetScene.shapes;
      if (s.kind === "insert") expect(src.length).toBeGreaterThanOrEqual(1);
      else expect(src.length).toBeGreaterThanOrEqual(2);
      expect(Math.max(src.length, tgt.length)).toBeLessThanOrEqual(3);
      for (const shapes of [src, tgt]) expect(new Set(shapes.map((x) => x.color)).size).toBe(shapes.length);
      // remove / replace / recolour etc.: the instruction names one source shape, and that shape is
      // the one whose pixels the mask covers.
      const named = src.filter((x) => s.instruction.includes(`${x.color} ${x.kind}`));
      if (s.kind === "remove" || s.kind === "replace") {
        expect(named.length).toBe(1);
        const m = shapeMask(named[0], s.width, s.height);
        for (let i = 0; i < m.length; i++) if (m[i]) expect(s.mask[i]).toBe(1);
      }
      if (s.kind === "insert") expect(named.length).toBe(0);
      expect(count(diffMask(s))).toBeGreaterThan(0);
    }
    // The default (ungrounded) generator still makes scenes with fewer shapes.
    expect(samples.some((s) => s.sourceScene.shapes.length < 2 && s.kind !== "insert")).toBe(true);
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

describe("synthDataset", () => {
  const tmp = mkdtempSync(join(tmpdir(), "rl4pix-synth-"));
  afterAll(() => rmSync(tmp, { recursive: true, force: true }));

  test("writes PNGs and a manifest that openDataset reads back exactly", async () => {
    const dir = join(tmp, "a");
    const manifest = await synthDataset(dir, { n: 6, seed: 3, size: 24 });
    expect(manifest).toBe(join(dir, "manifest.jsonl"));
    const ds = await openDataset(dir);
    expect(ds.kind).toBe("manifest");
    expect(ds.size).toBe(6);
    let i = 0;
    for await (const s of ds) {
      const want = synthSample(3, i, { size: 24 });
      expect(s.id).toBe(want.id);
      expect(s.instruction).toBe(want.instruction);
      expect(s.caption).toBe(want.caption);
      const src = await loadImage(s.source);
      const tgt = await loadImage(s.target!);
      const n = 24 * 24;
      for (let p = 0; p < n; p++) {
        for (let c = 0; c < 3; c++) {
          expect(Math.round(src.data[c * n + p]! * 255)).toBe(want.source[3 * p + c]!);
          expect(Math.round(tgt.data[c * n + p]! * 255)).toBe(want.target[3 * p + c]!);
        }
      }
      const m = await loadMask(s.mask);
      expect(Array.from(m.data)).toEqual(Array.from(want.mask));
      i++;
    }
    expect(i).toBe(6);
    // No temporary files left behind.
    expect(readdirSync(join(dir, "images")).filter((f) => f.endsWith(".tmp"))).toEqual([]);
    expect(readdirSync(join(dir, "images")).length).toBe(18);
  });

  test("same seed, same files", async () => {
    await synthDataset(join(tmp, "b"), { n: 2, seed: 9, size: 16 });
    await synthDataset(join(tmp, "c"), { n: 2, seed: 9, size: 16 });
    for (const f of ["manifest.jsonl", "images/synth-9-00001-target.png", "images/synth-9-00000-mask.png"]) {
      expect(readFileSync(join(tmp, "b", f))).toEqual(readFileSync(join(tmp, "c", f)));
    }
  });

  test("grounded: the manifest holds the grounded generator's samples", async () => {
    await synthDataset(join(tmp, "g"), { n: 4, seed: 9, size: 32, grounded: true });
    const lines = readFileSync(join(tmp, "g", "manifest.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l));
    expect(lines.map((l) => l.instruction)).toEqual([0, 1, 2, 3].map((i) => synthSample(9, i, { size: 32, grounded: true }).instruction));
    expect(lines.map((l) => l.caption)).not.toEqual([0, 1, 2, 3].map((i) => synthSample(9, i, { size: 32 }).caption));
  });

  test("bad options are user errors", async () => {
    await expect(synthDataset(join(tmp, "d"), { n: 0, seed: 1 })).rejects.toThrow(/positive integer/);
    await expect(synthDataset(join(tmp, "d"), { n: 1, seed: 1, size: 4 })).rejects.toThrow(/>= 16/);
  });
});
