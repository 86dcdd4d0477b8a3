// Training on the embedded tiny model and synthetic data: log-prob consistency, exact resume,
// refusing a foreign run dir, stopping cleanly on divergence, Ctrl-C, a failed checkpoint write, a
// reward function in place of the paper's.
import { describe, expect, spyOn, test } from "bun:test";
import { spawn } from "node:child_process";
import { existsSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { tinyModelDir } from "../src/models/tiny.ts";
import { encodePrompts, encodeImages, guidedConditioning, loadIP2P, sampleChain, disposeModels, disposeTrajectory } from "../src/diffusion/pipeline.ts";
import * as score from "../src/diffusion/score.ts";
import { stepLogProb } from "../src/diffusion/score.ts";
import { initLora } from "../src/nn/lora.ts";
import { Tensor, noGrad, scope } from "../src/tensor/index.ts";
import * as ops from "../src/tensor/ops/index.ts";
import { train } from "../src/cli/train.ts";
import { listCheckpoints } from "../src/rl/checkpoint.ts";
import { UserError } from "../src/errors.ts";
import * as safetensors from "../src/io/safetensors.ts";
import { synthDataset } from "../src/data/synth_dataset.ts";
import { openDataset } from "../src/io/datasets/index.ts";
import { loadConfig } from "../src/rl/config.ts";
import { cosineSimilarity } from "../src/rl/reward.ts";
import { ensureRunDir, Trainer } from "../src/rl/trainer.ts";
import { useGpu } from "./helpers.ts";
import { SMALL_RUN, metricsWithoutTimes, tmpRunDir } from "./small_run.ts";

useGpu();

const SMALL = SMALL_RUN;
const tmp = tmpRunDir;

describe("log-probabilities", () => {
  test("recomputing a sampled chain's log-probs under the unchanged policy gives the sampling values", async () => {
    const m = loadIP2P(await tinyModelDir());
    initLora(m.unet, 4, 7);
    // make the LoRA non-trivial so the policy differs from the base model
    for (const lin of m.unet.attentionModules().flatMap(([, a]) => a.loraTargets().map(([, l]) => l))) {
      const up = lin.lora!.up;
      lin.lora!.up = ops.randn(up.shape, 5).keep().requireGrad();
      up.dispose();
    }
    const B = 2;
    const { cond, traj } = noGrad(() => scope(() => {
      const p = encodePrompts(m, ["add a red circle", "remove the blue square"]);
      const img = encodeImages(m, ops.affine(ops.rand([B, 3, 32, 32], 3), 2, -1));
      const cond = guidedConditioning(m, p.embeds, img);
      const traj = sampleChain(m, cond, [B, 4, 16, 16], { steps: 5, guidance: { text: 5, image: 1.5 }, eta: 1, seeds: [11, 12] });
      return { cond, traj };
    }));
    expect(traj.logProbs).not.toBeNull();
    // score steps in a shuffled order with one timestep per sample, as PPO batches them
    const ts = traj.timesteps;
    for (const [i, j] of [[0, 3], [4, 1], [2, 2]]) {
      const lp = scope(() => {
        const x = ops.concat([ops.slice(traj.latents[i], 0, 0, 1), ops.slice(traj.latents[j], 0, 1, 2)], 0);
        const next = ops.concat([ops.slice(traj.latents[i + 1], 0, 0, 1), ops.slice(traj.latents[j + 1], 0, 1, 2)], 0);
        return stepLogProb(m, cond, x, next, [ts[i], ts[j]], { text: 5, image: 1.5 }, 1).keep();
      });
      const got = await lp.readF32();
      const want = [(await traj.logProbs![i].readF32())[0], (await traj.logProbs![j].readF32())[1]];
      expect(Math.abs(got[0] - want[0])).toBeLessThan(1e-5);
      expect(Math.abs(got[1] - want[1])).toBeLessThan(1e-5);
      lp.dispose();
    }
    disposeModels(m);
  });
});

describe("runs", () => {
  test("a reward function given to the trainer replaces the paper's and sees the map, sample and edit", async () => {
    const dir = tmp("reward-hook");
    try {
      await synthDataset(join(dir, "synth"), { n: 2, seed: 3, size: 32 });
      const cfg = loadConfig(undefined, [...SMALL, "num_epochs=1"]);
      const models = loadIP2P(await tinyModelDir());
      const seen: { reward: number; cos: number }[] = [];
      try {
        const trainer = new Trainer(models, cfg, await openDataset(join(dir, "synth", "manifest.jsonl")), join(dir, "run"), {
          reward: ({ attentionMap, sample, output }) => {
            expect(attentionMap.length).toBe(sample.aGt.length);
            expect(output.length).toBe(3 * 32 * 32);
            const cos = cosineSimilarity(attentionMap, sample.aGt);
            const reward = output.reduce((a, v) => a + v, 0) / output.length; // brightness
            seen.push({ reward, cos });
            return { reward, cos, clip: 0, mae: 0 };
          },
        });
        ensureRunDir(join(dir, "run"));
        await trainer.init();
        const [m] = await trainer.run();
        expect(seen.length).toBe(2);
        expect(m.reward_mean).toBeCloseTo((seen[0].reward + seen[1].reward) / 2, 12);
        expect(m.reward_cos_mean).toBeCloseTo((seen[0].cos + seen[1].cos) / 2, 12);
        // the metrics carry what the function returned, not the paper's reward (cosine-based)
        expect(Math.abs(m.reward_mean - m.reward_cos_mean)).toBeGreaterThan(0.05);
      } finally {
        disposeModels(models);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("lora.init_seed takes the adapters' initial weights from another seed, while samples and noise follow seed", async () => {
    const dir = tmp("init-seed");
    try {
      await synthDataset(join(dir, "synth"), { n: 2, seed: 3, size: 32 });
      const data = await openDataset(join(dir, "synth", "manifest.jsonl"));
      /** The adapters' weights after init (flattened) and the first epoch's mean reward. */
      const start = async (name: string, set: string[]) => {
        const models = loadIP2P(await tinyModelDir());
        try {
          const trainer = new Trainer(models, loadConfig(undefined, [...SMALL, "num_epochs=1", ...set]), data, join(dir, name));
          ensureRunDir(join(dir, name));
          await trainer.init();
          const weights: number[] = [];
          for (const p of trainer.params()) weights.push(...(await p.readF32()));
          const [m] = await trainer.run();
          return { weights, reward: m.reward_mean };
        } finally {
          disposeModels(models);
        }
      };
      const own = await start("own", ["seed=1"]);
      const borrowed = await start("borrowed", ["seed=1", "lora.init_seed=7"]);
      const seven = await start("seven", ["seed=7"]);
      expect(borrowed.weights).toEqual(seven.weights);
      expect(borrowed.weights).not.toEqual(own.weights);
      // the adapters start as a no-op (up = 0), so the first epoch's samples depend on seed alone
      expect(borrowed.reward).toBe(own.reward);
      expect(borrowed.reward).not.toBe(seven.reward);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("sample.num_image_per_prompt samples each prompt k times with its own noise, and the tracker compares the group", async () => {
    const dir = tmp("groups");
    try {
      await synthDataset(join(dir, "synth"), { n: 8, seed: 3, size: 32 });
      const set = [...SMALL, "num_epochs=1", "sample.batch_size=4", "sample.num_image_per_prompt=2", "train.batch_size=2"];
      const cfg = loadConfig(undefined, set);
      const models = loadIP2P(await tinyModelDir());
      const seen: { key: string; reward: number; output: Float32Array }[] = [];
      try {
        const trainer = new Trainer(models, cfg, await openDataset(join(dir, "synth", "manifest.jsonl")), join(dir, "run"), {
          reward: ({ sample, output }) => {
            const reward = output.reduce((a, v) => a + v, 0) / output.length;
            seen.push({ key: sample.key, reward, output: Float32Array.from(output) });
            return { reward, cos: 0, clip: 0, mae: 0 };
          },
        });
        ensureRunDir(join(dir, "run"));
        await trainer.init();
        await trainer.run();
        // two prompts, each twice in a row, the two samples of a prompt with different noise
        expect(seen.map((s) => s.key)).toEqual([seen[0].key, seen[0].key, seen[2].key, seen[2].key]);
        expect(seen[2].key).not.toBe(seen[0].key);
        for (const g of [0, 2]) {
          let diff = 0;
          for (let i = 0; i < seen[g].output.length; i++) diff = Math.max(diff, Math.abs(seen[g].output[i] - seen[g + 1].output[i]));
          expect(diff).toBeGreaterThan(0.01);
        }
        // the per-prompt tracker holds each group's two rewards (min_count 2: the group is its own baseline)
        const [, ckpt] = listCheckpoints(join(dir, "run"))[0];
        const state = JSON.parse(readFileSync(join(ckpt, "state.json"), "utf8"));
        expect(state.tracker.buffers[seen[0].key]).toEqual([seen[0].reward, seen[1].reward]);
        expect(state.tracker.buffers[seen[2].key]).toEqual([seen[2].reward, seen[3].reward]);
      } finally {
        disposeModels(models);
      }
      expect(() => loadConfig(undefined, [...set, "sample.num_image_per_prompt=3"])).toThrow(/"sample.batch_size" \(4\) must be a multiple of "sample.num_image_per_prompt" \(3\)/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("sample.shared_initial_noise starts a prompt's samples from one x_T, each with its own step noise", async () => {
    // the sampler: initialSeeds choose x_T only
    const m = loadIP2P(await tinyModelDir());
    try {
      const { plain, shared } = noGrad(() => scope(() => {
        const p = encodePrompts(m, ["make the red circle blue", "make the red circle blue"]);
        const img = encodeImages(m, ops.affine(ops.rand([2, 3, 32, 32], 3), 2, -1));
        const cond = guidedConditioning(m, p.embeds, img);
        const opts = { steps: 3, guidance: { text: 5, image: 1.5 }, eta: 1, seeds: [21, 22] };
        return { plain: sampleChain(m, cond, [2, 4, 16, 16], opts), shared: sampleChain(m, cond, [2, 4, 16, 16], { ...opts, initialSeeds: [21, 21] }) };
      }));
      /** latents[step] of sample i ([4, 16, 16]), host copy. */
      const at = async (t: typeof plain, step: number, i: number) => Array.from((await t.latents[step].readF32()).subarray(i * 1024, (i + 1) * 1024));
      const rows = {
        plainStart: [await at(plain, 0, 0), await at(plain, 0, 1)],
        sharedStart: [await at(shared, 0, 0), await at(shared, 0, 1)],
        plainEnd: [await at(plain, 3, 0), await at(plain, 3, 1)],
        sharedEnd: [await at(shared, 3, 0), await at(shared, 3, 1)],
      };
      disposeTrajectory(plain);
      disposeTrajectory(shared);
      expect(rows.sharedStart[1]).toEqual(rows.sharedStart[0]); // one x_T
      expect(rows.plainStart[1]).not.toEqual(rows.plainStart[0]);
      expect(rows.sharedStart[0]).toEqual(rows.plainStart[0]); // the first sample is untouched
      expect(rows.sharedEnd[0]).toEqual(rows.plainEnd[0]);
      expect(rows.sharedEnd[1]).not.toEqual(rows.sharedEnd[0]); // its own step noise
    } finally {
      disposeModels(m);
    }

    // the trainer: each group's first sample keeps its noise; the others start from that sample's x_T
    const dir = tmp("shared-noise");
    try {
      await synthDataset(join(dir, "synth"), { n: 8, seed: 3, size: 32 });
      const outputs = async (name: string, set: string[]): Promise<Float32Array[]> => {
        const models = loadIP2P(await tinyModelDir());
        const seen: Float32Array[] = [];
        try {
          const cfg = loadConfig(undefined, [...SMALL, "num_epochs=1", "sample.batch_size=4", "sample.num_image_per_prompt=2", "train.batch_size=2", ...set]);
          const trainer = new Trainer(models, cfg, await openDataset(join(dir, "synth", "manifest.jsonl")), join(dir, name), {
            reward: ({ output }) => {
              seen.push(Float32Array.from(output));
              return { reward: output.reduce((a, v) => a + v, 0) / output.length, cos: 0, clip: 0, mae: 0 };
            },
          });
          ensureRunDir(join(dir, name));
          await trainer.init();
          await trainer.run();
        } finally {
          disposeModels(models);
        }
        return seen;
      };
      const plain = await outputs("plain", []);
      const shared = await outputs("shared", ["sample.shared_initial_noise=true"]);
      expect(shared[0]).toEqual(plain[0]);
      expect(shared[2]).toEqual(plain[2]);
      expect(shared[1]).not.toEqual(plain[1]);
      expect(shared[3]).not.toEqual(plain[3]);
      expect(shared[1]).not.toEqual(shared[0]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("noise signs negate a sample's x_T and its noise at the chosen steps (antithetic draws, scripts/antithetic_probe.ts)", async () => {
    const m = loadIP2P(await tinyModelDir());
    try {
      const chains = noGrad(() => scope(() => {
        const p = encodePrompts(m, new Array(4).fill("make the red circle blue"));
        const img = encodeImages(m, ops.affine(ops.concat(new Array(4).fill(ops.rand([1, 3, 32, 32], 3)), 0), 2, -1));
        const cond = guidedConditioning(m, p.embeds, img);
        const opts = { steps: 2, guidance: { text: 5, image: 1.5 }, eta: 1, seeds: [5, 5, 9, 9], initialSeeds: [21, 21, 21, 21] };
        return {
          every: sampleChain(m, cond, [4, 4, 16, 16], { ...opts, stepSigns: () => [1, -1, 1, -1] }),
          second: sampleChain(m, cond, [4, 4, 16, 16], { ...opts, stepSigns: (i) => (i === 1 ? [1, -1, 1, -1] : [1, 1, 1, 1]) }),
          start: sampleChain(m, cond, [4, 4, 16, 16], { ...opts, steps: 1, initialSigns: [1, -1, 1, 1] }),
        };
      }));
      const at = async (t: typeof chains.every, step: number, i: number) => Array.from((await t.latents[step].readF32()).subarray(i * 1024, (i + 1) * 1024));
      // one x_T, antithetic first-step noise: the pair's mean is the step's mean, whichever the seed
      const [a, b, c, d] = await Promise.all([0, 1, 2, 3].map((i) => at(chains.every, 1, i)));
      expect(a).not.toEqual(c);
      expect(a).not.toEqual(b);
      const maxGap = Math.max(...a.map((v, k) => Math.abs((v + b[k]) / 2 - (c[k] + d[k]) / 2)));
      expect(maxGap).toBeLessThan(1e-5);
      // a sign at step 1 only leaves step 0's result alone and changes step 1's
      expect(await at(chains.second, 1, 1)).toEqual(await at(chains.second, 1, 0));
      expect(await at(chains.second, 2, 1)).not.toEqual(await at(chains.second, 2, 0));
      // an initial sign negates x_T exactly
      expect((await at(chains.start, 0, 1)).map((v) => -v)).toEqual(await at(chains.start, 0, 0));
      expect(await at(chains.start, 0, 2)).toEqual(await at(chains.start, 0, 0));
      for (const t of [chains.every, chains.second, chains.start]) disposeTrajectory(t);
      expect(() => noGrad(() => scope(() => {
        const p = encodePrompts(m, ["x"]);
        const cond = guidedConditioning(m, p.embeds, ops.zeros([1, 4, 16, 16]));
        return sampleChain(m, cond, [1, 4, 16, 16], { steps: 1, guidance: { text: 1, image: 1 }, eta: 1, seeds: [1], initialSigns: [2] });
      }))).toThrow(/noise signs must be ±1/);
    } finally {
      disposeModels(m);
    }
  });

  test("train.skip_final_steps leaves the last denoising steps out of the PPO loss", async () => {
    const dir = tmp("skip-final");
    try {
      await synthDataset(join(dir, "synth"), { n: 2, seed: 3, size: 32 });
      const trained = async (skip: number): Promise<number[]> => {
        const cfg = loadConfig(undefined, [...SMALL, "num_epochs=1", `train.skip_final_steps=${skip}`]);
        const models = loadIP2P(await tinyModelDir());
        const seen = new Set<number>();
        const spy = spyOn(score, "stepLogProb");
        try {
          const run = join(dir, `run-${skip}`);
          const trainer = new Trainer(models, cfg, await openDataset(join(dir, "synth", "manifest.jsonl")), run);
          ensureRunDir(run);
          await trainer.init();
          await trainer.run();
          for (const call of spy.mock.calls) for (const t of call[4] as number[]) seen.add(t);
        } finally {
          spy.mockRestore();
          disposeModels(models);
        }
        return [...seen].sort((a, b) => b - a);
      };
      // 4 DDIM steps: t = 751, 501, 251, 1
      expect(await trained(0)).toEqual([751, 501, 251, 1]);
      expect(await trained(2)).toEqual([751, 501]);
      expect(() => loadConfig(undefined, [...SMALL, "train.skip_final_steps=4"])).toThrow(/"train.skip_final_steps" \(4\) must be below "sample.num_steps" \(4\)/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("a run resumed from its checkpoint continues bit-identically", async () => {
    const a = tmp("runA");
    const b = tmp("runB");
    try {
      await train({ out: a, set: [...SMALL, "num_epochs=2"], quiet: true });
      await train({ out: b, set: [...SMALL, "num_epochs=1"], quiet: true });
      expect(listCheckpoints(b).map(([e]) => e)).toEqual([0]);
      await train({ out: b, set: [...SMALL, "num_epochs=2"], quiet: true });
      const lora = (dir: string) => readFileSync(join(dir, "checkpoints", "checkpoint_1", "trainer.safetensors"));
      expect(Buffer.compare(lora(a), lora(b))).toBe(0);
      const strip = metricsWithoutTimes;
      expect(strip(b)).toEqual(strip(a));
      expect(strip(a).length).toBe(2);
      expect(existsSync(join(a, "report.html"))).toBe(true);
      expect(existsSync(join(a, "samples", "epoch_2", "index.json"))).toBe(true);
    } finally {
      rmSync(a, { recursive: true, force: true });
      rmSync(b, { recursive: true, force: true });
    }
  });

  test("a run with convolution adapters resumes bit-identically and writes them in peft's shapes", async () => {
    const a = tmp("runConvA");
    const b = tmp("runConvB");
    const set = [...SMALL, "lora.target_modules=attn2.to_k,up_blocks.1.resnets.0.conv1,conv_out"];
    try {
      await train({ out: a, set: [...set, "num_epochs=2"], quiet: true });
      await train({ out: b, set: [...set, "num_epochs=1"], quiet: true });
      await train({ out: b, set: [...set, "num_epochs=2"], quiet: true });
      const file = (dir: string, name: string) => join(dir, "checkpoints", "checkpoint_1", name);
      expect(Buffer.compare(readFileSync(file(a, "trainer.safetensors")), readFileSync(file(b, "trainer.safetensors")))).toBe(0);
      expect(metricsWithoutTimes(b)).toEqual(metricsWithoutTimes(a));
      const peft = safetensors.openSafetensors(file(a, "pytorch_lora_weights.safetensors"));
      expect(peft.info("unet.up_blocks.1.resnets.0.conv1.lora_A.weight").shape.length).toBe(4);
      expect(peft.info("unet.conv_out.lora_B.weight").shape).toEqual([4, 4, 1, 1]);
      const up = peft.toF32("unet.conv_out.lora_B.weight");
      expect(up.some((v) => v !== 0)).toBe(true); // trained away from its zero initialisation
    } finally {
      rmSync(a, { recursive: true, force: true });
      rmSync(b, { recursive: true, force: true });
    }
  });

  test("a run dir made with another configuration is refused unless --force", async () => {
    const d = tmp("runC");
    try {
      await train({ out: d, set: [...SMALL, "num_epochs=1"], quiet: true });
      let err: unknown = null;
      try {
        await train({ out: d, set: [...SMALL, "num_epochs=2", "train.learning_rate=0.01"], quiet: true });
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(UserError);
      expect(String((err as Error).message)).toContain("train.learning_rate");
    } finally {
      rmSync(d, { recursive: true, force: true });
    }
  });

  test("a diverging run stops with a clear message and keeps its last good checkpoint", async () => {
    const d = tmp("runD");
    try {
      let err: unknown = null;
      try {
        await train({ out: d, set: [...SMALL, "num_epochs=3", "train.learning_rate=1e30", "train.max_grad_norm=1e30", "train.clip_range=1e30"], quiet: true });
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(UserError);
      expect(String((err as Error).message)).toMatch(/training diverged/);
      const ck = listCheckpoints(d);
      expect(ck.length).toBeGreaterThan(0);
      expect(existsSync(join(ck[ck.length - 1][1], "pytorch_lora_weights.safetensors"))).toBe(true);
    } finally {
      rmSync(d, { recursive: true, force: true });
    }
  });

  test("a checkpoint write that fails (full disk) leaves the previous checkpoint intact and says so", async () => {
    const d = tmp("runE");
    try {
      await train({ out: d, set: [...SMALL, "num_epochs=1"], quiet: true });
      const [[epoch0, dir0]] = listCheckpoints(d);
      const before = readdirSync(dir0).map((f) => [f, readFileSync(join(dir0, f))] as const);
      const full = spyOn(safetensors, "writeSafetensors").mockImplementation(() => {
        throw Object.assign(new Error("ENOSPC: no space left on device, write"), { code: "ENOSPC" });
      });
      let err: unknown = null;
      try {
        await train({ out: d, set: [...SMALL, "num_epochs=2"], quiet: true });
      } catch (e) {
        err = e;
      } finally {
        full.mockRestore();
      }
      expect(err).toBeInstanceOf(UserError);
      expect(String((err as Error).message)).toMatch(/checkpoint_1: could not write the checkpoint: no space left on the device; the previous checkpoint \(.*checkpoint_0\) is intact/);
      expect(listCheckpoints(d).map(([e]) => e)).toEqual([epoch0]);
      expect(readdirSync(join(d, "checkpoints")).sort()).toEqual(["checkpoint_0"]); // no half-written folder
      for (const [f, bytes] of before) expect(Buffer.compare(readFileSync(join(dir0, f)), bytes)).toBe(0);
    } finally {
      rmSync(d, { recursive: true, force: true });
    }
  });

  test("Ctrl-C (SIGINT) from outside saves a checkpoint of a finished epoch and exits 130 (tests/faults.test.ts times it exactly)", async () => {
    const d = tmp("runF");
    try {
      await tinyModelDir(); // the child reuses the cached model
      // save_freq 1000: only the interrupt can write a checkpoint.
      const sets = [...SMALL.filter((kv) => !kv.startsWith("save_freq=")), "save_freq=1000", "num_epochs=50"].flatMap((kv) => ["--set", kv]);
      const child = spawn(process.execPath, [join(import.meta.dir, "..", "cli.ts"), "train", "--out", d, ...sets], { stdio: ["ignore", "pipe", "pipe"] });
      let stderr = "";
      let sent = false;
      child.stderr.on("data", (b: Buffer) => {
        stderr += b.toString();
        if (!sent && /epoch 0:/.test(stderr)) {
          sent = true;
          child.kill("SIGINT");
        }
      });
      const code = await new Promise<number | null>((res) => child.on("exit", (c) => res(c)));
      expect(sent).toBe(true);
      expect(code).toBe(130);
      // the signal lands while sampling (that epoch is dropped) or while updating (that epoch finishes)
      expect(stderr).toMatch(/stopping(: this epoch's sampling is dropped| after this epoch)/);
      expect(stderr).toMatch(/interrupted.*: checkpoint of epoch \d+ saved/);
      const epochs = readFileSync(join(d, "metrics.jsonl"), "utf8").trim().split("\n").length;
      expect(epochs).toBeLessThan(50);
      expect(listCheckpoints(d).map(([e]) => e)).toEqual([epochs - 1]);
      expect(existsSync(join(listCheckpoints(d)[0][1], "pytorch_lora_weights.safetensors"))).toBe(true);
    } finally {
      rmSync(d, { recursive: true, force: true });
    }
  });
});
void Tensor;
