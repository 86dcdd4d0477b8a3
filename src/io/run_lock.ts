// One writer per run folder: `RUN_DIR/train.lock` holds the owner's pid, host and start time. A second
// process is refused at once; a lock whose process is gone (kill -9, power loss) is taken over.
// The lock is created with O_EXCL, so two starters cannot both create it; a stale lock is first
// renamed away (only one renamer can succeed) and checked to be the stale one before it is dropped.
import { closeSync, linkSync, openSync, readFileSync, renameSync, statSync, unlinkSync, writeSync } from "node:fs";
import { hostname } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { UserError } from "../errors.ts";

export const LOCK_FILE = "train.lock";

interface LockInfo {
  pid: number;
  host: string;
  started: string;
}

export interface RunLock {
  path: string;
  /** Remove the lock if it is still this process's. Idempotent. */
  release(): void;
}

function readLock(path: string): { text: string; info: LockInfo | null } | null {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch {
    return null; // gone meanwhile
  }
  try {
    const j = JSON.parse(text) as LockInfo;
    if (Number.isSafeInteger(j.pid) && j.pid > 0 && typeof j.host === "string") return { text, info: j };
  } catch {
    // empty or half-written: its writer died between creating and writing it
  }
  return { text, info: null };
}

/** Is `pid` a live process on this machine? (A zombie counts as dead.) */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (e) {
    return (e as { code?: string }).code === "EPERM";
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2)[0] !== "Z";
  } catch {
    return true; // no /proc (macOS): kill(0) said it exists
  }
}

function isStale(path: string, info: LockInfo | null): boolean {
  if (info === null) {
    // unreadable content: stale once older than a few seconds (a live writer fills it at once)
    try {
      return Date.now() - statSync(path).mtimeMs > 5000;
    } catch {
      return true;
    }
  }
  return info.host === hostname() && !processAlive(info.pid);
}

/** Take RUN_DIR's lock or throw a UserError naming the process that holds it. */
export function lockRunDir(runDir: string): RunLock {
  const path = join(runDir, LOCK_FILE);
  const me: LockInfo = { pid: process.pid, host: hostname(), started: new Date().toISOString() };
  const text = JSON.stringify(me) + "\n";
  for (let attempt = 0; attempt < 5; attempt++) {
    let fd: number;
    try {
      fd = openSync(path, "wx", 0o644);
    } catch (e) {
      const code = (e as { code?: string }).code;
      if (code !== "EEXIST") throw new UserError(`${path}: cannot create the run folder's lock: ${(e as Error).message}`);
      const held = readLock(path);
      if (held === null) continue; // released meanwhile: try again
      if (!isStale(path, held.info)) {
        const who = held.info ? `pid ${held.info.pid}${held.info.host !== me.host ? ` on ${held.info.host}` : ""}, since ${held.info.started}` : "an unknown process";
        throw new UserError(`${runDir}: another rl4pix train (${who}) is using this run folder; wait for it to end or stop it (if it is gone, delete ${path})`);
      }
      // take the stale lock over: move it aside, and make sure what moved is the stale one
      const aside = `${path}.stale-${process.pid}`;
      try {
        renameSync(path, aside);
      } catch {
        continue; // someone else moved it first
      }
      const moved = readLock(aside);
      if (moved !== null && moved.text !== held.text) {
        // a fresh lock was taken between our read and our rename: give it back
        try {
          linkSync(aside, path);
        } catch {
          // a third process holds the name now; theirs stands
        }
      }
      try {
        unlinkSync(aside);
      } catch {
        // already gone
      }
      continue;
    }
    try {
      writeSync(fd, text);
    } finally {
      closeSync(fd);
    }
    let released = false;
    const release = () => {
      if (released) return;
      released = true;
      process.off("exit", release);
      if (readLock(path)?.text === text) {
        try {
          unlinkSync(path);
        } catch {
          // already gone
        }
      }
    };
    process.on("exit", release); // also on process.exit(), e.g. a second Ctrl-C
    return { path, release };
  }
  throw new UserError(`${path}: could not take the run folder's lock (other processes keep changing it)`);
}
