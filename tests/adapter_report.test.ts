// What `doctor` records about the adapter: features (ours marked), limits, subgroup sizes, the
// subgroup-matrix configurations and the Dawn flags asked for. The pure part is fed fake adapters
// (the H200's as measured: int8-only tiles; one with f16 tiles); the real run checks lavapipe's
// report, that the device asks for every wanted feature the adapter has, and that a flag given
// through RL4PIX_DAWN_FLAGS is recorded while stderr stays empty.
import { describe, expect, test } from "bun:test";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { WANTED_FEATURES, adapterLines, describeAdapter, formatConfig, hasF16Tiles } from "../src/gpu/adapter_report.ts";
import { cliRunner } from "./cli_run.ts";

const h200 = {
  features: new Set(["subgroups", "subgroup-size-control", "timestamp-query", "chromium-experimental-subgroup-matrix"]),
  limits: { maxBufferSize: 2 ** 40, maxComputeWorkgroupStorageSize: 49152, maxTextureDimension2D: 16384 },
  info: {
    subgroupMinSize: 32,
    subgroupMaxSize: 32,
    subgroupMatrixConfigs: [
      { componentType: "u8", resultComponentType: "u32", M: 16, N: 16, K: 32 },
      { componentType: "i8", resultComponentType: "i32", M: 16, N: 8, K: 32 },
    ],
  },
};

describe("describeAdapter", () => {
  test("an adapter with int8 subgroup-matrix tiles and no shader-f16 (the H200 as measured)", () => {
    const r = describeAdapter(h200, ["enable-dawn-features=allow_unsafe_apis"]);
    expect(r.wanted).toEqual({
      "shader-f16": false,
      subgroups: true,
      "timestamp-query": true,
      "chromium-experimental-subgroup-matrix": true,
    });
    expect(r.features).toEqual([...h200.features].sort());
    // Only the limits that size our kernels, as the adapter gives them.
    expect(r.limits).toEqual({ maxBufferSize: 2 ** 40, maxComputeWorkgroupStorageSize: 49152 });
    expect(r.subgroupMinSize).toBe(32);
    expect(r.subgroupMatrixConfigs).toEqual([
      { componentType: "u8", resultComponentType: "u32", M: 16, N: 16, K: 32 },
      { componentType: "i8", resultComponentType: "i32", M: 16, N: 8, K: 32 },
    ]);
    expect(hasF16Tiles(r)).toBe(false);
    expect(r.dawnFlags).toEqual(["enable-dawn-features=allow_unsafe_apis"]);
    const lines = adapterLines(r).map(([k, v]) => `${k}: ${v}`);
    expect(lines).toContain("sg matrix: u8 x u8 -> u32 M16 N16 K32");
    expect(lines).toContain("sg matrix: i8 x i8 -> i32 M16 N8 K32");
    expect(lines).toContain("dawn flags: enable-dawn-features=allow_unsafe_apis");
    expect(lines.find((l) => l.startsWith("wanted:"))).toBe(
      "wanted: shader-f16 no, subgroups yes, timestamp-query yes, chromium-experimental-subgroup-matrix yes",
    );
  });

  test("f16 tiles are recognised whatever case the binding spells the type in; no list and an empty list differ", () => {
    const f16 = describeAdapter({ features: [], limits: {}, info: { subgroupMatrixConfigs: [{ componentType: "F16", resultComponentType: "F32", M: 8, N: 8, K: 8 }] } }, []);
    expect(hasF16Tiles(f16)).toBe(true);
    expect(formatConfig(f16.subgroupMatrixConfigs![0])).toBe("f16 x f16 -> f32 M8 N8 K8");
    const none = describeAdapter({ features: [], limits: {}, info: {} }, []);
    expect(none.subgroupMatrixConfigs).toBeNull();
    expect(none.subgroupMinSize).toBeNull();
    expect(adapterLines(none).map(([k, v]) => `${k}: ${v}`)).toContain("sg matrix: (adapter info has no subgroupMatrixConfigs)");
    const empty = describeAdapter({ features: [], limits: {}, info: { subgroupMatrixConfigs: [] } }, []);
    expect(empty.subgroupMatrixConfigs).toEqual([]);
    expect(adapterLines(empty).map(([k, v]) => `${k}: ${v}`)).toContain("sg matrix: no configurations");
  });
});

describe("doctor on this machine's adapter", () => {
  const { runEnv } = cliRunner(mkdtempSync(join(tmpdir(), "rl4pix-adapter-")));

  test("records what the adapter offers and the flags asked for; the device gets every wanted feature offered", () => {
    const r = runEnv({ RL4PIX_DAWN_FLAGS: "enable-dawn-features=allow_unsafe_apis" }, "doctor", "--json");
    expect(r.code).toBe(0);
    expect(r.err).toBe("");
    const j = JSON.parse(r.out);
    const offers = j.adapterOffers;
    expect(offers.dawnFlags).toEqual(["enable-dawn-features=allow_unsafe_apis"]);
    expect(offers.features.length).toBeGreaterThan(0);
    for (const f of WANTED_FEATURES) {
      expect(offers.wanted[f]).toBe(offers.features.includes(f));
      // asked for when offered: the device has it exactly then
      expect({ f, device: j.features.includes(f) }).toEqual({ f, device: offers.features.includes(f) });
    }
    expect(offers.limits.maxStorageBufferBindingSize).toBeGreaterThan(0);
    if (j.adapterClass === "cpu") {
      // lavapipe: shader-f16 and subgroups of 8, no subgroup-matrix configurations
      expect(offers.wanted["shader-f16"]).toBe(true);
      expect(offers.subgroupMinSize).toBe(8);
      expect(offers.subgroupMatrixConfigs).toEqual([]);
    }
  });

  test("without RL4PIX_DAWN_FLAGS no flag is recorded, and the text report names the configurations", () => {
    const env = { RL4PIX_DAWN_FLAGS: "" };
    const r = runEnv(env, "doctor");
    expect(r.code).toBe(0);
    expect(r.err).toBe("");
    expect(r.out).toMatch(/^dawn flags +\(none; RL4PIX_DAWN_FLAGS adds some\)$/m);
    expect(r.out).toMatch(/^wanted +shader-f16 (yes|no), subgroups (yes|no), timestamp-query (yes|no), chromium-experimental-subgroup-matrix (yes|no)$/m);
    expect(r.out).toMatch(/^sg matrix +(no configurations|\S+ x \S+ -> \S+ M\d+ N\d+ K\d+|\(adapter info has no subgroupMatrixConfigs\))$/m);
    expect(r.out).toMatch(/^device +features .*\S/m);
  });
});
