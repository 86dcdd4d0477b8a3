// Dataset readers: JSONL manifest, MagicBrush folder, MagicBrush parquet (committed fixture from
// tests/fixtures/gen/magicbrush_parquet.ts), and openDataset's detection.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { Jimp } from "jimp";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { UserError } from "../src/errors.ts";
import {
  openDataset,
  openMagicBrushFolder,
  openMagicBrushParquet,
  openManifest,
  loadImage,
  loadMask,
  type EditDataset,
  type EditSample,
} from "../src/io/datasets/index.ts";
import { binarizeMask, decodeRgba } from "../src/io/mask.ts";

const fixtures = fileURLToPath(new URL("./fixtures/", import.meta.url));
const parquetDir = join(fixtures, "magicbrush_parquet");
const expectedParquet = JSON.parse(
  readFileSync(join(fixtures, "magicbrush_parquet.expected.json"), "utf8"),
) as {
  width: number;
  height: number;
  rows: {
    file: number;
    img_id: string;
    turn_index: number;
    instruction: string;
    source: number[];
    target: number[];
    maskArea: number;
  }[];
};

let tmp: string;
beforeAll(() => {
  tmp = mkdtempSync(join(tmpdir(), "rl4pix-datasets-"));
});
afterAll(() => {
  rmSync(tmp, { recursive: true, force: true });
});

async function png(path: string, rgba: number): Promise<void> {
  const img = new Jimp({ width: 4, height: 3, color: rgba });
  writeFileSync(path, new Uint8Array(await img.getBuffer("image/png")));
}

async function collect(ds: EditDataset): Promise<EditSample[]> {
  const out: EditSample[] = [];
  for await (const s of ds) out.push(s);
  return out;
}

/** The colour of pixel (0, 0) of an image ref. */
async function firstPixel(ref: { bytes(): Promise<Uint8Array> }): Promise<number[]> {
  const img = await decodeRgba(await ref.bytes());
  return Array.from(img.data.slice(0, 3));
}

