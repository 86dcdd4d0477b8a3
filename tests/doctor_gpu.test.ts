// `doctor --require-gpu`, the first step of the GPU CI workflow (.github/workflows/gpu.yml): on a CPU
// rasteriser (lavapipe here) it must fail with one line and exit 2; on a GPU it passes like doctor.
import { expect, setDefaultTimeout, test } from "bun:test";
import { spawnSync } from "node:child_process";
import { join } from "node:path";

setDefaultTimeout(120_000);
const CLI = join(import.meta.dir, "..", "cli.ts");
const run = (...args: string[]) => spawnSync(process.execPath, [CLI, ...args], { encoding: "utf8" });

test("doctor --require-gpu fails with one line on a CPU adapter and passes on a GPU", () => {
  const plain = run("doctor", "--json");
  expect(plain.status).toBe(0);
  const cls = JSON.parse(plain.stdout).adapterClass;
  expect(["cpu", "gpu"]).toContain(cls);
  const r = run("doctor", "--require-gpu");
  if (cls === "cpu") {
    expect(r.status).toBe(2);
    expect(r.stdout).toBe(""); // fails before the report and the self-test
    const lines = r.stderr.trim().split("\n").filter((l) => l.startsWith("rl4pix:"));
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^rl4pix: doctor --require-gpu: the WebGPU adapter is a CPU rasteriser \(.+\), not a GPU/);
    expect(r.stderr).not.toContain("    at ");
  } else {
    expect(r.status).toBe(0);
    expect(r.stdout).toContain("doctor: all good");
  }
});
