// The trained model rl4pix ships (weights/editor-tiny/, embedded as weights/editor-tiny.bundle.json):
// the default model is that bundle, its files are the folder's, and an edit of a fixed held-out
// example with the CLI's default sampler moves toward the example's target where the instruction
// says, and leaves the rest of the image nearly as it was.
import { describe, expect, test } from "bun:test";
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { EMBEDDED_MODEL } from "../src/models/embedded.ts";
import { defaultModelDir } from "../src/models/default_model.ts";
import { disposeModels, loadIP2P } from "../src/diffusion/pipeline.ts";
import { editImage } from "../src/diffusion/edit.ts";
import { heldOutExamples } from "../src/pretrain/data.ts";
import { Tensor, noGrad } from "../src/tensor/index.ts";
import { useGpu } from "./helpers.ts";

useGpu();

const SHIPPED = join(import.meta.dir, "..", "weights", "editor-tiny");

function files(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const n of readdirSync(d)) {
      const p = join(d, n);
      if (statSync(p).isDirectory()) walk(p);
      else out.push(relative(dir, p));
    }
  };
  walk(dir);
  return out.sort();
}

describe("the shipped model", () => {
  test("is the embedded default, and the default model folder holds the shipped folder's files byte for byte (the model card aside)", async () => {
    expect(EMBEDDED_MODEL?.name).toBe("editor-tiny");
    const cache = mkdtempSync(join(tmpdir(), "rl4pix-shipped-"));
    try {
      const dir = await defaultModelDir({ cacheDir: cache });
      const shipped = files(SHIPPED).filter((f) => f !== "README.md");
      expect(files(dir)).toEqual(shipped);
      for (const f of shipped) expect(`${f}: ${Buffer.compare(readFileSync(join(dir, f)), readFileSync(join(SHIPPED, f))) === 0}`).toBe(`${f}: true`);
    } finally {
      rmSync(cache, { recursive: true, force: true });
    }
  });

  test("edits a fixed held-out example toward its target inside the mask and keeps the rest (CLI's default sampler)", async () => {
    const m = loadIP2P(SHIPPED);
    try {
      const size = 32;
      // Held-out example 1, "remove the red square": an edit the instruction fully determines (example
      // 0 inserts a shape at a place the instruction does not name, which no editor can match).
      const ex = heldOutExamples(2, size)[1];
      expect(ex.instruction).toBe("remove the red square");
      const r = await editImage(m, { width: size, height: size, channels: 3, data: ex.source }, ex.instruction, {
        steps: 50, guidance: { text: 7.5, image: 1.5 }, eta: 0, seed: 0,
      });
      const n = size * size;
      let inEdit = 0, inInput = 0, inCount = 0, outEdit = 0, outCount = 0;
      for (let p = 0; p < n; p++) {
        let dE = 0, dI = 0;
        for (let c = 0; c < 3; c++) {
          dE += Math.abs(r.image.data[c * n + p] - ex.target[c * n + p]) / 3;
          dI += Math.abs(ex.source[c * n + p] - ex.target[c * n + p]) / 3;
        }
        if (ex.mask[p]) {
          inEdit += dE;
          inInput += dI;
          inCount++;
        } else {
          outEdit += dE;
          outCount++;
        }
      }
      expect(inCount).toBeGreaterThan(0);
      // Inside the mask: the edit is nearer the target than the input was (the bar for the
      // held-out split's mean, 0.6x; measured here 0.07x).
      expect(inEdit / inInput).toBeLessThan(0.6);
      // Outside the mask: close to the target, which there equals the input (measured 0.068).
      expect(outEdit / outCount).toBeLessThan(0.1);
    } finally {
      disposeModels(m);
    }
  });

  test("its VAE reconstructs held-out images at 30 dB or better (issue #12's bar; the model card's 32.3 dB is over 128 images)", async () => {
    const m = loadIP2P(SHIPPED);
    try {
      const size = 32;
      const images = heldOutExamples(8, size).flatMap((e) => [e.source, e.target]); // [3, 32, 32] each, in [0, 1]
      let psnrSum = 0;
      for (const img of images) {
        const x = Tensor.from(Float32Array.from(img, (v) => v * 2 - 1), [1, 3, size, size]);
        const y = await noGrad(() => m.vae.decode(m.vae.encode(x).mean)).read(); // [1, 3, 32, 32] in [-1, 1]
        let se = 0;
        for (let i = 0; i < img.length; i++) se += (Math.min(1, Math.max(0, (y[i] + 1) / 2)) - img[i]) ** 2;
        psnrSum += 10 * Math.log10(1 / (se / img.length));
      }
      expect(psnrSum / images.length).toBeGreaterThanOrEqual(30);
    } finally {
      disposeModels(m);
    }
  });
});
