// Supervised IP2P fine-tuning (src/diffusion/finetune.ts) and `rl4pix pretrain`: the loss falls when
// the whole UNet trains on a fixed batch, and the written folder is the source model with new UNet
// weights only.
import { describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { defaultModelDir } from "../src/models/tiny.ts";
import { disposeModels, loadIP2P } from "../src/diffusion/pipeline.ts";
import { finetuneLoss, trainableTextEncoder, trainableUnet } from "../src/diffusion/finetune.ts";
import { pretrain } from "../src/cli/pretrain.ts";
import { rgbToPlanar, synthSample } from "../src/data/synth.ts";
import { Prng } from "../src/data/prng.ts";
import { backward, clearTape, scope } from "../src/tensor/index.ts";
import { scopeAsync } from "../src/tensor/scope.ts";
import { adamW, createAdamWState } from "../src/tensor/ops/optim.ts";
import { openSafetensors } from "../src/io/safetensors.ts";
import { UserError } from "../src/errors.ts";
import { useGpu } from "./helpers.ts";

useGpu();

describe("finetune", () => {
  test("training every UNet weight on one fixed batch drives the noise-prediction loss down", async () => {
    const m = loadIP2P(await defaultModelDir());
    try {
      const batch = [0, 1].map((i) => {
        const s = synthSample(3, i, { size: 32 });
        return { source: rgbToPlanar(s.source, 32, 32), target: rgbToPlanar(s.target, 32, 32), instruction: s.instruction };
      });
      const params = trainableUnet(m);
      expect(params.length).toBe(m.unet.namedParameters().length);
      const state = createAdamWState();
      const losses: number[] = [];
      for (let step = 0; step < 20; step++) {
        // The same timesteps, noise and (no) dropout every step: a fixed regression problem.
        const v = await scopeAsync(async () => {
          const l = finetuneLoss(m, batch, 32, new Prng(7), 11, { text: 0, image: 0 });
          backward(l);
          const x = await l.item();
          scope(() => adamW(params, state, { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0 }));
          for (const p of params) {
            expect(p.grad).not.toBeNull(); // every weight received a gradient
            p.grad!.dispose();
            p.grad = null;
          }
          return x;
        });
        clearTape();
        losses.push(v);
      }
      expect(losses[0]).toBeGreaterThan(0.3); // ~E[eps^2] = 1 for an untrained model
      expect(losses[19]).toBeLessThan(0.6 * losses[0]); // measured: 1.02 -> 0.48
      for (let i = 1; i < 20; i++) expect(losses[i]).toBeLessThan(losses[i - 1] + 0.02); // no blow-up
      for (const p of params) p.requireGrad(false);
    } finally {
      disposeModels(m);
    }
  });

  test("with the text encoder trainable, every text-encoder weight gets a gradient too", async () => {
    const m = loadIP2P(await defaultModelDir());
    try {
      const s = synthSample(3, 0, { size: 32 });
      const batch = [{ source: rgbToPlanar(s.source, 32, 32), target: rgbToPlanar(s.target, 32, 32), instruction: s.instruction }];
      const text = trainableTextEncoder(m);
      expect(text.length).toBe(m.textEncoder.namedParameters().length);
      await scopeAsync(async () => {
        backward(finetuneLoss(m, batch, 32, new Prng(1), 2, { text: 0, image: 0 }, true));
        for (const p of text) {
          expect(p.grad).not.toBeNull();
          const g = await p.grad!.readF32();
          p.grad!.dispose();
          p.grad = null;
          expect(g.every(Number.isFinite)).toBe(true);
        }
      });
      clearTape();
      for (const p of text) p.requireGrad(false);
    } finally {
      disposeModels(m);
    }
  });
});

describe("rl4pix pretrain", () => {
  test("writes the source folder with new UNet weights only, and refuses a non-empty output folder", async () => {
    const work = mkdtempSync(join(tmpdir(), "rl4pix-pretrain-"));
    try {
      const out = join(work, "model");
      const losses = await pretrain({ out, steps: 2, batch: 2, size: 32, lr: 1e-3, seed: 0, dataSeed: 1, quiet: true });
      expect(losses.length).toBe(2);
      const src = await defaultModelDir();
      for (const f of ["model_index.json", "unet/config.json", "vae/diffusion_pytorch_model.safetensors", "text_encoder/config.json"]) {
        expect(Buffer.compare(readFileSync(join(out, f)), readFileSync(join(src, f)))).toBe(0);
      }
      const a = openSafetensors(join(src, "unet", "diffusion_pytorch_model.safetensors"));
      const b = openSafetensors(join(out, "unet", "diffusion_pytorch_model.safetensors"));
      expect(b.names().sort()).toEqual(a.names().sort());
      const w = "conv_in.weight";
      const changed = a.toF32(w).some((v, i) => v !== b.toF32(w)[i]);
      expect(changed).toBe(true);
      expect(JSON.parse(b.metadata!["rl4pix_pretrain"]).steps).toBe(2);
      const m = loadIP2P(out); // loads strictly: every key present with its shape
      disposeModels(m);

      writeFileSync(join(work, "busy.txt"), "x");
      let err: unknown = null;
      try {
        await pretrain({ out: work, steps: 1, batch: 1, size: 32, lr: 1e-3, seed: 0, dataSeed: 1, quiet: true });
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(UserError);
      expect(String((err as Error).message)).toContain("exists and is not empty");
      expect(existsSync(join(work, "unet"))).toBe(false);
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
  });
});
