// Dawn's two limit warnings on lavapipe are dropped from stderr; everything else a native call
// prints to fd 2 comes through, and JavaScript's stderr still works afterwards.
import { describe, expect, test } from "bun:test";
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { DAWN_LIMIT_WARNING, withoutDawnLimitWarnings } from "../src/gpu/native_stderr.ts";

const UNIFORM = "Warning: maxDynamicUniformBuffersPerPipelineLayout artificially reduced from 1000000 to 16 to fit dynamic offset allocation limit.";
const STORAGE = "Warning: maxDynamicStorageBuffersPerPipelineLayout artificially reduced from 1000000 to 16 to fit dynamic offset allocation limit.";

describe("Dawn's limit warnings", () => {
  test("exactly those two lines are recognised", () => {
    expect(DAWN_LIMIT_WARNING.test(UNIFORM)).toBe(true);
    expect(DAWN_LIMIT_WARNING.test(STORAGE)).toBe(true);
    expect(DAWN_LIMIT_WARNING.test("Warning: maxBufferSize artificially reduced from 1 to 2 to fit dynamic offset allocation limit.")).toBe(false);
    expect(DAWN_LIMIT_WARNING.test(`${UNIFORM} and more`)).toBe(false);
    expect(withoutDawnLimitWarnings(`a\n${UNIFORM}\n${STORAGE}\nb\n`)).toBe("a\nb\n");
    expect(withoutDawnLimitWarnings("no newline at the end")).toBe("no newline at the end");
  });

  test("a native write to fd 2 is filtered, the rest passes, and stderr works afterwards", () => {
    const mod = join(import.meta.dir, "..", "src", "gpu", "native_stderr.ts");
    const script = `
      import { writeSync } from "node:fs";
      import { quietNativeStderr } from ${JSON.stringify(mod)};
      process.stderr.write("before\\n");
      const r = await quietNativeStderr(() => { writeSync(2, ${JSON.stringify(`kept 1\n${UNIFORM}\n${STORAGE}\nkept 2\n`)}); return 7; });
      process.stderr.write("after " + r + "\\n");
      console.error("console after");
    `;
    const r = spawnSync(process.execPath, ["-e", script], { encoding: "utf8" });
    expect(r.status).toBe(0);
    expect(r.stderr).toBe("before\nkept 1\nkept 2\nafter 7\nconsole after\n");
  });
});
