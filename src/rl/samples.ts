// The per-save pictures of a run (the paper's Fig. 3): for a fixed set of samples, the input, the
// edit with the current LoRA (deterministic: eta 0, fixed seed), the instruction's attention map over
// the input, and the ground-truth mask; plus index.json for the report.
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { writeFileAtomic } from "../io/atomic.ts";
import { writePng } from "../io/image.ts";
import { editImage } from "../diffusion/edit.ts";
import { attentionOverlay } from "../diffusion/images.ts";
import { instructReward } from "./reward.ts";
import type { PreparedSample } from "./prepare.ts";
import type { Trainer } from "./trainer.ts";

export interface SampleEntry {
  id: string;
  instruction: string;
  reward: number;
  cos: number;
  input: string;
  output: string;
  attention: string;
  mask: string;
}

export async function writeEpochSamples(trainer: Trainer, dir: string, samples: readonly PreparedSample[]): Promise<SampleEntry[]> {
  mkdirSync(dir, { recursive: true });
  const c = trainer.cfg;
  const entries: SampleEntry[] = [];
  for (let k = 0; k < samples.length; k++) {
    const s = samples[k];
    const input = { width: s.size, height: s.size, channels: 3, data: s.source };
    const r = await editImage(trainer.models, input, s.instruction, {
      steps: c.sample.num_steps,
      guidance: { text: c.sample.guidance_scale, image: c.sample.image_guidance_scale },
      eta: 0,
      seed: c.seed + k,
      attentionLayers: trainer.layers.map((l) => l.path).join(","),
    });
    const att = r.attention!;
    const parts = instructReward(att.map, s.aGt, s.source, r.image.data, c.reward.alpha, c.reward.tau);
    const name = (what: string) => `${k}_${what}.png`;
    await writePng(join(dir, name("input")), input);
    await writePng(join(dir, name("output")), r.image);
    await writePng(join(dir, name("attention")), attentionOverlay(input, att.map, att.width, att.height));
    await writePng(join(dir, name("mask")), { width: s.size, height: s.size, channels: 1, data: s.mask });
    entries.push({ id: s.id, instruction: s.instruction, reward: parts.reward, cos: parts.cos, input: name("input"), output: name("output"), attention: name("attention"), mask: name("mask") });
  }
  writeFileAtomic(join(dir, "index.json"), JSON.stringify(entries, null, 2));
  return entries;
}
