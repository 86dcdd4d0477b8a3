// Faults a training run survives, each forced at a precise moment through RL4PIX_TEST_FAULT
// (src/rl/test_faults.ts) in a real `rl4pix train` process: Ctrl-C while sampling and while
// updating, kill -9 halfway through a checkpoint write, a full disk or an unwritable folder during a
// checkpoint, a second process on the same run folder, a damaged newest checkpoint. After each, the
// checkpoint left behind must be byte-identical to the same epoch of an uninterrupted run, and a
// resume must end where the uninterrupted run ends.
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { type ChildProcess, spawn } from "node:child_process";
import { cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, truncateSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

setDefaultTimeout(300_000);
const CLI = join(import.meta.dir, "..", "cli.ts");
const work = mkdtempSync(join(tmpdir(), "rl4pix-faults-"));

// 3 epochs of 2 sampling batches (so "while sampling" can fall between batches) on 32 px images
const SMALL = [
  "resolution=32",
  "sample.num_steps=3",
  "sample.batch_size=2",
  "sample.num_batches_per_epoch=2",
  "train.batch_size=2",
  "train.learning_rate=0.003",
  "train.clip_range=0.2",
  "reward.layers=res:2",
  "per_prompt_stat_tracking.buffer_size=4",
  "per_prompt_stat_tracking.min_count=2",
  "report.num_samples=1",
  "num_epochs=3",
];

interface Result {
  code: number | null;
  signal: string | null;
  err: string;
}

interface Started {
  child: ChildProcess;
  /** Resolves once stderr contains `text`. */
  waitFor(text: string): Promise<void>;
  done: Promise<Result>;
}

function start(runDir: string, opts: { set?: string[]; fault?: string; args?: string[] } = {}): Started {
  const sets = [...SMALL, ...(opts.set ?? [])].flatMap((kv) => ["--set", kv]);
  const env: Record<string, string | undefined> = { ...process.env, RL4PIX_CACHE_DIR: join(work, "cache") };
  if (opts.fault) env.RL4PIX_TEST_FAULT = opts.fault;
  else delete env.RL4PIX_TEST_FAULT;
  const child = spawn(process.execPath, [CLI, "train", "--out", runDir, ...sets, ...(opts.args ?? [])], { env, stdio: ["ignore", "ignore", "pipe"] });
  let err = "";
  const waiters: { text: string; resolve: () => void }[] = [];
  child.stderr!.on("data", (b: Buffer) => {
    err += b.toString();
    for (const w of waiters.filter((x) => err.includes(x.text))) w.resolve();
  });
  const done = new Promise<Result>((res) => child.on("close", (code, signal) => res({ code, signal, err: err.split("\n").filter((l) => !l.startsWith("Warning: max")).join("\n") })));
  return {
    child,
    done,
    waitFor: (text) =>
      new Promise<void>((resolve, reject) => {
        if (err.includes(text)) return resolve();
        waiters.push({ text, resolve });
        void done.then(() => reject(new Error(`process ended before printing '${text}':\n${err}`)));
      }),
  };
}

async function train(runDir: string, opts: { set?: string[]; fault?: string; args?: string[] } = {}): Promise<Result> {
  return await start(runDir, opts).done;
}

/** The one "rl4pix:" line of a user error (exit 2, no stack trace). */
function userError(r: Result): string {
  expect(r.code).toBe(2);
  expect(r.err).not.toContain("    at ");
  const lines = r.err.trim().split("\n").filter((l) => l.startsWith("rl4pix:") && !l.startsWith("rl4pix: resuming "));
  expect(lines.length).toBe(1);
  return lines[0];
}

const ckptDir = (run: string, epoch: number) => join(run, "checkpoints", `checkpoint_${epoch}`);
const epochsOf = (run: string) =>
  existsSync(join(run, "checkpoints")) ? readdirSync(join(run, "checkpoints")).filter((n) => /^checkpoint_\d+$/.test(n)).map((n) => Number(n.slice(11))).sort((a, b) => a - b) : [];
const metricsLines = (run: string) => readFileSync(join(run, "metrics.jsonl"), "utf8").trim().split("\n").filter(Boolean).length;

/** checkpoint_<epoch> of `run` holds exactly the bytes of the uninterrupted run's. */
function expectSameCheckpoint(run: string, epoch: number): void {
  for (const f of ["pytorch_lora_weights.safetensors", "trainer.safetensors", "state.json"]) {
    const want = readFileSync(join(ckptDir(reference, epoch), f));
    const got = readFileSync(join(ckptDir(run, epoch), f));
    if (Buffer.compare(got, want) !== 0) throw new Error(`${run}: checkpoint_${epoch}/${f} differs from the uninterrupted run's`);
  }
}

function leftovers(run: string): string[] {
  const c = join(run, "checkpoints");
  return [...(existsSync(c) ? readdirSync(c).filter((n) => n.startsWith(".")) : []), ...readdirSync(run).filter((n) => n === "train.lock")];
}

afterAll(() => rmSync(work, { recursive: true, force: true }));

// the uninterrupted run every test compares with: checkpoints of epochs 0, 1, 2
let reference = "";
beforeAll(async () => {
  reference = join(work, "reference");
  const r = await train(reference, { set: ["save_freq=1"] });
  if (r.code !== 0) throw new Error(`reference run failed:\n${r.err}`);
  expect(epochsOf(reference)).toEqual([0, 1, 2]);
  expect(leftovers(reference)).toEqual([]);
});

describe("Ctrl-C", () => {
  test("while sampling: the epoch's samples are dropped, the last finished epoch is checkpointed, exit 130, resume ends identical", async () => {
    const run = join(work, "sigint-sampling");
    // save_freq 3: only the interrupt can write checkpoint_0; SIGINT arrives during epoch 1's first batch
    const r = await train(run, { set: ["save_freq=3"], fault: "sigint@sampling:1:0" });
    expect(r.code).toBe(130);
    expect(r.err).toContain("this epoch's sampling is dropped");
    expect(r.err).toMatch(/interrupted while sampling epoch 1 \(its samples are dropped\): checkpoint of epoch 0 saved/);
    expect(metricsLines(run)).toBe(1);
    expect(epochsOf(run)).toEqual([0]);
    expectSameCheckpoint(run, 0);
    expect(leftovers(run)).toEqual([]);
    const again = await train(run, { set: ["save_freq=3"] });
    expect(again.code).toBe(0);
    expect(epochsOf(run)).toEqual([0, 2]);
    expectSameCheckpoint(run, 2);
  });

  test("during the PPO update: the update finishes and that epoch is checkpointed, exit 130, resume ends identical", async () => {
    const run = join(work, "sigint-update");
    const r = await train(run, { set: ["save_freq=3"], fault: "sigint@training:1:0" });
    expect(r.code).toBe(130);
    expect(r.err).toContain("stopping after this epoch");
    expect(r.err).toMatch(/interrupted: checkpoint of epoch 1 saved/);
    expect(metricsLines(run)).toBe(2);
    expect(epochsOf(run)).toEqual([1]);
    expectSameCheckpoint(run, 1);
    const again = await train(run, { set: ["save_freq=3"] });
    expect(again.code).toBe(0);
    expectSameCheckpoint(run, 2);
  });
});

describe("kill -9 and write failures during a checkpoint", () => {
  test("kill -9 halfway through writing checkpoint_1: checkpoint_0 is intact, the stale lock and half folder are cleared, resume ends identical", async () => {
    const run = join(work, "kill9");
    const p = start(run, { set: ["save_freq=1"], fault: "pause@checkpoint:1" });
    await p.waitFor("rl4pix-test: paused at checkpoint:1");
    p.child.kill("SIGKILL");
    const r = await p.done;
    expect(r.signal).toBe("SIGKILL");
    expect(epochsOf(run)).toEqual([0]);
    expectSameCheckpoint(run, 0);
    // what the killed process left: its half-written folder and its lock
    const left = leftovers(run);
    expect(left.some((n) => n.startsWith(".tmp-checkpoint_1-"))).toBe(true);
    expect(JSON.parse(readFileSync(join(run, "train.lock"), "utf8")).pid).toBe(p.child.pid);
    const again = await train(run, { set: ["save_freq=1"] });
    expect(again.code).toBe(0);
    expect(epochsOf(run)).toEqual([0, 1, 2]);
    expectSameCheckpoint(run, 1);
    expectSameCheckpoint(run, 2);
    expect(leftovers(run)).toEqual([]);
  });

  for (const [fault, why] of [["enospc", "no space left on the device"], ["eacces", "permission denied"]] as const) {
    test(`${fault} while writing checkpoint_1: one line naming it, exit 2, checkpoint_0 intact, nothing half-written`, async () => {
      const run = join(work, `fail-${fault}`);
      const r = await train(run, { set: ["save_freq=1"], fault: `${fault}@checkpoint:1` });
      const line = userError(r);
      expect(line).toContain(`${ckptDir(run, 1)}: could not write the checkpoint: ${why}`);
      expect(line).toContain(`the previous checkpoint (${ckptDir(run, 0)}) is intact`);
      expect(epochsOf(run)).toEqual([0]);
      expectSameCheckpoint(run, 0);
      expect(leftovers(run)).toEqual([]);
      if (fault === "enospc") {
        const again = await train(run, { set: ["save_freq=1"] });
        expect(again.code).toBe(0);
        expectSameCheckpoint(run, 2);
      }
    });
  }
});

describe("one process per run folder", () => {
  test("a second train on a busy run folder is refused at once; after the owner is killed its lock is taken over", async () => {
    const run = join(work, "two");
    const first = start(run, { fault: "pause@sampling:0:0" });
    await first.waitFor("rl4pix-test: paused at sampling:0:0");
    const t0 = performance.now();
    const second = await train(run);
    const line = userError(second);
    expect(line).toContain(`${run}: another rl4pix train (pid ${first.child.pid}`);
    expect(performance.now() - t0).toBeLessThan(30_000); // refused before the GPU and the model start
    expect(first.child.exitCode).toBeNull(); // the owner was not disturbed
    first.child.kill("SIGKILL");
    await first.done;
    const third = await train(run, { set: ["num_epochs=1"] });
    expect(third.code).toBe(0);
    expect(epochsOf(run)).toEqual([0]);
    expectSameCheckpoint(run, 0);
    expect(leftovers(run)).toEqual([]);
  });
});

describe("a damaged newest checkpoint", () => {
  function damagedCopy(name: string, damage: (ckpt2: string) => void): string {
    const run = join(work, name);
    cpSync(reference, run, { recursive: true });
    damage(ckptDir(run, 2));
    return run;
  }
  const cases: [string, (d: string) => void, string][] = [
    ["truncated trainer.safetensors", (d) => truncateSync(join(d, "trainer.safetensors"), 100), "checkpoint_2/trainer.safetensors: damaged or edited"],
    ["a value edited in state.json", (d) => {
      const p = join(d, "state.json");
      writeFileSync(p, readFileSync(p, "utf8").replace(/"adamStep":(\d+)/, (_, n) => `"adamStep":${Number(n) + 1}`));
    }, "checkpoint_2/state.json: damaged or edited"],
    ["state.json cut short (a checkpoint without SHA256SUMS)", (d) => {
      rmSync(join(d, "SHA256SUMS"));
      truncateSync(join(d, "state.json"), 20);
    }, "checkpoint_2/state.json: not valid JSON"],
    ["state.json's epoch edited (without SHA256SUMS)", (d) => {
      rmSync(join(d, "SHA256SUMS"));
      const p = join(d, "state.json");
      writeFileSync(p, readFileSync(p, "utf8").replace(/"epoch":2/, `"epoch":7`));
    }, `checkpoint_2/state.json: "epoch" is 7 but the folder is checkpoint_2`],
    ["the LoRA file cut short (without SHA256SUMS)", (d) => {
      rmSync(join(d, "SHA256SUMS"));
      truncateSync(join(d, "pytorch_lora_weights.safetensors"), 4);
    }, "checkpoint_2/pytorch_lora_weights.safetensors"],
  ];
  for (const [what, damage, names] of cases) {
    test(`${what}: resume names the file and stops with exit 2, pointing at --resume-from`, async () => {
      const run = damagedCopy(`damaged-${what.replace(/\W+/g, "-")}`, damage);
      const r = await train(run, { set: ["num_epochs=4"] });
      const line = userError(r);
      expect(line).toContain(names);
      expect(line).toContain("the newest checkpoint (epoch 2) is damaged");
      expect(line).toContain("--resume-from 1");
      expect(r.err).not.toContain("resuming"); // stopped before loading anything
      expect(epochsOf(run)).toEqual([0, 1, 2]); // nothing moved or deleted
      expect(metricsLines(run)).toBe(3);
    });
  }

  test("--resume-from 1 goes back to checkpoint_1 only when asked, moves the damaged one aside, and ends identical", async () => {
    const run = damagedCopy("resume-from", (d) => truncateSync(join(d, "trainer.safetensors"), 100));
    const bad = await train(run, { args: ["--resume-from", "9"] });
    expect(userError(bad)).toContain("has no checkpoint of epoch 9 (it has: 0, 1, 2)");
    const r = await train(run, { args: ["--resume-from", "1"] });
    expect(r.code).toBe(0);
    expect(r.err).toContain("the newer checkpoints were moved to");
    expect(existsSync(join(run, "checkpoints", "abandoned", "checkpoint_2", "trainer.safetensors"))).toBe(true);
    expect(epochsOf(run)).toEqual([0, 1, 2]);
    expectSameCheckpoint(run, 2);
    expect(metricsLines(run)).toBe(3);
  });
});
