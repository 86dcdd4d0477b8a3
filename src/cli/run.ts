// How every command runs: GPU released on every exit path, user mistakes as one line + exit 2,
// Ctrl-C as exit 130, bugs with their stack + exit 1.
import { NoAdapterError, destroyGpu, gpu, hasGpu } from "../gpu/device.ts";
import { formatProfile } from "../gpu/profiler.ts";
import { InvalidArgumentError } from "commander";
import { Interrupted, UserError } from "../errors.ts";

export function exitCodeFor(e: unknown): number {
  if (e instanceof UserError || e instanceof NoAdapterError) return 2;
  if (e instanceof Interrupted) return 130;
  return 1;
}

/** Wrap a command action: run it, release the GPU, map errors to exit codes. */
export function action<A extends unknown[]>(fn: (...args: A) => Promise<void | number>): (...args: A) => Promise<void> {
  return async (...args: A) => {
    let code = 0;
    try {
      const r = await fn(...args);
      if (typeof r === "number") code = r;
    } catch (e) {
      code = exitCodeFor(e);
      const msg = e instanceof Error ? e.message : String(e);
      if (code === 1) console.error(`rl4pix: internal error: ${e instanceof Error && e.stack ? e.stack : msg}`);
      else console.error(`rl4pix: ${msg}`);
    } finally {
      await printProfile();
      try {
        destroyGpu();
      } catch {
        // the device may already be lost; nothing more to release
      }
    }
    process.exit(code);
  };
}

/** With RL4PIX_PROFILE=1 (see gpu/device.ts): the command's per-kernel GPU time, on stderr. */
async function printProfile(): Promise<void> {
  if (!hasGpu() || !gpu().profiler) return;
  try {
    console.error(formatProfile(await gpu().stopProfiling()));
  } catch (e) {
    console.error(`rl4pix: RL4PIX_PROFILE: no profile (${e instanceof Error ? e.message : String(e)})`);
  }
}

/** Parse a number flag; commander reports a bad value as a one-line usage error (exit 2). */
export function num(flag: string, lo = -Infinity, hi = Infinity, integer = false): (v: string) => number {
  return (v: string) => {
    const x = Number(v);
    if (!Number.isFinite(x) || x < lo || x > hi || (integer && !Number.isInteger(x))) {
      throw new InvalidArgumentError(`${flag}: expected ${integer ? "an integer" : "a number"}${lo > -Infinity ? ` >= ${lo}` : ""}${hi < Infinity ? ` <= ${hi}` : ""}, got '${v}'`);
    }
    return x;
  };
}
