// The base settings of the learning-notes experiment scripts (learning_evidence, sampler_grid,
// mae_probe, ppo_signal_probe): the demo's training run as it was through E17–E23, frozen here so
// that the commands recorded in docs/learning-notes.md keep producing the same configuration when
// the demo's own settings (src/cli/demo.ts) change. Each script adds its --set overrides on top.
export const EXPERIMENT_SETTINGS = [
  "resolution=32",
  "sample.num_steps=6",
  "sample.batch_size=8",
  "sample.num_batches_per_epoch=1",
  "sample.num_image_per_prompt=4",
  "train.batch_size=1",
  "train.learning_rate=0.001",
  "train.adam_beta2=0.99",
  "train.clip_range=0.2",
  "train.skip_final_steps=2",
  "reward.alpha=-1",
  "per_prompt_stat_tracking.buffer_size=4",
  "per_prompt_stat_tracking.min_count=4",
  "report.num_samples=4",
];
