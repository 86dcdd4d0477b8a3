// The small training run the trainer tests share: 32 px on the embedded model, 4 DDIM steps, two
// samples per epoch, one optimizer step per epoch, a checkpoint every epoch.
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** `--set` values of the small run (add num_epochs). */
export const SMALL_RUN = [
  "resolution=32",
  "sample.num_steps=4",
  "sample.batch_size=2",
  "sample.num_batches_per_epoch=1",
  "train.batch_size=2",
  "train.learning_rate=0.003",
  "train.clip_range=0.2",
  "reward.layers=res:2",
  "per_prompt_stat_tracking.buffer_size=4",
  "per_prompt_stat_tracking.min_count=2",
  "report.num_samples=1",
  "save_freq=1",
];

/** A fresh temporary folder for a run. */
export function tmpRunDir(name: string): string {
  return mkdtempSync(join(tmpdir(), `rl4pix-${name}-`));
}

/** A run's metrics.jsonl rows without the wall-clock fields (what a resumed run must repeat exactly). */
export function metricsWithoutTimes(runDir: string): Record<string, unknown>[] {
  return readFileSync(join(runDir, "metrics.jsonl"), "utf8").trim().split("\n").map((l) => {
    const { seconds: _s, samples_per_s: _r, ...rest } = JSON.parse(l);
    return rest;
  });
}