async function rejects(p: Promise<unknown>, pattern: RegExp): Promise<void> {
  let err: unknown;
  try {
    await p;
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(UserError);
  expect((err as Error).message).toMatch(pattern);
}

describe("JSONL manifest", () => {
  let dir: string;
  beforeAll(async () => {
    dir = join(tmp, "manifest");
    mkdirSync(join(dir, "img"), { recursive: true });
    await png(join(dir, "img", "a.png"), 0x102030ff);
    await png(join(dir, "img", "a_mask.png"), 0xffffffff);
    await png(join(dir, "img", "b.png"), 0x405060ff);
    await png(join(dir, "img", "b_target.png"), 0x708090ff);
  });

  test("reads entries with paths relative to the manifest, in order", async () => {
    const m = join(dir, "edits.jsonl");
    writeFileSync(
      m,
      [
        JSON.stringify({ source: "img/a.png", mask: "img/a_mask.png", instruction: "add a hat" }),
        "",
        JSON.stringify({
          source: join(dir, "img/b.png"),
          mask: "img/a_mask.png",
          target: "img/b_target.png",
          instruction: "  make it red ",
          caption: "a red thing",
          id: 17,
        }),
      ].join("\n") + "\n",
    );
    const ds = await openManifest(m);
    expect(ds.kind).toBe("manifest");
    expect(ds.size).toBe(2);
    const s = await collect(ds);
    expect(s.map((x) => x.id)).toEqual(["line1", "17"]);
    expect(s[1]!.instruction).toBe("make it red");
    expect(s[1]!.caption).toBe("a red thing");
    expect(s[0]!.target).toBeUndefined();
    expect(s[0]!.turn).toBe(1);
    expect(s[0]!.turns).toBe(1);
    expect(s.map((x) => x.index)).toEqual([0, 1]);
    expect(await firstPixel(s[0]!.source)).toEqual([0x10, 0x20, 0x30]);
    expect(await firstPixel(s[1]!.source)).toEqual([0x40, 0x50, 0x60]);
    expect(await firstPixel(s[1]!.target!)).toEqual([0x70, 0x80, 0x90]);
    expect(s[0]!.sessionSource.name).toBe(s[0]!.source.name);
    // Re-iterable.
    expect((await collect(ds)).length).toBe(2);
  });

  test("errors name the manifest and the line", async () => {
    const ok = JSON.stringify({ source: "img/a.png", mask: "img/a_mask.png", instruction: "x" });
    const cases: [string, RegExp][] = [
      [`${ok}\n{"source": "img/a.png", "mask":`, /bad1\.jsonl:2: not valid JSON/],
      [`${ok}\n${JSON.stringify({ source: "img/a.png", instruction: "x" })}`, /bad2\.jsonl:2: missing field "mask"/],
      [`\n\n${JSON.stringify({ source: "img/a.png", mask: "img/a_mask.png", instruction: "   " })}`, /bad3\.jsonl:3: empty instruction/],
      [JSON.stringify({ source: "img/nope.png", mask: "img/a_mask.png", instruction: "x" }), /bad4\.jsonl:1: source file not found/],
      [`${ok.replace("}", ', "id": "k"}')}\n${ok.replace("}", ', "id": "k"}')}`, /bad5\.jsonl:2: duplicate id "k" \(first on line 1\)/],
      [`[1, 2]`, /bad6\.jsonl:1: expected a JSON object/],
      [``, /bad7\.jsonl: the manifest has no samples/],
      [JSON.stringify({ source: "img/a.png", mask: "img/a_mask.png", instruction: 5 }), /bad8\.jsonl:1: field "instruction" must be a string/],
    ];
    for (let i = 0; i < cases.length; i++) {
      const [text, pattern] = cases[i]!;
      const p = join(dir, `bad${i + 1}.jsonl`);
      writeFileSync(p, text);
      await rejects(openManifest(p), pattern);
    }
    await rejects(openManifest(join(dir, "missing.jsonl")), /missing\.jsonl: cannot read/);
  });

  test("img_id and turn group manifest lines into sessions", async () => {
    const m = join(dir, "sessions.jsonl");
    const line = (turn: number, source: string) =>
      JSON.stringify({ source, mask: "img/a_mask.png", instruction: `step ${turn}`, img_id: "s1", turn, id: `s1-${turn}` });
    writeFileSync(m, [line(1, "img/a.png"), line(2, "img/b.png")].join("\n"));
    const s = await collect(await openManifest(m));
    expect(s.map((x) => [x.imgId, x.turn, x.turns])).toEqual([["s1", 1, 2], ["s1", 2, 2]]);
    expect(s[1]!.sessionSource.name).toBe(join(dir, "img", "a.png"));
  });
});

describe("MagicBrush folder", () => {
  let root: string;
  beforeAll(async () => {
    root = join(tmp, "mb");
    const sessions: Record<string, { input: string; output: string; mask: string; instruction: string }[]> = {
      "327726": [
        { input: "327726-input.png", output: "327726-output1.png", mask: "327726-mask1.png", instruction: "add a boat" },
        { input: "327726-output1.png", output: "327726-output2.png", mask: "327726-mask2.png", instruction: "make the boat red" },
      ],
      "12": [{ input: "12-input.png", output: "12-output1.png", mask: "12-mask1.png", instruction: "remove the cup" }],
    };
    let colour = 1;
    for (const [id, turns] of Object.entries(sessions)) {
      mkdirSync(join(root, "images", id), { recursive: true });
      await png(join(root, "images", id, `${id}-input.png`), ((colour++ << 24) | 0xff) >>> 0);
      for (let k = 1; k <= turns.length; k++) {
        await png(join(root, "images", id, `${id}-output${k}.png`), ((colour++ << 24) | 0xff) >>> 0);
        // MagicBrush-style mask: transparent pixel (0, 0), the rest opaque.
        const mask = new Jimp({ width: 4, height: 3, color: 0xffffffff });
        mask.setPixelColor(0x00000000, 0, 0);
        writeFileSync(join(root, "images", id, `${id}-mask${k}.png`), new Uint8Array(await mask.getBuffer("image/png")));
      }
    }
    writeFileSync(join(root, "edit_sessions.json"), JSON.stringify(sessions));
    writeFileSync(
      join(root, "local_captions.json"),
      JSON.stringify({ "327726": { "327726-output1.png": "a boat on a lake", "327726-output2.png": "a red boat" } }),
    );
  });

  test("yields turns in session order with single- and multi-turn sources", async () => {
    const ds = await openMagicBrushFolder(root);
    expect(ds.kind).toBe("magicbrush-folder");
    expect(ds.size).toBe(3);
    const s = await collect(ds);
    // JavaScript orders integer-like keys numerically: "12" before "327726".
    expect(s.map((x) => x.id)).toEqual(["12_1", "327726_1", "327726_2"]);
    expect(s.map((x) => [x.turn, x.turns])).toEqual([[1, 1], [1, 2], [2, 2]]);
    expect(s.map((x) => x.caption)).toEqual([undefined, "a boat on a lake", "a red boat"]);
    const t2 = s[2]!;
    expect(t2.instruction).toBe("make the boat red");
    // Single-turn source of turn 2 = ground truth of turn 1; multi-turn starts from the input.
    expect(await firstPixel(t2.source)).toEqual(await firstPixel(s[1]!.target!));
    expect(await firstPixel(t2.sessionSource)).toEqual(await firstPixel(s[1]!.source));
    expect(t2.mask.name).toBe(join(root, "images", "327726", "327726-mask2.png"));
    const m = binarizeMask(await decodeRgba(await t2.mask.bytes()));
    expect(Array.from(m.data).reduce((a, b) => a + b, 0)).toBe(1);
    expect(m.data[0]).toBe(1);
  });

  test("errors name edit_sessions.json and the session", async () => {
    const bad = join(tmp, "mb_bad");
    mkdirSync(join(bad, "images", "5"), { recursive: true });
    writeFileSync(join(bad, "edit_sessions.json"), JSON.stringify({ "5": [{ input: "5-input.png", output: "5-output1.png", mask: "5-mask1.png", instruction: "x" }] }));
    await rejects(openMagicBrushFolder(bad), /edit_sessions\.json: session "5" turn 1: image not found: .*5-input\.png/);
    writeFileSync(join(bad, "edit_sessions.json"), JSON.stringify({ "5": [{ input: "5-input.png", output: "5-output1.png", mask: "5-mask1.png" }] }));
    await rejects(openMagicBrushFolder(bad), /session "5" turn 1: missing or empty "instruction"/);
    writeFileSync(join(bad, "edit_sessions.json"), "[");
    await rejects(openMagicBrushFolder(bad), /edit_sessions\.json: not valid JSON/);
  });
});

describe("MagicBrush parquet", () => {
  const rows = expectedParquet.rows;

  test("a folder: every file, every row group, in order, with decodable images", async () => {
    const ds = await openMagicBrushParquet(parquetDir);
    expect(ds.kind).toBe("magicbrush-parquet");
    expect(ds.size).toBe(rows.length);
    const s = await collect(ds);
    expect(s.map((x) => [x.imgId, x.turn, x.instruction])).toEqual(rows.map((r) => [r.img_id, r.turn_index, r.instruction]));
    const turnsOf = (id: string) => Math.max(...rows.filter((r) => r.img_id === id).map((r) => r.turn_index));
    expect(s.map((x) => x.turns)).toEqual(rows.map((r) => turnsOf(r.img_id)));
    expect(s.map((x) => x.id)).toEqual(rows.map((r) => `${r.img_id}_${r.turn_index}`));
    for (let i = 0; i < s.length; i++) {
      const r = rows[i]!;
      expect(await firstPixel(s[i]!.source)).toEqual(r.source);
      expect(await firstPixel(s[i]!.target!)).toEqual(r.target);
      const mask = binarizeMask(await decodeRgba(await s[i]!.mask.bytes()));
      expect([mask.width, mask.height]).toEqual([expectedParquet.width, expectedParquet.height]);
      expect(Array.from(mask.data).reduce((a, b) => a + b, 0)).toBe(r.maskArea);
      // Multi-turn: the session's turn-1 source.
      const first = rows.find((q) => q.img_id === r.img_id && q.turn_index === 1)!;
      expect(await firstPixel(s[i]!.sessionSource)).toEqual(first.source);
    }
  });

  test("a single file, split filter, early break", async () => {
    const one = await openMagicBrushParquet(join(parquetDir, "train-00001-of-00002.parquet"));
    expect(one.size).toBe(rows.filter((r) => r.file === 1).length);
    expect((await collect(one))[0]!.instruction).toBe("turn the sky pink");
    expect((await openMagicBrushParquet(parquetDir, { split: "train" })).size).toBe(rows.length);
    await rejects(openMagicBrushParquet(parquetDir, { split: "dev" }), /no "dev" parquet files/);
    const ds = await openMagicBrushParquet(parquetDir);
    for await (const x of ds) {
      expect(x.turn).toBe(1);
      break; // closes the file through the generator's finally
    }
  });

  test("a parquet file without MagicBrush's columns", async () => {
    await rejects(
      openMagicBrushParquet(join(fixtures, "not_magicbrush.parquet")),
      /not_magicbrush\.parquet: not a MagicBrush parquet file: missing column\(s\) img_id, source_img/,
    );
    const junk = join(tmp, "junk.parquet");
    writeFileSync(junk, "this is not parquet at all, not even close");
    await rejects(openMagicBrushParquet(junk), /junk\.parquet: not a readable parquet file/);
  });
});

describe("openDataset", () => {
  test("recognises each kind", async () => {
    expect((await openDataset(parquetDir)).kind).toBe("magicbrush-parquet");
    expect((await openDataset(join(parquetDir, "train-00000-of-00002.parquet"))).kind).toBe("magicbrush-parquet");
    expect((await openDataset(join(tmp, "mb"))).kind).toBe("magicbrush-folder");
    expect((await openDataset(join(tmp, "manifest", "edits.jsonl"))).kind).toBe("manifest");
    // A folder holding manifest.jsonl (what `synth` writes).
    const d = join(tmp, "withmanifest");
    mkdirSync(d, { recursive: true });
    await png(join(d, "s.png"), 0x000000ff);
    writeFileSync(join(d, "manifest.jsonl"), JSON.stringify({ source: "s.png", mask: "s.png", instruction: "x" }));
    expect((await openDataset(d)).kind).toBe("manifest");
  });

  test("anything else is a UserError", async () => {
    await rejects(openDataset(join(tmp, "does-not-exist")), /no such file or folder/);
    const txt = join(tmp, "notes.txt");
    writeFileSync(txt, "hi");
    await rejects(openDataset(txt), /notes\.txt: unknown dataset file/);
    const empty = join(tmp, "empty");
    mkdirSync(empty, { recursive: true });
    await rejects(openDataset(empty), /empty: not a dataset folder/);
  });
});

describe("loadImage / loadMask", () => {
  test("decode refs; undecodable bytes are user errors naming the ref", async () => {
    const s = (await collect(await openMagicBrushParquet(join(parquetDir, "train-00001-of-00002.parquet"))))[0]!;
    const img = await loadImage(s.source);
    expect([img.width, img.height, img.channels]).toEqual([expectedParquet.width, expectedParquet.height, 3]);
    expect(Math.round(img.data[0]! * 255)).toBe(200);
    const m = await loadMask(s.mask);
    expect(Array.from(m.data).reduce((a, b) => a + b, 0)).toBe(expectedParquet.rows[5]!.maskArea);
    const junk = { name: "junk.png", bytes: async () => new Uint8Array([1, 2, 3, 4]) };
    await rejects(loadImage(junk), /junk\.png/);
    await rejects(loadMask(junk), /junk\.png: cannot decode the mask image/);
  });
});
