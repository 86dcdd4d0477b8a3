// Pretraining our own InstructPix2Pix (src/pretrain/): each objective trains what it should, a run
// stopped and resumed equals an uninterrupted one bit for bit, a damaged checkpoint or changed
// settings are refused with the file named, and the held-out measurements compute what they claim.
import { describe, expect, test } from "bun:test";
import { cpSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { tinyModelDir } from "../src/models/tiny.ts";
import { disposeModels, type IP2PModels, loadIP2P } from "../src/diffusion/pipeline.ts";
import { backward, clearTape, scope, type Tensor } from "../src/tensor/index.ts";
import { scopeAsync } from "../src/tensor/scope.ts";
import { adamW, createAdamWState } from "../src/tensor/ops/optim.ts";
import { editorLoss, stepStreams, t2iLoss, timestepWeights, vaeLoss } from "../src/pretrain/objectives.ts";
import { heldOutExamples, maskToMap, trainExample } from "../src/pretrain/data.ts";
import { wordPositions } from "../src/pretrain/evaluate.ts";
import { preparePretrainDir, runPretrain } from "../src/pretrain/run.ts";
import { learningRate } from "../src/pretrain/loop.ts";
import { openSafetensors, type TensorToWrite, writeSafetensors } from "../src/io/safetensors.ts";
import { pretrainSettings, type PretrainOptions } from "../src/cli/pretrain.ts";
import { UserError } from "../src/errors.ts";
import { useGpu } from "./helpers.ts";

useGpu();

/** Gradients of one loss: which parameters got one. */
async function gradientOwners(m: IP2PModels, loss: () => Tensor): Promise<{ unet: boolean[]; vae: boolean[]; text: boolean[] }> {
  const groups = { unet: m.unet, vae: m.vae, text: m.textEncoder };
  const all = Object.values(groups).flatMap((g) => g.namedParameters().map(([, p]) => p.t));
  for (const t of all) t.requireGrad();
  const out = await scopeAsync(async () => {
    backward(loss());
    const owners = Object.fromEntries(Object.entries(groups).map(([k, g]) => [k, g.namedParameters().map(([, p]) => p.t.grad !== null)]));
    // conv_in's image channels get an exact zero gradient in the text-to-image stage.
    return owners as { unet: boolean[]; vae: boolean[]; text: boolean[] };
  });
  clearTape();
  for (const t of all) {
    t.grad?.dispose();
    t.grad = null;
    t.requireGrad(false);
  }
  return out;
}

describe("pretraining objectives", () => {
  test("the VAE loss reaches only the VAE, the text-to-image loss the UNet and the text encoder, the editor loss only the UNet", async () => {
    const m = loadIP2P(await tinyModelDir());
    try {
      const v = await gradientOwners(m, () => vaeLoss(m, 0, 0, 2, 32, { klWeight: 1e-5 }));
      expect(v.vae.every(Boolean)).toBe(true);
      expect(v.unet.some(Boolean) || v.text.some(Boolean)).toBe(false);
      const t = await gradientOwners(m, () => t2iLoss(m, 0, 0, 2, 32, { captionDropout: 0 }));
      expect(t.unet.every(Boolean)).toBe(true);
      expect(t.text.every(Boolean)).toBe(true);
      expect(t.vae.some(Boolean)).toBe(false);
      const e = await gradientOwners(m, () => editorLoss(m, 0, 0, 2, 32, { dropout: 0.05 }));
      expect(e.unet.every(Boolean)).toBe(true);
      expect(e.text.some(Boolean) || e.vae.some(Boolean)).toBe(false);
    } finally {
      disposeModels(m);
    }
  });

  test("a step's loss is a function of (seed, step): the same step twice gives the same value, another step another", async () => {
    const m = loadIP2P(await tinyModelDir());
    try {
      const value = (step: number, seed = 0) => scopeAsync(async () => await editorLoss(m, seed, step, 2, 32, { dropout: 0.05 }).item());
      const a = await value(3);
      expect(await value(3)).toBe(a);
      expect(await value(4)).not.toBe(a);
      expect(await value(3, 1)).not.toBe(a);
    } finally {
      disposeModels(m);
    }
  });

  test("the learning rate: linear warm-up, then constant or falling linearly to 0 at the last step", () => {
    const spec = { learningRate: 1e-3, warmupSteps: 10, steps: 100 };
    expect(learningRate({ ...spec, decay: "none" }, 0)).toBeCloseTo(1e-4, 12);
    expect(learningRate({ ...spec, decay: "none" }, 9)).toBeCloseTo(1e-3, 12);
    expect(learningRate({ ...spec, decay: "none" }, 99)).toBeCloseTo(1e-3, 12);
    expect(learningRate({ ...spec, decay: "linear" }, 0)).toBeCloseTo(1e-4, 12); // 1e-3 · 1/10 · (1 − 0/100)
    expect(learningRate({ ...spec, decay: "linear" }, 50)).toBeCloseTo(5e-4, 12);
    expect(learningRate({ ...spec, decay: "linear" }, 99)).toBeCloseTo(1e-5, 12);
    // an optimizer restarted at step 60 warms up again from there
    expect(learningRate({ ...spec, decay: "none" }, 60, 60)).toBeCloseTo(1e-4, 12);
    expect(learningRate({ ...spec, decay: "none" }, 64, 60)).toBeCloseTo(5e-4, 12);
    expect(learningRate({ ...spec, decay: "linear" }, 60, 60)).toBeCloseTo(4e-5, 12); // 1e-3 · 1/10 · (1 − 60/100)
  });

  test("the v weighting scales a step's noise loss by 1/alphabar_t over its mean (alphabar from the scaled-linear betas, computed here)", async () => {
    // SD's schedule: betas linear in sqrt between 0.00085 and 0.012 over 1000 steps.
    const abar: number[] = [];
    let acc = 1;
    for (let t = 0; t < 1000; t++) {
      const b = (Math.sqrt(0.00085) + (t / 999) * (Math.sqrt(0.012) - Math.sqrt(0.00085))) ** 2;
      acc *= 1 - b;
      abar.push(acc);
    }
    const meanInv = abar.reduce((a, x) => a + 1 / x, 0) / 1000;
    const w = timestepWeights(Float32Array.from(abar), "v");
    for (const t of [0, 500, 950, 999]) expect(w[t]).toBeCloseTo(1 / abar[t] / meanInv, 5);
    expect(Array.from(timestepWeights(Float32Array.from(abar), "eps")).every((x) => x === 1)).toBe(true);
    const m = loadIP2P(await tinyModelDir());
    try {
      for (const step of [0, 5]) {
        const value = (weighting: "eps" | "v") => scopeAsync(async () => await editorLoss(m, 0, step, 1, 32, { dropout: 0.05, weighting }).item());
        // The one example's timestep: the step's stream draws the dropout first, then t.
        const rng = stepStreams(0, "editor", step).rng;
        rng.next();
        const t = Math.min(999, Math.floor(rng.next() * 1000));
        expect((await value("v")) / (await value("eps"))).toBeCloseTo(1 / abar[t] / meanInv, 3);
      }
    } finally {
      disposeModels(m);
    }
  });

  test("training the VAE and the editor on one fixed step drives their losses down", async () => {
    const m = loadIP2P(await tinyModelDir());
    try {
      for (const [name, params, loss] of [
        ["vae", m.vae.namedParameters().map(([, p]) => p.t), () => vaeLoss(m, 0, 7, 2, 32, { klWeight: 1e-5 })],
        ["editor", m.unet.namedParameters().map(([, p]) => p.t), () => editorLoss(m, 0, 7, 2, 32, { dropout: 0 })],
      ] as const) {
        const state = createAdamWState();
        for (const p of params) p.requireGrad();
        const losses: number[] = [];
        for (let i = 0; i < 15; i++) {
          losses.push(await scopeAsync(async () => {
            const l = loss();
            backward(l);
            const x = await l.item();
            scope(() => adamW(params, state, { lr: 2e-3, weightDecay: 0 }));
            for (const p of params) {
              p.grad?.dispose();
              p.grad = null;
            }
            return x;
          }));
          clearTape();
        }
        for (const p of params) p.requireGrad(false);
        expect(`${name}: ${losses[14] < 0.7 * losses[0]}`).toBe(`${name}: true`);
      }
    } finally {
      disposeModels(m);
    }
  });
});

describe("held-out data and measurements", () => {
  test("the held-out split is fixed and never among the first training examples", () => {
    const a = heldOutExamples(8, 32);
    const b = heldOutExamples(8, 32);
    expect(a.map((e) => e.instruction)).toEqual(b.map((e) => e.instruction));
    const key = (e: { source: Float32Array; instruction: string }) => `${e.instruction}|${Array.from(e.source.subarray(0, 64)).join(",")}`;
    const train = new Set(Array.from({ length: 400 }, (_, i) => key(trainExample(i, 32))));
    for (const e of a) expect(train.has(key(e))).toBe(false);
  });

  test("maskToMap area-averages the mask", () => {
    const mask = new Uint8Array(8 * 8);
    for (let y = 0; y < 4; y++) for (let x = 0; x < 2; x++) mask[y * 8 + x] = 1; // left half of the top-left 4x4 block
    mask[7 * 8 + 7] = 1;
    const map = maskToMap(mask, 8, 2);
    expect(Array.from(map)).toEqual([0.5, 0, 0, 1 / 16]);
  });

  test("wordPositions finds an object's colour and kind tokens in a caption", async () => {
    const m = loadIP2P(await tinyModelDir());
    try {
      const caption = "a red circle and a blue square on a gray background";
      const ids = m.tokenizer.encode(caption).inputIds;
      const pos = wordPositions(m, caption, "blue square")!;
      expect(pos).toHaveLength(2);
      expect(m.tokenizer.decode([ids[pos[0]], ids[pos[1]]])).toBe("blue square");
      expect(wordPositions(m, caption, "green star")).toBeNull();
    } finally {
      disposeModels(m);
    }
  });
});

function options(out: string, spec: string, extra: Partial<PretrainOptions> = {}): PretrainOptions {
  return {
    out, spec, size: 32, batch: 2, seed: 3, vaeSteps: 3, decoderSteps: 0, decoderLr: 3e-4, t2iSteps: 3, editorSteps: 3, vaeLr: 1e-3, t2iLr: 1e-3, editorLr: 1e-3,
    textLrScale: 0.5, evalEvery: 0, heldOut: 2, evalSampleSteps: 2, checkpointEvery: 2, ...extra,
  };
}

/** Every tensor of RUN/model as f32, keyed "<component>/<state-dict key>". */
function modelTensors(dir: string): Map<string, Float32Array> {
  const out = new Map<string, Float32Array>();
  for (const [sub, file] of [["unet", "diffusion_pytorch_model.safetensors"], ["vae", "diffusion_pytorch_model.safetensors"], ["text_encoder", "model.safetensors"]]) {
    const f = openSafetensors(join(dir, "model", sub, file));
    for (const k of f.names()) out.set(`${sub}/${k}`, f.toF32(k));
  }
  return out;
}

function equalF32(a: Float32Array, b: Float32Array): boolean {
  return a.length === b.length && a.every((x, i) => Object.is(x, b[i]));
}

function modelBytes(dir: string): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  for (const sub of ["unet", "vae", "text_encoder"]) {
    for (const f of readdirSync(join(dir, "model", sub))) out.set(`${sub}/${f}`, readFileSync(join(dir, "model", sub, f)));
  }
  return out;
}

