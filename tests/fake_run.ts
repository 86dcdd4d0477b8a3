// A fake run folder for the report tests (and for looking at the report in a browser):
// config.json, metrics.jsonl, samples/epoch_<E>/ with small PNGs, eval/<name>/results.json.
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { writePng } from "../src/io/image.ts";

/** A planar RGB test picture: a background gradient with a coloured square. */
function picture(size: number, square: [number, number, number] | null, shift = 0): Float32Array {
  const n = size * size;
  const d = new Float32Array(3 * n);
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      const i = y * size + x;
      d[i] = 0.25 + 0.5 * (x / size);
      d[n + i] = 0.45 + 0.3 * (y / size);
      d[2 * n + i] = 0.7 - shift;
      const inside = x >= size / 4 && x < size / 2 && y >= size / 3 && y < (2 * size) / 3;
      if (square && inside) {
        d[i] = square[0];
        d[n + i] = square[1];
        d[2 * n + i] = square[2];
      }
    }
  }
  return d;
}

function heat(size: number, cx: number, cy: number): Float32Array {
  const n = size * size;
  const d = new Float32Array(3 * n);
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      const r2 = ((x - cx) ** 2 + (y - cy) ** 2) / (size * size * 0.02);
      const a = Math.exp(-r2);
      const i = y * size + x;
      d[i] = 0.3 + 0.7 * a;
      d[n + i] = 0.3 + 0.4 * a * (1 - a);
      d[2 * n + i] = 0.6 * (1 - a);
    }
  }
  return d;
}

function mask(size: number): Float32Array {
  const d = new Float32Array(size * size);
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) d[y * size + x] = x >= size / 4 && x < size / 2 && y >= size / 3 && y < (2 * size) / 3 ? 1 : 0;
  }
  return d;
}

export interface FakeRunOptions {
  epochs?: number;
  imageSize?: number;
}

/** Write a fake run into `dir` (which must exist). */
export async function makeFakeRun(dir: string, opts: FakeRunOptions = {}): Promise<void> {
  const epochs = opts.epochs ?? 12;
  const size = opts.imageSize ?? 64;
  writeFileSync(
    join(dir, "config.json"),
    JSON.stringify({
      seed: 42,
      logdir: "logs",
      num_epochs: epochs,
      model: "https://example.invalid/model",
      sample: { num_steps: 10, guidance_scale: 5 },
      train: { learning_rate: 2e-4 },
      reward: { alpha: -1, tau: 0.05, layers: "res:4" },
    }),
  );
  const lines: string[] = [];
  for (let e = 0; e < epochs; e++) {
    const cos = 0.3 + 0.04 * e;
    const clip = 0.08 - 0.004 * e;
    lines.push(
      JSON.stringify({
        epoch: e,
        reward_mean: cos - clip,
        reward_std: 0.05,
        reward_cos_mean: cos,
        reward_clip_mean: clip,
        mae_mean: 0.06 + 0.001 * e,
        approx_kl: 1e-6 * (e + 1),
        clipfrac: e === 3 ? null : 0.1 + 0.01 * e,
        loss: -0.01 * Math.sin(e),
        lr: 2e-4,
        grad_norm: 0.5 + 0.05 * e,
        samples_per_s: 0.8,
        seconds: 95.5,
        note: "text values are ignored",
      }),
    );
  }
  lines.splice(5, 0, "{ this line is broken");
  writeFileSync(join(dir, "metrics.jsonl"), lines.join("\n") + "\n");

  for (const epoch of [0, epochs - 1]) {
    const folder = join(dir, "samples", `epoch_${epoch}`);
    mkdirSync(folder, { recursive: true });
    const index = [];
    for (let s = 0; s < 2; s++) {
      const base = `s${s}`;
      await writePng(join(folder, `${base}_input.png`), { width: size, height: size, channels: 3, data: picture(size, null) });
      await writePng(join(folder, `${base}_output.png`), { width: size, height: size, channels: 3, data: picture(size, s ? [0.9, 0.15, 0.1] : [0.95, 0.85, 0.1], 0.1 * s) });
      await writePng(join(folder, `${base}_attention.png`), { width: size, height: size, channels: 3, data: heat(size, size * 0.37, size * 0.5) });
      await writePng(join(folder, `${base}_mask.png`), { width: size, height: size, channels: 1, data: mask(size) });
      index.push({
        id: `img${100 + s}`,
        instruction: s === 0 ? "put a yellow <box> & make it \"shine\"" : "add a red square",
        reward: 0.5 + 0.01 * epoch + s * 0.1,
        cos: 0.55 + 0.01 * epoch,
        input: `${base}_input.png`,
        output: `${base}_output.png`,
        attention: `${base}_attention.png`,
        mask: s === 1 && epoch === 0 ? "missing_mask.png" : `${base}_mask.png`,
      });
    }
    writeFileSync(join(folder, "index.json"), JSON.stringify(index));
  }

  const ev = join(dir, "eval", "epoch_final");
  mkdirSync(ev, { recursive: true });
  writeFileSync(
    join(ev, "results.json"),
    JSON.stringify({
      settings: { split: "test", guidance_scale: 5, image_guidance_scale: 1.5 },
      n: 535,
      table: [
        { setting: "single-turn", L1: 0.06081, L2: 0.01893, "CLIP-T": 0.23912, SSIM: 0.79781, PSNR: 24.25753, "CLIP-I": 0.91234 },
        { setting: "multi-turn", L1: 0.0811, L2: 0.0302, "CLIP-T": null, SSIM: 0.7012, PSNR: 21.5 },
      ],
    }),
  );
}
