// Running the command line as a user does, for the CLI test files: a subprocess with its own model
// cache, and the check that a user mistake is exactly one line on stderr with exit code 2.
import { expect } from "bun:test";
import { spawnSync } from "node:child_process";
import { join } from "node:path";

export const CLI = join(import.meta.dir, "..", "cli.ts");

export interface CliResult {
  code: number;
  out: string;
  err: string;
}

/** A runner whose subprocesses share `cacheDir` as RL4PIX_CACHE_DIR (the embedded model is made once there). */
export function cliRunner(cacheDir: string) {
  const runEnv = (env: Record<string, string>, ...args: string[]): CliResult => {
    const r = spawnSync(process.execPath, [CLI, ...args], { encoding: "utf8", env: { ...process.env, RL4PIX_CACHE_DIR: cacheDir, ...env } });
    return { code: r.status ?? -1, out: r.stdout, err: r.stderr };
  };
  return { run: (...args: string[]) => runEnv({}, ...args), runEnv };
}

/** A user mistake: exit 2 and stderr is exactly one line, "rl4pix: …", containing every `mustContain`. */
export function expectUserError(r: CliResult, ...mustContain: string[]): void {
  expect({ code: r.code, err: r.err }).toMatchObject({ code: 2, err: expect.stringMatching(/^rl4pix: [^\n]+\n$/) });
  for (const s of mustContain) expect(r.err).toContain(s);
}
