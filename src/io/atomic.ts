// Atomic output files: write into a temporary file in the destination folder, then rename it over
// the destination, so a crash or a full disk never leaves a half-written file under the real name.
import { closeSync, existsSync, fsyncSync, openSync, renameSync, rmSync, unlinkSync, writeSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import process from "node:process";
import { UserError } from "../errors.ts";

function tempPathFor(path: string): string {
  const tag = `${process.pid}-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
  return join(dirname(path), `.${basename(path)}.${tag}.tmp`);
}

function describeFsError(path: string, e: unknown): UserError {
  const code = (e as { code?: string }).code;
  const why =
    code === "ENOENT" ? "its folder does not exist"
    : code === "EACCES" || code === "EPERM" ? "permission denied"
    : code === "ENOSPC" ? "no space left on the device"
    : code === "EISDIR" ? "it is a folder"
    : code === "EROFS" ? "read-only file system"
    : (e as Error).message;
  return new UserError(`${path}: cannot write: ${why}`);
}

/** Write bytes sequentially to the open descriptor (writeSync may write less than asked). */
export function writeAll(fd: number, bytes: Uint8Array): void {
  let off = 0;
  while (off < bytes.byteLength) {
    // Stay below the 2 GiB limit of a single write call.
    const n = writeSync(fd, bytes, off, Math.min(bytes.byteLength - off, 1 << 30));
    off += n;
  }
}

/**
 * Create `path` atomically: `write` receives a descriptor of a temporary file in the same folder; when
 * it returns, the file is flushed and renamed to `path`. On any error the temporary file is removed.
 */
export function withAtomicFile(path: string, write: (fd: number) => void): void {
  const tmp = tempPathFor(path);
  let fd: number;
  try {
    fd = openSync(tmp, "wx", 0o644);
  } catch (e) {
    throw describeFsError(path, e);
  }
  let done = false;
  try {
    try {
      write(fd);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    try {
      renameSync(tmp, path);
    } catch (e) {
      throw describeFsError(path, e);
    }
    done = true;
  } catch (e) {
    const code = (e as { code?: string }).code;
    if (code === "ENOSPC" || code === "EIO" || code === "EDQUOT") throw describeFsError(path, e);
    throw e;
  } finally {
    if (!done) {
      try {
        unlinkSync(tmp);
      } catch {
        // already gone
      }
    }
  }
}

/** Write `bytes` (or UTF-8 text) to `path` through a temporary file and a rename. */
export function writeFileAtomic(path: string, bytes: Uint8Array | string): void {
  const data = typeof bytes === "string" ? new TextEncoder().encode(bytes) : bytes;
  withAtomicFile(path, (fd) => writeAll(fd, data));
}

/** A unique hidden sibling path of `dir` for building a folder before it is moved into place. */
export function tempSibling(dir: string): string {
  const tag = `${process.pid}-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
  return join(dirname(dir), `.${basename(dir)}.tmp-${tag}`);
}

/**
 * Move a fully built folder `tmp` to `target`, replacing what is there only once the new folder is
 * in place (the old one is restored if the move fails). `label` names the folder in errors.
 */
export function publishFolder(tmp: string, target: string, label: string): void {
  let old: string | null = null;
  try {
    if (existsSync(target)) {
      old = tempSibling(target);
      renameSync(target, old);
    }
    renameSync(tmp, target);
  } catch (e) {
    rmSync(tmp, { recursive: true, force: true });
    if (old && !existsSync(target)) renameSync(old, target);
    throw new UserError(`${label}: cannot move the folder into place: ${(e as Error).message}`);
  }
  if (old) rmSync(old, { recursive: true, force: true });
}

/** Move a damaged folder aside and delete it; nothing happens when another process moved it first. */
export function discardFolder(dir: string): void {
  if (!existsSync(dir)) return;
  const trash = tempSibling(dir);
  try {
    renameSync(dir, trash);
    rmSync(trash, { recursive: true, force: true });
  } catch {
    // another process moved it first
  }
}

/**
 * Move a freshly built cache folder `tmp` to `final`. When that fails because another process
 * published `final` first and `ready()` finds it whole, theirs is used; otherwise a UserError
 * naming `label`.
 */
export function publishCacheFolder(tmp: string, final: string, ready: () => boolean, label: string): void {
  try {
    renameSync(tmp, final);
  } catch (e) {
    rmSync(tmp, { recursive: true, force: true });
    if (ready()) return;
    throw new UserError(`${final}: cannot move ${label} into place: ${(e as Error).message}`);
  }
}
