// The run folder's lock on its own (tests/faults.test.ts runs it between real processes).
import { describe, expect, test } from "bun:test";
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, utimesSync, writeFileSync } from "node:fs";
import { hostname, tmpdir } from "node:os";
import { join } from "node:path";
import { lockRunDir, processAlive } from "../src/io/run_lock.ts";
import { UserError } from "../src/errors.ts";

function withDir(fn: (dir: string) => void): void {
  const dir = mkdtempSync(join(tmpdir(), "rl4pix-lock-"));
  try {
    fn(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The pid of a process that has exited (and been reaped). */
function deadPid(): number {
  const r = spawnSync("true");
  expect(r.status).toBe(0);
  return r.pid!;
}

const lockText = (pid: number, host = hostname()) => JSON.stringify({ pid, host, started: "2026-01-01T00:00:00.000Z" });

describe("lockRunDir", () => {
  test("writes the owner's pid, refuses a second taker while held, and is gone after release", () => {
    withDir((dir) => {
      const lock = lockRunDir(dir);
      expect(JSON.parse(readFileSync(join(dir, "train.lock"), "utf8")).pid).toBe(process.pid);
      expect(() => lockRunDir(dir)).toThrow(UserError);
      expect(() => lockRunDir(dir)).toThrow(`another rl4pix train (pid ${process.pid}`);
      lock.release();
      expect(existsSync(join(dir, "train.lock"))).toBe(false);
      lockRunDir(dir).release();
    });
  });

  test("a lock left by a dead process is taken over", () => {
    withDir((dir) => {
      const pid = deadPid();
      expect(processAlive(pid)).toBe(false);
      writeFileSync(join(dir, "train.lock"), lockText(pid));
      const lock = lockRunDir(dir);
      expect(JSON.parse(readFileSync(join(dir, "train.lock"), "utf8")).pid).toBe(process.pid);
      lock.release();
    });
  });

  test("a live owner, or an owner on another host (whose liveness cannot be known), is respected", () => {
    withDir((dir) => {
      writeFileSync(join(dir, "train.lock"), lockText(process.pid));
      expect(() => lockRunDir(dir)).toThrow(`pid ${process.pid}`);
      writeFileSync(join(dir, "train.lock"), lockText(deadPid(), "some-other-host"));
      expect(() => lockRunDir(dir)).toThrow("on some-other-host");
    });
  });

  test("an empty lock file is stale only once it is a few seconds old (its writer died before writing)", () => {
    withDir((dir) => {
      const p = join(dir, "train.lock");
      writeFileSync(p, "");
      expect(() => lockRunDir(dir)).toThrow("an unknown process");
      const old = new Date(Date.now() - 60_000);
      utimesSync(p, old, old);
      lockRunDir(dir).release();
    });
  });

  test("release leaves a lock that is no longer this process's alone", () => {
    withDir((dir) => {
      const lock = lockRunDir(dir);
      writeFileSync(join(dir, "train.lock"), lockText(12345678));
      lock.release();
      expect(existsSync(join(dir, "train.lock"))).toBe(true);
    });
  });
});
