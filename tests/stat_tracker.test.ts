// Per-prompt stat tracker: hand-computed cases and bit-equality with numpy (fixture written by
// tests/fixtures/gen/stat_tracker.py, an independent numpy implementation of ddpo-pytorch's rules).
import { describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { UserError } from "../src/errors.ts";
import { PerPromptStatTracker, clipAdvantages, npMean, npStd, sampleKey } from "../src/rl/stat_tracker.ts";

const EPS = 1e-6;

describe("PerPromptStatTracker by hand", () => {
  test("below min_count: the whole batch's mean and population std", () => {
    const t = new PerPromptStatTracker(16, 16);
    // batch mean 4, population variance (9 + 1 + 1 + 9) / 4 = 5
    const adv = t.update(["a", "a", "b", "b"], [1, 3, 5, 7]);
    const s = Math.sqrt(5) + EPS;
    expect(adv).toEqual([-3 / s, -1 / s, 1 / s, 3 / s]);
  });

  test("at min_count: the key's own buffer", () => {
    const t = new PerPromptStatTracker(3, 2);
    // a's buffer [1, 3]: mean 2, std 1; b has one value, so it uses the batch [1, 3, 10]:
    // mean 14/3, variance ((11/3)² + (5/3)² + (16/3)²) / 3 = 402/27
    const adv = t.update(["a", "b", "a"], [1, 10, 3]);
    expect(adv[0]).toBeCloseTo(-1 / (1 + EPS), 15);
    expect(adv[2]).toBeCloseTo(1 / (1 + EPS), 15);
    expect(adv[1]).toBeCloseTo((10 - 14 / 3) / (Math.sqrt(402 / 27) + EPS), 14);
  });

  test("the buffer keeps the last buffer_size values across batches", () => {
    const t = new PerPromptStatTracker(2, 2);
    t.update(["a", "a"], [1, 3]);
    // buffer becomes [3, 5]: mean 4, std 1
    expect(t.update(["a"], [5])).toEqual([1 / (1 + EPS)]);
    expect(t.stats()).toEqual({ a: { count: 2, mean: 4, std: 1 } });
    // [5, 9]: mean 7, std 2
    expect(t.update(["a"], [9])).toEqual([2 / (2 + EPS)]);
  });

  test("a key's values of one batch all enter its buffer before its stats are taken", () => {
    const t = new PerPromptStatTracker(4, 4);
    // a reaches 4 values within this batch: buffer [0, 2, 4, 6], mean 3, variance 5
    const adv = t.update(["a", "a", "a", "a", "b"], [0, 2, 4, 6, 100]);
    const s = Math.sqrt(5) + EPS;
    expect(adv.slice(0, 4)).toEqual([-3 / s, -1 / s, 1 / s, 3 / s]);
    // b: batch mean 22.4, batch std of [0, 2, 4, 6, 100]
    const m = 22.4;
    const v = ((0 - m) ** 2 + (2 - m) ** 2 + (4 - m) ** 2 + (6 - m) ** 2 + (100 - m) ** 2) / 5;
    expect(adv[4]).toBeCloseTo((100 - m) / (Math.sqrt(v) + EPS), 12);
  });

  test("a constant batch gives zero advantages (std 0 + 1e-6)", () => {
    const t = new PerPromptStatTracker(16, 16);
    expect(t.update(["a", "b"], [0.5, 0.5])).toEqual([0, 0]);
  });

  test("counts per key and input checks", () => {
    const t = new PerPromptStatTracker(3, 3);
    t.update(["x", "y", "x", "x", "x"], [1, 2, 3, 4, 5]);
    const st = t.stats();
    expect(st.x.count).toBe(3);
    expect(st.y.count).toBe(1);
    expect(t.size).toBe(2);
    expect(() => t.update(["a"], [1, 2])).toThrow(/1 keys but 2 rewards/);
    expect(() => t.update(["a"], [NaN])).toThrow(/not finite/);
    expect(() => new PerPromptStatTracker(0, 1)).toThrow(/buffer_size/);
  });
});

describe("helpers", () => {
  test("clipAdvantages", () => {
    expect(clipAdvantages([-7, -5, 0.5, 5, 9], 5)).toEqual([-5, -5, 0.5, 5, 5]);
  });

  test("sampleKey does not collide on separators", () => {
    expect(sampleKey("a", 1, "b c")).not.toBe(sampleKey("a 1", 1, "b c"));
    expect(sampleKey("12", 1, "x")).not.toBe(sampleKey("1", 21, "x"));
    expect(sampleKey("a", 1, "b")).toBe(sampleKey("a", 1, "b"));
  });

  test("npMean / npStd by hand", () => {
    expect(npMean([2, 4, 4, 4, 5, 5, 7, 9])).toBe(5);
    expect(npStd([2, 4, 4, 4, 5, 5, 7, 9])).toBe(2);
  });
});

describe("numpy reference", () => {
  const fixture = JSON.parse(readFileSync(new URL("./fixtures/stat_tracker_numpy.json", import.meta.url), "utf8")) as {
    cases: { buffer_size: number; min_count: number; batches: [string[], number[]][]; advantages: number[][]; buffers: Record<string, number[]> }[];
  };

  test("advantages equal numpy's to the bit, batches and buffers over 128 values included", () => {
    expect(fixture.cases.length).toBe(4);
    for (const c of fixture.cases) {
      const t = new PerPromptStatTracker(c.buffer_size, c.min_count);
      c.batches.forEach(([keys, rewards], i) => {
        expect(t.update(keys, rewards)).toEqual(c.advantages[i]);
      });
      expect(t.toJSON().buffers).toEqual(c.buffers);
    }
  });

  test("a tracker restored from JSON continues bit-identically", () => {
    for (const c of fixture.cases) {
      const a = new PerPromptStatTracker(c.buffer_size, c.min_count);
      const half = Math.ceil(c.batches.length / 2);
      let b: PerPromptStatTracker | null = null;
      c.batches.forEach(([keys, rewards], i) => {
        if (i === half) b = PerPromptStatTracker.fromJSON(JSON.parse(JSON.stringify(a.toJSON())));
        const expected = c.advantages[i];
        expect(a.update(keys, rewards)).toEqual(expected);
        if (b) expect((b as PerPromptStatTracker).update(keys, rewards)).toEqual(expected);
      });
      expect(b).not.toBeNull();
      expect(JSON.stringify((b as unknown as PerPromptStatTracker).toJSON())).toBe(JSON.stringify(a.toJSON()));
    }
  });
});

describe("serialisation", () => {
  test("round trip keeps sizes, keys and exact values; -0 is stored as 0", () => {
    const t = new PerPromptStatTracker(5, 2);
    t.update(["p", "q", "p"], [0.1 + 0.2, -0, 1 / 3]);
    const json = JSON.parse(JSON.stringify(t.toJSON()));
    expect(json).toEqual({ buffer_size: 5, min_count: 2, buffers: { p: [0.1 + 0.2, 1 / 3], q: [0] } });
    expect(Object.is(t.toJSON().buffers.q[0], 0)).toBe(true);
    const r = PerPromptStatTracker.fromJSON(json);
    expect(r.bufferSize).toBe(5);
    expect(r.minCount).toBe(2);
    expect(r.stats()).toEqual(t.stats());
  });

  test("malformed states are user errors naming the source", () => {
    expect(() => PerPromptStatTracker.fromJSON(null, "run/state.msgpack")).toThrow(UserError);
    expect(() => PerPromptStatTracker.fromJSON({ buffer_size: 0, min_count: 1, buffers: {} }, "s.json")).toThrow(/s\.json.*buffer_size/);
    expect(() => PerPromptStatTracker.fromJSON({ buffer_size: 2, min_count: 1, buffers: { a: [1, "x"] } })).toThrow(/key "a"/);
    expect(() => PerPromptStatTracker.fromJSON({ buffer_size: 2, min_count: 1, buffers: { a: [1, 2, 3] } })).toThrow(/3 values/);
  });
});