/** configs/editor-tiny.json at the embedded random model's sizes (keeps a run quick), as WORK/spec.json. */
function writeSmallSpec(work: string): string {
  const specPath = join(work, "spec.json");
  const spec = JSON.parse(readFileSync(join(import.meta.dir, "..", "configs", "editor-tiny.json"), "utf8"));
  spec.unet = { ...spec.unet, block_out_channels: [16, 32], cross_attention_dim: 32, attention_head_dim: 2 };
  spec.text_encoder = { ...spec.text_encoder, hidden_size: 32, intermediate_size: 64, projection_dim: 32 };
  spec.vae = { ...spec.vae, block_out_channels: [8, 16] };
  writeFileSync(specPath, JSON.stringify(spec));
  return specPath;
}

describe("rl4pix pretrain runs", () => {
  test("stopped in every stage and resumed, a run writes the same model bytes as an uninterrupted one; bad resumes are refused", async () => {
    const work = mkdtempSync(join(tmpdir(), "rl4pix-pretrain-"));
    try {
      const specPath = writeSmallSpec(work);

      const whole = join(work, "whole");
      expect(await runPretrain(whole, pretrainSettings(options(whole, specPath, { decoderSteps: 3 })))).toBe(true);

      const parts = join(work, "parts");
      const settings = pretrainSettings(options(parts, specPath, { decoderSteps: 3 }));
      // Stop after 2, then 2, then 2, … optimizer steps: every stage is interrupted at least once
      // (after its first or second step), and checkpoints are written at the stop.
      let resumes = 0;
      for (;;) {
        let calls = 0;
        const done = await runPretrain(parts, settings, { stop: () => ++calls >= 2 });
        if (done) break;
        resumes++;
        expect(resumes).toBeLessThan(10);
      }
      expect(resumes).toBeGreaterThanOrEqual(4);
      const a = modelBytes(whole);
      const b = modelBytes(parts);
      expect([...b.keys()].sort()).toEqual([...a.keys()].sort());
      for (const [k, v] of a) expect(`${k}: ${Buffer.compare(v, b.get(k)!) === 0}`).toBe(`${k}: true`);
      const vaeCfg = JSON.parse(readFileSync(join(whole, "model", "vae", "config.json"), "utf8"));
      expect(vaeCfg.scaling_factor).not.toBe(1); // chosen from the trained encoder's latents

      // A finished run copied without its model folder (as checkpoints/ snapshots are): resuming
      // writes the same model again rather than reporting a folder that is not there.
      rmSync(join(parts, "model"), { recursive: true, force: true });
      expect(await runPretrain(parts, settings)).toBe(true);
      const c = modelBytes(parts);
      for (const [k, v] of a) expect(`${k}: ${Buffer.compare(v, c.get(k)!) === 0}`).toBe(`${k}: true`);

      // A lengthened last stage continues the run and writes the model folder again.
      const before = modelBytes(whole).get("unet/diffusion_pytorch_model.safetensors")!;
      expect(await runPretrain(whole, pretrainSettings(options(whole, specPath, { decoderSteps: 3, editorSteps: 4 })))).toBe(true);
      expect(JSON.parse(readFileSync(join(whole, "editor", "done.json"), "utf8")).steps).toBe(4);
      expect(Buffer.compare(before, modelBytes(whole).get("unet/diffusion_pytorch_model.safetensors")!)).not.toBe(0);
      // Lengthening an earlier stage would change what the later ones started from: refused before
      // anything trains (the t2i stage keeps its 3 steps).
      await expect(runPretrain(whole, pretrainSettings(options(whole, specPath, { decoderSteps: 3, t2iSteps: 4, editorSteps: 4 })))).rejects.toThrow(/editor.*state\.json: written with other pretraining settings/);
      expect(readdirSync(join(whole, "t2i")).filter((n) => n.startsWith("ckpt-")).sort().pop()).toBe("ckpt-0000003");

      // Other settings on the same folder: refused, naming settings.json.
      const other = pretrainSettings(options(parts, specPath, { decoderSteps: 3, t2iLr: 5e-4 }));
      await expect(runPretrain(parts, other)).rejects.toThrow(/settings\.json: this run was started with other settings/);

      // A damaged newest checkpoint: refused, naming the file (never a silent fall-back).
      const longer = pretrainSettings(options(parts, specPath, { decoderSteps: 3, editorSteps: 5 }));
      const ckpts = readdirSync(join(parts, "editor")).filter((n) => n.startsWith("ckpt-")).sort();
      const newest = join(parts, "editor", ckpts[ckpts.length - 1], "weights.safetensors");
      writeFileSync(newest, readFileSync(newest).subarray(0, 100));
      let err: unknown = null;
      try {
        await runPretrain(parts, longer);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(UserError);
      expect((err as Error).message).toContain(newest);
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
  });

  test("a stage that has not started may take other settings; once started, it may not", async () => {
    const work = mkdtempSync(join(tmpdir(), "rl4pix-pretrain-"));
    try {
      const specPath = writeSmallSpec(work);
      const dir = join(work, "run");
      // The editor batch equal to --batch and the eps weighting stay out of the settings (runs made
      // before the editor options existed still match); v is the default.
      expect(pretrainSettings(options(dir, specPath)).editor.weighting).toBe("v");
      const plain = pretrainSettings(options(dir, specPath, { vaeSteps: 2, t2iSteps: 2, editorSteps: 0, editorBatch: 2, editorLoss: "eps" }));
      expect("batch" in plain.editor || "weighting" in plain.editor).toBe(false);
      expect(await runPretrain(dir, plain)).toBe(true); // the editor stage has 0 steps: not started
      const editor = pretrainSettings(options(dir, specPath, { vaeSteps: 2, t2iSteps: 2, editorSteps: 2, editorLr: 5e-4, editorBatch: 4, editorLoss: "v" }));
      expect(editor.editor).toEqual({ steps: 2, lr: 5e-4, dropout: 0.05, batch: 4, weighting: "v" });
      expect(await runPretrain(dir, editor)).toBe(true);
      expect(JSON.parse(readFileSync(join(dir, "settings.json"), "utf8")).editor.weighting).toBe("v");
      const again = pretrainSettings(options(dir, specPath, { vaeSteps: 2, t2iSteps: 2, editorSteps: 3, editorLr: 1e-3, editorBatch: 4, editorLoss: "v" }));
      await expect(runPretrain(dir, again)).rejects.toThrow(/settings\.json: this run was started with other settings/);
      // and the text-to-image stage, which has run, keeps its settings
      const t2i = pretrainSettings(options(dir, specPath, { vaeSteps: 2, t2iSteps: 2, t2iLr: 5e-4, editorSteps: 2, editorLr: 5e-4, editorBatch: 4, editorLoss: "v" }));
      await expect(runPretrain(dir, t2i)).rejects.toThrow(/settings\.json: this run was started with other settings/);
      expect(() => pretrainSettings(options(dir, specPath, { editorLoss: "x0" }))).toThrow(/--editor-loss: must be eps or v/);
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
  });

  test("the decoder stage trains only the decoder, the other stages do not depend on it, and it may be added to a finished run", async () => {
    const work = mkdtempSync(join(tmpdir(), "rl4pix-pretrain-"));
    try {
      const specPath = writeSmallSpec(work);
      const plain = join(work, "plain");
      expect(await runPretrain(plain, pretrainSettings(options(plain, specPath, { editorSteps: 2 })))).toBe(true);
      const plainTensors = modelTensors(plain);
      const withDecoder = join(work, "decoder");
      expect(await runPretrain(withDecoder, pretrainSettings(options(withDecoder, specPath, { decoderSteps: 3, editorSteps: 2 })))).toBe(true);
      const tuned = modelTensors(withDecoder);
      expect([...tuned.keys()].sort()).toEqual([...plainTensors.keys()].sort());
      const changed = [...tuned.keys()].filter((k) => !equalF32(tuned.get(k)!, plainTensors.get(k)!));
      // every changed tensor is the decoder's (it trained), and all of the decoder's conv weights changed
      expect(changed.length).toBeGreaterThan(0);
      expect(changed.filter((k) => !/^vae\/(decoder|post_quant_conv)\./.test(k))).toEqual([]);
      const decoderConvs = [...tuned.keys()].filter((k) => /^vae\/decoder\..*conv.*\.weight$/.test(k));
      expect(decoderConvs.length).toBeGreaterThan(0);
      expect(decoderConvs.filter((k) => !changed.includes(k))).toEqual([]);

      // Added to the finished run: the decoder trains (as in a run that had it from the start) and the
      // model folder is written again; the later stages are not rerun.
      const editorCkpts = readdirSync(join(plain, "editor")).sort();
      expect(await runPretrain(plain, pretrainSettings(options(plain, specPath, { decoderSteps: 3, editorSteps: 2 })))).toBe(true);
      expect(readdirSync(join(plain, "editor")).sort()).toEqual(editorCkpts);
      const added = modelTensors(plain);
      for (const k of tuned.keys()) expect(`${k}: ${equalF32(added.get(k)!, tuned.get(k)!)}`).toBe(`${k}: true`);

      // Its learning rate decays to 0 at its last step, so its length is part of what it computes:
      // lengthening it once started is refused, naming settings.json, before anything trains.
      await expect(runPretrain(plain, pretrainSettings(options(plain, specPath, { decoderSteps: 4, editorSteps: 2 })))).rejects.toThrow(/settings\.json: this run was started with other settings/);
      expect(readdirSync(join(plain, "decoder")).filter((n) => n.startsWith("ckpt-")).sort().pop()).toBe("ckpt-0000003");
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
  });

  test("a stage kept without its AdamW moments is lengthened only with freshOptimizer, which restarts the optimizer and warm-up; that continuation resumes exactly", async () => {
    const work = mkdtempSync(join(tmpdir(), "rl4pix-pretrain-"));
    try {
      const specPath = writeSmallSpec(work);
      const a = join(work, "a");
      expect(await runPretrain(a, pretrainSettings(options(a, specPath, { t2iSteps: 3, editorSteps: 2 })))).toBe(true);
      // keep the text-to-image stage as scripts/snapshot_pretrain.ts keeps a finished stage: weights only
      rmSync(join(a, "editor"), { recursive: true });
      const t2iCkpts = () => readdirSync(join(a, "t2i")).filter((n) => n.startsWith("ckpt-")).sort();
      const kept = join(a, "t2i", t2iCkpts().pop()!, "weights.safetensors");
      const f = openSafetensors(kept);
      const weights = new Map<string, TensorToWrite>(f.names().filter((n) => !n.startsWith("adam_")).map((n) => [n, { dtype: "F32", shape: f.info(n).shape, data: f.toF32(n) }]));
      expect(weights.size).toBeLessThan(f.names().length);
      writeSafetensors(kept, weights, f.metadata ?? undefined);
      const b = join(work, "b");
      cpSync(a, b, { recursive: true });

      const longer = (dir: string) => pretrainSettings(options(dir, specPath, { t2iSteps: 5, editorSteps: 2 }));
      await expect(runPretrain(a, longer(a))).rejects.toThrow(/t2i.ckpt-0000003.weights\.safetensors: holds the weights only .*--fresh-optimizer/);
      expect(t2iCkpts().pop()).toBe("ckpt-0000003");

      const lines: string[] = [];
      expect(await runPretrain(a, longer(a), { freshOptimizer: true, log: (l) => lines.push(l) })).toBe(true);
      expect(lines).toContain("t2i: continuing at step 3/5 with a restarted optimizer (the checkpoint holds no AdamW moments)");
      const state = JSON.parse(readFileSync(join(a, "t2i", "ckpt-0000005", "state.json"), "utf8"));
      expect({ step: state.step, adamStep: state.adamStep, optimizerRestartedAt: state.optimizerRestartedAt }).toEqual({ step: 5, adamStep: 2, optimizerRestartedAt: 3 });
      expect(readdirSync(join(a, "editor")).filter((n) => n.startsWith("ckpt-")).length).toBeGreaterThan(0);

      // The same continuation stopped after its first step and resumed (its checkpoint has moments
      // now, so no flag is needed): the same model bytes.
      let polls = 0;
      expect(await runPretrain(b, longer(b), { freshOptimizer: true, stop: () => ++polls === 1 })).toBe(false);
      expect(JSON.parse(readFileSync(join(b, "t2i", "ckpt-0000004", "state.json"), "utf8")).optimizerRestartedAt).toBe(3);
      expect(await runPretrain(b, longer(b))).toBe(true);
      const want = modelBytes(a);
      const got = modelBytes(b);
      for (const [k, v] of want) expect(`${k}: ${Buffer.compare(v, got.get(k)!) === 0}`).toBe(`${k}: true`);
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
  });

  test("the starting model folder is refused when it is not a model", async () => {
    const work = mkdtempSync(join(tmpdir(), "rl4pix-pretrain-"));
    try {
      const settings = pretrainSettings(options(work, ""));
      preparePretrainDir(work, settings); // settings.json and the random starting model
      writeFileSync(join(work, "base", "model_index.json"), "{ not json");
      await expect(runPretrain(work, settings)).rejects.toThrow(/model_index\.json/);
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
  });
});
