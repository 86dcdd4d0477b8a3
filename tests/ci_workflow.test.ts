// The GPU CI workflow cannot run here (no GPU runner); what can be checked is that it still names
// things that exist: the runner labels the README documents, the doctor flag, the test files and
// the npm scripts it calls. A renamed test file then fails here, not only on the GPU runner.
import { expect, test } from "bun:test";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";

const root = join(import.meta.dir, "..");
const yml = readFileSync(join(root, ".github", "workflows", "gpu.yml"), "utf8");

test("gpu.yml runs on the documented self-hosted gpu runner and calls only what exists", () => {
  expect(yml).toMatch(/^\s+runs-on: \[self-hosted, linux, x64, gpu\]$/m);
  expect(readFileSync(join(root, "README.md"), "utf8")).toContain("self-hosted, linux, x64, gpu");
  expect(yml).toContain("bun cli.ts doctor --require-gpu");
  const tests = [...yml.matchAll(/tests\/[\w.]+\.test\.ts/g)].map((m) => m[0]);
  expect(tests.length).toBeGreaterThan(5);
  for (const t of tests) if (!existsSync(join(root, t))) throw new Error(`gpu.yml names ${t}, which does not exist`);
  const scripts = JSON.parse(readFileSync(join(root, "package.json"), "utf8")).scripts as Record<string, string>;
  for (const [, s] of yml.matchAll(/npm run (\w+)/g)) expect(Object.keys(scripts)).toContain(s);
  expect(readFileSync(join(root, "scripts", "setup.sh"), "utf8")).toContain("RL4PIX_SKIP_DRIVER_CHECK");
});
