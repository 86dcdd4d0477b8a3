// Training configuration: defaults vs the paper's Table 4, JSON files (nested and dotted), overrides,
// validation messages, serialisation and the resume check, reward.layers specs.
import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { createHash } from "node:crypto";
import { join } from "node:path";
import { UserError } from "../src/errors.ts";
import {
  applyOverrides,
  checkResumable,
  configFromJSON,
  configGet,
  configHash,
  configKeys,
  configToJSON,
  defaultConfig,
  formatConfig,
  loadConfig,
  loraScale,
  NON_RESUME_KEYS,
  parseLayerSpec,
  resumeDifferences,
  saveConfig,
  selectsLayer,
  suggestKey,
} from "../src/rl/config.ts";

const dir = mkdtempSync(join(tmpdir(), "rl4pix-config-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
let n = 0;
function jsonFile(obj: unknown): string {
  const p = join(dir, `c${n++}.json`);
  writeFileSync(p, typeof obj === "string" ? obj : JSON.stringify(obj));
  return p;
}
const repoFile = (p: string) => new URL(`../${p}`, import.meta.url).pathname;

/** The paper's Table 4 (appendix A.2), transcribed from the paper. */
const TABLE4: Record<string, unknown> = {
  seed: 42,
  logdir: "logs",
  num_epochs: 200,
  save_freq: 50,
  num_checkpoint_limit: 5,
  mixed_precision: "no",
  allow_tf32: true,
  resume_from: "",
  use_lora: true,
  "sample.num_steps": 50,
  "sample.eta": 1.0,
  "sample.guidance_scale": 5.0,
  "sample.batch_size": 1,
  "sample.num_batches_per_epoch": 2,
  "train.batch_size": 1,
  "train.use_8bit_adam": true,
  "train.learning_rate": 2e-4,
  "train.adam_beta1": 0.9,
  "train.adam_beta2": 0.999,
  "train.adam_weight_decay": 1e-4,
  "train.adam_epsilon": 1e-8,
  "train.gradient_accumulation_steps": 1,
  "train.max_grad_norm": 1.0,
  "train.num_inner_epochs": 1,
  "train.cfg": true,
  "train.adv_clip_max": 5,
  "train.clip_range": 1e-4,
  "train.timestep_fraction": 1,
  "per_prompt_stat_tracking.buffer_size": 16,
  "per_prompt_stat_tracking.min_count": 16,
};

/** The keys we add (brief / SPEC §3–5). */
const OURS: Record<string, unknown> = {
  "sample.image_guidance_scale": 1.5,
  "reward.alpha": -1,
  "reward.tau": 0.05,
  "reward.layers": "res:4",
  "lora.rank": 4,
  "lora.alpha": null,
  "lora.target_modules": "to_q,to_k,to_v,to_out.0",
  "lora.init_seed": null,
  resolution: 512,
  model: "",
  data: "",
  "report.num_samples": 4,
  gradient_checkpointing: false,
  "sample.num_image_per_prompt": 1,
  "sample.shared_initial_noise": false,
  "train.skip_final_steps": 0,
};

function expectUserError(fn: () => unknown, ...patterns: RegExp[]): void {
  let err: unknown;
  try {
    fn();
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(UserError);
  const msg = (err as Error).message;
  expect(msg.includes("\n")).toBe(false);
  for (const p of patterns) expect(msg).toMatch(p);
}

describe("defaults", () => {
  test("equal the paper's Table 4 and our additions, and nothing else", () => {
    const cfg = defaultConfig();
    const all = { ...TABLE4, ...OURS };
    for (const [k, v] of Object.entries(all)) expect([k, configGet(cfg, k)] as unknown[]).toEqual([k, v]);
    expect(configKeys().map((k) => k.key).sort()).toEqual(Object.keys(all).sort());
    expect(cfg.sample.guidance_scale).toBe(5);
    expect(loraScale(cfg)).toBe(1);
  });

  test("are fresh objects", () => {
    const a = defaultConfig();
    a.train.batch_size = 7;
    expect(defaultConfig().train.batch_size).toBe(1);
  });

  test("configs/paper.json is exactly the defaults; configs/tiny-cpu-conv.json is the demo's training run", async () => {
    expect(configToJSON(loadConfig(repoFile("configs/paper.json")))).toEqual(configToJSON(defaultConfig()));
    const conv = loadConfig(repoFile("configs/tiny-cpu-conv.json"));
    const { DEMO_SETTINGS } = await import("../src/cli/demo.ts");
    const demo = loadConfig(undefined, DEMO_SETTINGS);
    for (const kv of DEMO_SETTINGS) {
      const key = kv.slice(0, kv.indexOf("="));
      expect([key, configGet(conv, key)]).toEqual([key, configGet(demo, key)]);
    }
    expect(conv.model).toBe("");
  });

  test("configs/tiny-cpu-conv.json is configs/tiny-cpu.json (learning notes E23-E30) with E34's convolution adapters, and its targets exist in the embedded model", async () => {
    const tiny = loadConfig(repoFile("configs/tiny-cpu.json"));
    const conv = loadConfig(repoFile("configs/tiny-cpu-conv.json"));
    const differing = configKeys().map((k) => k.key).filter((k) => JSON.stringify(configGet(conv, k)) !== JSON.stringify(configGet(tiny, k)));
    expect(differing.sort()).toEqual(["logdir", "lora.target_modules", "num_epochs", "sample.shared_initial_noise"]);
    const { loadRunConfig } = await import("../src/cli/run_config.ts");
    const run = await loadRunConfig(repoFile("configs/tiny-cpu-conv.json"), [], "--config"); // throws if a target names no module of the embedded UNet
    expect(run.cfg.lora.target_modules.split(",")).toHaveLength(5);
    expect(run.cfg.lora.target_modules.split(",")).not.toContain("conv_out"); // its adapter repaints the background (learning notes E33-E34)
  });
});

describe("JSON files", () => {
  test("nested, dotted, mixed and config.-prefixed keys give the same config", () => {
    const nested = loadConfig(jsonFile({ sample: { num_steps: 10, batch_size: 4 }, train: { learning_rate: 1e-3 }, resolution: 64 }));
    const dotted = loadConfig(jsonFile({ "sample.num_steps": 10, "sample.batch_size": 4, "train.learning_rate": 1e-3, resolution: 64 }));
    const mixed = loadConfig(jsonFile({ sample: { num_steps: 10 }, "sample.batch_size": 4, "config.train.learning_rate": 1e-3, config: { resolution: 64 } }));
    expect(nested.sample.num_steps).toBe(10);
    expect(nested.sample.batch_size).toBe(4);
    expect(nested.train.learning_rate).toBe(1e-3);
    expect(nested.sample.eta).toBe(1); // untouched keys keep their defaults
    expect(dotted).toEqual(nested);
    expect(mixed).toEqual(nested);
  });

  test("unknown keys name the file and the key, with a suggestion", () => {
    const p = jsonFile({ train: { learning_rte: 1e-3 } });
    expectUserError(() => loadConfig(p), new RegExp(p.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")), /"train\.learning_rte"/, /did you mean "train\.learning_rate"/);
    expectUserError(() => loadConfig(jsonFile({ sampel: { num_steps: 3 } })), /"sampel\.num_steps"/, /did you mean "sample\.num_steps"/);
    expectUserError(() => loadConfig(jsonFile({ "sample.num_eval_samples": 3 })), /did you mean "report\.num_samples"/);
    expectUserError(() => loadConfig(jsonFile({ completely_unrelated_thing: 1 })), /unknown config key "completely_unrelated_thing"$/);
    expect(suggestKey("learning_rate")).toBe("train.learning_rate");
  });

  test("wrong types and bad ranges", () => {
    expectUserError(() => loadConfig(jsonFile({ sample: { num_steps: "50" } })), /"sample\.num_steps" must be an integer/, /got "50"/);
    // names are checked against the model where it is loaded (checkLoraTargets); here only their form
    expectUserError(() => loadConfig(undefined, ["lora.target_modules=to_q,attn3..to_k"]), /"lora\.target_modules": 'attn3\.\.to_k' is not a module name or dotted module path/);
    expectUserError(() => loadConfig(undefined, ["lora.target_modules=to_q,,to_k"]), /"lora\.target_modules": '' is not a module name/);
    expect(loadConfig(undefined, ["lora.target_modules=attn2.to_q,attn2.to_k"]).lora.target_modules).toBe("attn2.to_q,attn2.to_k");
    const path = "up_blocks.0.attentions.1.transformer_blocks.0.attn2.to_v,up_blocks.0.attentions.1.transformer_blocks.0.attn2.to_out.0";
    expect(loadConfig(undefined, [`lora.target_modules=${path}`]).lora.target_modules).toBe(path);
    expectUserError(() => loadConfig(undefined, ["lora.target_modules=up_blocks.0 conv"]), /'up_blocks\.0 conv' is not a module name/);
    const ff = "ff.net.0.proj,up_blocks.0.attentions.1.transformer_blocks.0.ff.net.2";
    expect(loadConfig(undefined, [`lora.target_modules=${ff}`]).lora.target_modules).toBe(ff);
    expect(loadConfig(undefined, ["lora.target_modules=conv1,up_blocks.1.resnets.0.conv2"]).lora.target_modules).toBe("conv1,up_blocks.1.resnets.0.conv2");
    expectUserError(() => loadConfig(jsonFile({ train: { cfg: 1 } })), /"train\.cfg" must be true or false/);
    expectUserError(() => loadConfig(jsonFile({ seed: 1.5 })), /"seed"/);
    expectUserError(() => loadConfig(jsonFile({ train: { batch_size: 0 } })), /"train\.batch_size" must be an integer >= 1/);
    expectUserError(() => loadConfig(jsonFile({ train: { timestep_fraction: 0 } })), /"train\.timestep_fraction" must be a number > 0 and <= 1/);
    expectUserError(() => loadConfig(jsonFile({ train: { timestep_fraction: 1.01 } })), /timestep_fraction/);
    expect(loadConfig(jsonFile({ train: { timestep_fraction: 0.5 } })).train.timestep_fraction).toBe(0.5);
    expectUserError(() => loadConfig(jsonFile({ sample: { eta: -0.1 } })), /"sample\.eta" must be a number >= 0/);
    expect(loadConfig(jsonFile({ sample: { eta: 0 } })).sample.eta).toBe(0);
    expectUserError(() => loadConfig(jsonFile({ train: { adam_beta2: 1 } })), /adam_beta2/);
    expectUserError(() => loadConfig(jsonFile({ mixed_precision: "fp8" })), /"mixed_precision" must be one of "no", "fp16", "bf16"/);
    expectUserError(() => loadConfig(jsonFile({ lora: { alpha: 0 } })), /"lora\.alpha"/);
    expectUserError(() => loadConfig(jsonFile({ resolution: 100 })), /multiple of 8/);
    expectUserError(() => loadConfig(jsonFile({ sample: 3 })), /"sample" must be an object/);
    expectUserError(() => loadConfig(jsonFile({ sample: { num_steps: 3 }, "sample.num_steps": 4 })), /given twice/);
    expectUserError(() => loadConfig(jsonFile("[1, 2]")), /expected a JSON object/);
    expectUserError(() => loadConfig(jsonFile("{ not json")), /not valid JSON/);
    expectUserError(() => loadConfig(join(dir, "missing.json")), /missing\.json: file not found/);
  });

  test("ddpo-pytorch's batch-size rules", () => {
    expectUserError(() => loadConfig(jsonFile({ sample: { batch_size: 2 }, train: { batch_size: 3 } })), /"sample\.batch_size" \(2\) must be a multiple of "train\.batch_size" \(3\)/);
    expectUserError(
      () => loadConfig(jsonFile({ sample: { batch_size: 2, num_batches_per_epoch: 3 }, train: { batch_size: 2, gradient_accumulation_steps: 2 } })),
      /samples per epoch .* 6\) must be a multiple of .*\(4\)/,
    );
    expectUserError(() => loadConfig(jsonFile({ per_prompt_stat_tracking: { buffer_size: 4, min_count: 8 } })), /min_count" \(8\) exceeds/);
    // an override may repair the file's conflict: checked once at the end
    const p = jsonFile({ sample: { batch_size: 3 }, train: { batch_size: 2 } });
    expect(loadConfig(p, ["train.batch_size=3"]).train.batch_size).toBe(3);
  });
});

describe("overrides", () => {
  test("type-directed parsing", () => {
    const base = defaultConfig();
    const cfg = applyOverrides(base, [
      "train.learning_rate=3e-4",
      "sample.num_steps=20",
      "train.cfg=false",
      "use_lora=yes",
      "logdir=runs/a b",
      "resume_from=",
      "mixed_precision=fp16",
      "lora.alpha=8",
      "config.seed=7",
      "reward.layers=down:res:4, up_blocks.1.attentions.0.transformer_blocks.0.attn2",
      "model=/m=weird",
    ]);
    expect(cfg.train.learning_rate).toBe(3e-4);
    expect(cfg.sample.num_steps).toBe(20);
    expect(cfg.train.cfg).toBe(false);
    expect(cfg.use_lora).toBe(true);
    expect(cfg.logdir).toBe("runs/a b");
    expect(cfg.resume_from).toBe("");
    expect(cfg.mixed_precision).toBe("fp16");
    expect(cfg.lora.alpha).toBe(8);
    expect(loraScale(cfg)).toBe(2);
    expect(cfg.seed).toBe(7);
    expect(cfg.model).toBe("/m=weird");
    expect(applyOverrides(cfg, ["lora.alpha=null"]).lora.alpha).toBeNull();
    expect(applyOverrides(cfg, ["lora.init_seed=5"]).lora.init_seed).toBe(5);
    expect(applyOverrides(cfg, ["lora.init_seed=null"]).lora.init_seed).toBeNull();
    // the input is not modified
    expect(base).toEqual(defaultConfig());
  });

  test("errors name the flag and the key", () => {
    const cfg = defaultConfig();
    expectUserError(() => applyOverrides(cfg, ["train.lr=1e-3"]), /command line override "train\.lr=1e-3"/, /unknown config key "train\.lr"/, /did you mean "train\.learning_rate"/);
    expectUserError(() => applyOverrides(cfg, ["sample.num_step=3"], "--set"), /^--set override/, /did you mean "sample\.num_steps"/);
    expectUserError(() => applyOverrides(cfg, ["train.cfg=maybe"]), /"train\.cfg" must be true or false, got "maybe"/);
    expectUserError(() => applyOverrides(cfg, ["sample.num_steps=ten"]), /"sample\.num_steps" must be an integer/);
    expectUserError(() => applyOverrides(cfg, ["sample.num_steps=2.5"]), /"sample\.num_steps"/);
    expectUserError(() => applyOverrides(cfg, ["sample.num_steps=0x10"]), /"sample\.num_steps"/);
    expectUserError(() => applyOverrides(cfg, ["train.clip_range=-1"]), /"train\.clip_range" must be a number > 0/);
    expectUserError(() => applyOverrides(cfg, ["seed"]), /not of the form key=value/);
    expectUserError(() => applyOverrides(cfg, ["reward.layers=sideways"]), /"reward\.layers".*unknown item "sideways"/);
    expectUserError(() => applyOverrides(cfg, ["train.batch_size=2"]), /must be a multiple of "train\.batch_size"/);
    expectUserError(() => applyOverrides(cfg, ["lora.init_seed=1.5"]), /"lora\.init_seed" must be null or an integer >= 0, got 1\.5/);
    expectUserError(() => applyOverrides(cfg, ["lora.init_seed=-1"]), /"lora\.init_seed" must be null or an integer >= 0/);
  });
});

describe("serialisation and resume", () => {
  test("round trip through nested JSON with a stable key order", () => {
    const cfg = applyOverrides(defaultConfig(), ["train.learning_rate=1e-3", "reward.layers=mid", "lora.alpha=2", "data=x.jsonl"]);
    const json = configToJSON(cfg);
    expect(Object.keys(json).slice(0, 3)).toEqual(["seed", "logdir", "num_epochs"]);
    expect(Object.keys(json.train as object)[0]).toBe("batch_size");
    expect((json.train as Record<string, unknown>).learning_rate).toBe(1e-3);
    expect(configFromJSON(JSON.parse(JSON.stringify(json)))).toEqual(cfg);
    // the text is independent of the order in which keys were set
    const other = loadConfig(jsonFile({ data: "x.jsonl", lora: { alpha: 2 }, "reward.layers": "mid", train: { learning_rate: 1e-3 } }));
    expect(formatConfig(other)).toBe(formatConfig(cfg));
    const p = join(dir, "saved.json");
    saveConfig(p, cfg);
    expect(readFileSync(p, "utf8")).toBe(formatConfig(cfg));
    expect(loadConfig(p)).toEqual(cfg);
  });

  test("a key added later (sample.num_image_per_prompt) leaves the hash of older checkpoints alone while at its default", () => {
    const legacy = (cfg: ReturnType<typeof defaultConfig>) =>
      createHash("sha256")
        .update(JSON.stringify(configKeys().map((k) => k.key).filter((k) => !NON_RESUME_KEYS.includes(k) && !["sample.num_image_per_prompt", "train.skip_final_steps", "lora.target_modules", "lora.init_seed", "sample.shared_initial_noise"].includes(k)).map((k) => [k, configGet(cfg, k)])))
        .digest("hex");
    const a = applyOverrides(defaultConfig(), ["seed=3", "train.learning_rate=1e-3"]);
    expect(configHash(a)).toBe(legacy(a));
    const b = applyOverrides(a, ["sample.num_image_per_prompt=1", "train.skip_final_steps=0", "lora.target_modules=to_q,to_k,to_v,to_out.0", "lora.init_seed=null", "sample.shared_initial_noise=false"]);
    expect(configHash(b)).toBe(legacy(a));
    expect(configHash(applyOverrides(a, ["lora.target_modules=attn2.to_q"]))).not.toBe(configHash(a));
    expect(configHash(applyOverrides(a, ["lora.init_seed=3"]))).not.toBe(configHash(a));
    expect(configHash(applyOverrides(a, ["sample.shared_initial_noise=true"]))).not.toBe(configHash(a));
    const c = applyOverrides(a, ["sample.num_image_per_prompt=2", "sample.batch_size=2"]);
    expect(configHash(c)).not.toBe(configHash(applyOverrides(a, ["sample.batch_size=2"])));
    expect(resumeDifferences(applyOverrides(a, ["sample.batch_size=2"]), c)).toEqual([{ key: "sample.num_image_per_prompt", saved: 1, current: 2 }]);
  });

  test("the hash ignores only epochs, save frequency, checkpoint limit, logdir and resume_from", () => {
    const a = defaultConfig();
    const same = applyOverrides(a, ["num_epochs=3", "save_freq=1", "num_checkpoint_limit=9", "logdir=elsewhere", "resume_from=logs/x"]);
    expect(configHash(same)).toBe(configHash(a));
    expect(configHash(a)).toMatch(/^[0-9a-f]{64}$/);
    for (const o of ["train.learning_rate=3e-4", "seed=1", "reward.tau=0.1", "model=m", "gradient_checkpointing=true"]) {
      expect([o, configHash(applyOverrides(a, [o]))]).not.toEqual([o, configHash(a)]);
    }
    const b = applyOverrides(a, ["train.learning_rate=3e-4", "sample.eta=0.5", "num_epochs=3"]);
    expect(resumeDifferences(a, b)).toEqual([
      { key: "sample.eta", saved: 1, current: 0.5 },
      { key: "train.learning_rate", saved: 2e-4, current: 3e-4 },
    ]);
    expect(() => checkResumable(a, same, "logs/run1")).not.toThrow();
    expectUserError(() => checkResumable(a, b, "logs/run1"), /^logs\/run1: .*sample\.eta 1 there, 0\.5 now; train\.learning_rate 0\.0002 there, 0\.0003 now/);
  });
});

describe("reward.layers", () => {
  test("parses every form", () => {
    expect(parseLayerSpec("res:4").selectors).toEqual([{ kind: "filter", place: null, divisor: 4 }]);
    expect(parseLayerSpec("down").selectors).toEqual([{ kind: "filter", place: "down", divisor: null }]);
    expect(parseLayerSpec(" mid , up:res:2 ").selectors).toEqual([
      { kind: "filter", place: "mid", divisor: null },
      { kind: "filter", place: "up", divisor: 2 },
    ]);
    expect(parseLayerSpec("unet.down_blocks.2.attentions.1.transformer_blocks.0.attn2,mid_block.attentions.0.transformer_blocks.0.attn2").selectors).toEqual([
      { kind: "module", path: "down_blocks.2.attentions.1.transformer_blocks.0.attn2" },
      { kind: "module", path: "mid_block.attentions.0.transformer_blocks.0.attn2" },
    ]);
  });

  test("rejects malformed specs", () => {
    for (const bad of ["", "res:3", "res:", "res:0", "down:", "left", "down,,up", "down_blocks.2.attentions.0.transformer_blocks.0.attn1", "res4"]) {
      expect([bad, (() => { try { parseLayerSpec(bad, "f.json: reward.layers"); return "ok"; } catch (e) { return e instanceof UserError ? "user" : "other"; } })()]).toEqual([bad, "user"]);
    }
    expectUserError(() => parseLayerSpec("res:3", "f.json"), /^f\.json: bad layer spec "res:3": .*power of two/);
  });

  test("selects layers: the default picks down_blocks.2 and up_blocks.1 at 512 px", () => {
    // SD 1.x UNet at 512 px: latent 64; attn2 maps 64 (down 0, up 3), 32 (down 1, up 2), 16 (down 2, up 1), 8 (mid)
    const layers: [string, number][] = [
      ["down_blocks.0.attentions.0.transformer_blocks.0.attn2", 1],
      ["down_blocks.1.attentions.1.transformer_blocks.0.attn2", 2],
      ["down_blocks.2.attentions.0.transformer_blocks.0.attn2", 4],
      ["down_blocks.2.attentions.1.transformer_blocks.0.attn2", 4],
      ["mid_block.attentions.0.transformer_blocks.0.attn2", 8],
      ["up_blocks.1.attentions.2.transformer_blocks.0.attn2", 4],
      ["up_blocks.2.attentions.0.transformer_blocks.0.attn2", 2],
      ["up_blocks.3.attentions.0.transformer_blocks.0.attn2", 1],
    ];
    const pick = (spec: string) => layers.filter(([p, d]) => selectsLayer(parseLayerSpec(spec), p, d)).map(([p]) => p.split(".attentions")[0]);
    expect(pick(defaultConfig().reward.layers)).toEqual(["down_blocks.2", "down_blocks.2", "up_blocks.1"]);
    expect(pick("mid")).toEqual(["mid_block"]);
    expect(pick("up:res:2")).toEqual(["up_blocks.2"]);
    expect(pick("down,res:8")).toEqual(["down_blocks.0", "down_blocks.1", "down_blocks.2", "down_blocks.2", "mid_block"]);
    expect(pick("up_blocks.3.attentions.0.transformer_blocks.0.attn2")).toEqual(["up_blocks.3"]);
  });
});
