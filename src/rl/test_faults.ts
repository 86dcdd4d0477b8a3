// Test-only fault injection. `RL4PIX_TEST_FAULT=<action>@<point>` makes training misbehave at one
// chosen place, so tests can check what survives a Ctrl-C, a kill -9 or a full disk at a precise
// moment instead of racing a timer. Unset (always, outside tests), every hook does nothing.
//
//   points   sampling:E:B    before sampling batch B of epoch E
//            training:E:K    before PPO micro-step K of epoch E (counted over the whole epoch)
//            checkpoint:E    halfway through writing checkpoint_E (the LoRA file written, the
//                            optimizer state and state.json not yet)
//   actions  sigint          send SIGINT to this process, as Ctrl-C does
//            pause           print "rl4pix-test: paused at <point>" on stderr and block (the test
//                            then sends SIGKILL)
//            enospc, eacces  fail as a full disk / an unwritable folder would (an fs error with that code)
//
// e.g. RL4PIX_TEST_FAULT=sigint@training:1:0 or RL4PIX_TEST_FAULT=enospc@checkpoint:1
import { writeSync } from "node:fs";
import process from "node:process";

const ACTIONS = ["sigint", "pause", "enospc", "eacces"] as const;
type Action = (typeof ACTIONS)[number];

interface Fault {
  action: Action;
  point: string;
}

let parsed: Fault | null | undefined;

function fault(): Fault | null {
  if (parsed !== undefined) return parsed;
  const spec = process.env.RL4PIX_TEST_FAULT ?? "";
  const m = /^(\w+)@([a-z]+(?::\d+)+)$/.exec(spec.trim());
  parsed = m && (ACTIONS as readonly string[]).includes(m[1]) ? { action: m[1] as Action, point: m[2] } : null;
  if (spec && !parsed) writeSync(2, `rl4pix: RL4PIX_TEST_FAULT: ignoring '${spec}' (expected <${ACTIONS.join("|")}>@<point>:<epoch>[:<index>])\n`);
  return parsed;
}

/** Called by the trainer at each fault point; acts only when RL4PIX_TEST_FAULT names this one. */
export function faultPoint(name: "sampling" | "training" | "checkpoint", ...at: number[]): void {
  const f = fault();
  const point = [name, ...at].join(":");
  if (!f || f.point !== point) return;
  switch (f.action) {
    case "sigint":
      process.kill(process.pid, "SIGINT");
      return;
    case "pause":
      writeSync(2, `rl4pix-test: paused at ${point}\n`);
      // block this thread (the whole process) for up to 10 minutes; the test kills it before then
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 600_000);
      return;
    case "enospc":
      throw Object.assign(new Error(`ENOSPC: no space left on device, write (injected at ${point})`), { code: "ENOSPC" });
    case "eacces":
      throw Object.assign(new Error(`EACCES: permission denied, open (injected at ${point})`), { code: "EACCES" });
  }
}
