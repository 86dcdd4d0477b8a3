// Dawn's Vulkan backend prints two warnings of its own whenever an adapter is requested on a driver
// that reports huge dynamic-buffer limits (lavapipe reports 1000000):
//   Warning: maxDynamicUniformBuffersPerPipelineLayout artificially reduced from 1000000 to 16 to fit dynamic offset allocation limit.
//   Warning: maxDynamicStorageBuffersPerPipelineLayout artificially reduced from 1000000 to 16 to fit dynamic offset allocation limit.
// They come from Dawn's limit normalisation inside `requestAdapter` (before any `requiredLimits` is
// seen, so asking for fewer limits cannot avoid them), are written with fprintf straight to file
// descriptor 2, and no Dawn toggle or instance flag turns them off. We use no dynamic buffers, so they
// tell a user nothing.
//
// Last resort, and the only place that does it: under Bun on Linux, `quietNativeStderr` points fd 2
// at an unlinked temporary file for the duration of one *synchronous* native call (libc dup/dup2
// through bun:ffi), puts fd 2 back before any JavaScript runs again, and writes whatever the call
// printed back to stderr except those two exact lines. Nothing else is dropped. Elsewhere (Node,
// other systems, no libc) the call runs unchanged; Deno does not use Dawn.
//
// Why synchronously only: Bun's process.stderr remembers what fd 2 was when first written to; a
// JavaScript write while fd 2 is the temporary file would break later writes to the real stderr.
import { closeSync, fstatSync, openSync, readSync, unlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { runtimeName } from "./runtime.ts";

/** The lines dropped: Dawn's two dynamic-buffer limit warnings, exactly. */
export const DAWN_LIMIT_WARNING = /^Warning: maxDynamic(Uniform|Storage)BuffersPerPipelineLayout artificially reduced from \d+ to \d+ to fit dynamic offset allocation limit\.$/;

interface Libc {
  dup(fd: number): number;
  dup2(from: number, to: number): number;
  close(fd: number): number;
}

let libc: Libc | null | undefined;

async function loadLibc(): Promise<Libc | null> {
  if (libc !== undefined) return libc;
  libc = null;
  if (runtimeName() !== "bun" || process.platform !== "linux") return libc;
  try {
    const { dlopen, FFIType } = await import("bun:ffi");
    const i32 = FFIType.i32;
    const lib = dlopen("libc.so.6", {
      dup: { args: [i32], returns: i32 },
      dup2: { args: [i32, i32], returns: i32 },
      close: { args: [i32], returns: i32 },
    });
    libc = lib.symbols as unknown as Libc;
  } catch {
    libc = null; // no glibc (e.g. musl): leave stderr alone
  }
  return libc;
}

/** Drop Dawn's limit warnings from captured text; the other lines are returned unchanged. */
export function withoutDawnLimitWarnings(text: string): string {
  return text.split(/(?<=\n)/).filter((l) => !DAWN_LIMIT_WARNING.test(l.replace(/\r?\n$/, ""))).join("");
}

/**
 * Run `call` (synchronous native work, e.g. the synchronous part of `requestAdapter`) with fd 2
 * captured, then write what it printed back to stderr without Dawn's limit warnings. Returns what
 * `call` returned (a promise is returned as is, not awaited).
 */
export async function quietNativeStderr<T>(call: () => T): Promise<T> {
  const c = await loadLibc();
  if (!c) return call();
  let fd = -1;
  try {
    const path = join(tmpdir(), `rl4pix-stderr-${process.pid}-${Date.now()}`);
    fd = openSync(path, "w+", 0o600);
    unlinkSync(path);
  } catch {
    if (fd >= 0) closeSync(fd);
    return call(); // no writable temporary folder: leave stderr alone
  }
  const saved = c.dup(2);
  if (saved < 0 || c.dup2(fd, 2) < 0) {
    if (saved >= 0) c.close(saved);
    closeSync(fd);
    return call();
  }
  let result: T;
  try {
    result = call();
  } finally {
    c.dup2(saved, 2);
    c.close(saved);
  }
  try {
    const size = fstatSync(fd).size;
    if (size > 0) {
      const buf = new Uint8Array(size);
      readSync(fd, buf, 0, size, 0);
      const rest = withoutDawnLimitWarnings(new TextDecoder().decode(buf));
      if (rest) process.stderr.write(rest);
    }
  } finally {
    closeSync(fd);
  }
  return result;
}
