// diffusers pipeline folders: configs of the tiny golden checkpoint, defaults for absent keys, refusal
// of unsupported options, weight-file resolution, legacy VAE key names and strict key matching.
import { afterAll, describe, expect, test } from "bun:test";
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { UserError } from "../src/errors.ts";
import { ConfigReader } from "../src/io/config_reader.ts";
import { loadPipelineConfig, resolveWeightFiles } from "../src/io/diffusers.ts";
import { parseSchedulerConfig, parseTextEncoderConfig, parseUNetConfig, parseVaeConfig } from "../src/io/diffusers_config.ts";
import { openSafetensors } from "../src/io/safetensors.ts";
import { remapLegacyAttentionKey, remapLegacyAttentionKeys, strictMatch } from "../src/io/state_dict.ts";

const TINY = fileURLToPath(new URL("../../shared/goldens/tiny-ip2p/", import.meta.url));
const tmp = mkdtempSync(join(tmpdir(), "rl4pix-diffusers-"));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

function userError(fn: () => unknown): UserError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(UserError);
    return e as UserError;
  }
  throw new Error("expected a UserError");
}

let copies = 0;
/** A copy of the tiny pipeline's configs (weights and tokenizer files are empty placeholders). */
function configCopy(edit?: (dir: string) => void): string {
  const dir = join(tmp, `copy${copies++}`);
  const files: Record<string, string[]> = {
    "": ["model_index.json"],
    unet: ["config.json"],
    vae: ["config.json"],
    text_encoder: ["config.json"],
    scheduler: ["scheduler_config.json"],
    tokenizer: ["special_tokens_map.json", "tokenizer_config.json"],
  };
  for (const [sub, names] of Object.entries(files)) {
    mkdirSync(join(dir, sub), { recursive: true });
    for (const n of names) copyFileSync(join(TINY, sub, n), join(dir, sub, n));
  }
  writeFileSync(join(dir, "tokenizer", "vocab.json"), "{}");
  writeFileSync(join(dir, "tokenizer", "merges.txt"), "#version: 0.2\n");
  edit?.(dir);
  return dir;
}

function editJson(path: string, change: (j: Record<string, unknown>) => void): void {
  const j = JSON.parse(readFileSync(path, "utf8"));
  change(j);
  writeFileSync(path, JSON.stringify(j));
}

describe("the tiny golden pipeline", () => {
  test("every component config is read with the values saved by diffusers/transformers", () => {
    const c = loadPipelineConfig(TINY);
    expect(c.className).toBe("StableDiffusionInstructPix2PixPipeline");
    expect(c.unet).toMatchObject({
      inChannels: 8,
      outChannels: 4,
      sampleSize: 32,
      blockOutChannels: [32, 64],
      layersPerBlock: [2, 2],
      downBlockTypes: ["DownBlock2D", "CrossAttnDownBlock2D"],
      upBlockTypes: ["CrossAttnUpBlock2D", "UpBlock2D"],
      midBlockType: "UNetMidBlock2DCrossAttn",
      attentionHeads: [8, 8], // attention_head_dim: 8 means 8 heads
      crossAttentionDim: [32, 32],
      transformerLayersPerBlock: [1, 1],
      normNumGroups: 32,
      normEps: 1e-5,
      flipSinToCos: true,
      freqShift: 0,
      actFn: "silu",
      useLinearProjection: false,
      upcastAttention: false,
      centerInputSample: false,
      downsamplePadding: 1,
      midBlockScaleFactor: 1,
      timeEmbeddingDim: 128,
      convInKernel: 3,
      convOutKernel: 3,
    });
    expect(c.vae).toMatchObject({
      inChannels: 3,
      outChannels: 3,
      latentChannels: 4,
      blockOutChannels: [32, 64],
      layersPerBlock: 1,
      normNumGroups: 32,
      scalingFactor: 0.18215,
      shiftFactor: null,
      sampleSize: 32,
    });
    expect(c.textEncoder).toMatchObject({
      vocabSize: 49408,
      hiddenSize: 32,
      intermediateSize: 37,
      numHiddenLayers: 5,
      numAttentionHeads: 4,
      maxPositionEmbeddings: 77,
      hiddenAct: "quick_gelu",
      layerNormEps: 1e-5,
      projectionDim: 32,
      bosTokenId: 0,
      eosTokenId: 2,
      padTokenId: 1,
    });
    expect(c.scheduler).toMatchObject({
      className: "DDIMScheduler",
      numTrainTimesteps: 1000,
      betaStart: 0.00085,
      betaEnd: 0.012,
      betaSchedule: "scaled_linear",
      trainedBetas: null,
      clipSample: false,
      setAlphaToOne: false,
      stepsOffset: 1,
      predictionType: "epsilon",
      timestepSpacing: "leading",
      rescaleBetasZeroSnr: false,
    });
    expect(c.tokenizer.vocab).toBe(join(TINY, "tokenizer", "vocab.json"));
  });

  test("weight files, the fp16 variant, and the header keys they hold", () => {
    expect(resolveWeightFiles(join(TINY, "unet"))).toEqual([join(TINY, "unet", "diffusion_pytorch_model.safetensors")]);
    expect(resolveWeightFiles(join(TINY, "unet"), { variant: "fp16" })).toEqual([
      join(TINY, "unet", "diffusion_pytorch_model.fp16.safetensors"),
    ]);
    expect(resolveWeightFiles(join(TINY, "text_encoder"))).toEqual([join(TINY, "text_encoder", "model.safetensors")]);
    const e = userError(() => resolveWeightFiles(join(TINY, "vae"), { variant: "fp16" }));
    expect(e.message).toContain("no weights for variant \"fp16\"");
    expect(e.message).toContain("diffusion_pytorch_model.safetensors");
    const vae = openSafetensors(resolveWeightFiles(join(TINY, "vae"))[0]);
    expect(vae.tensors.size).toBe(124);
    expect(vae.has("encoder.mid_block.attentions.0.to_q.weight")).toBe(true);
  });
});

describe("defaults for absent keys", () => {
  test("an SD-1.5-style UNet config with few keys gets diffusers' defaults", () => {
    const u = parseUNetConfig(new ConfigReader("unet/config.json", { in_channels: 8, cross_attention_dim: 768 }));
    expect(u.blockOutChannels).toEqual([320, 640, 1280, 1280]);
    expect(u.downBlockTypes).toEqual(["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"]);
    expect(u.upBlockTypes).toEqual(["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]);
    expect(u.attentionHeads).toEqual([8, 8, 8, 8]);
    expect(u.crossAttentionDim).toEqual([768, 768, 768, 768]);
    expect(u.layersPerBlock).toEqual([2, 2, 2, 2]);
    expect(u.timeEmbeddingDim).toBe(1280);
    expect(u.sampleSize).toBeNull();
    expect(u.flipSinToCos).toBe(true);
  });

  test("per-block head counts (SD-2 style) and num_attention_heads", () => {
    const sd2 = parseUNetConfig(new ConfigReader("u.json", { attention_head_dim: [5, 10, 20, 20], use_linear_projection: true }));
    expect(sd2.attentionHeads).toEqual([5, 10, 20, 20]);
    expect(sd2.useLinearProjection).toBe(true);
    const n = parseUNetConfig(new ConfigReader("u.json", { attention_head_dim: 64, num_attention_heads: 4 }));
    expect(n.attentionHeads).toEqual([4, 4, 4, 4]);
  });

  test("a PNDM scheduler config read as DDIM takes DDIM's defaults for the keys it lacks", () => {
    const s = parseSchedulerConfig(new ConfigReader("scheduler/scheduler_config.json", {
      _class_name: "PNDMScheduler", beta_start: 0.00085, beta_end: 0.012, beta_schedule: "scaled_linear",
      num_train_timesteps: 1000, steps_offset: 1, skip_prk_steps: true, set_alpha_to_one: false,
    }));
    expect(s).toMatchObject({ className: "PNDMScheduler", clipSample: true, setAlphaToOne: false, stepsOffset: 1, predictionType: "epsilon", timestepSpacing: "leading" });
    const d = parseSchedulerConfig(new ConfigReader("s.json", {}));
    expect(d).toMatchObject({ betaStart: 0.0001, betaEnd: 0.02, betaSchedule: "linear", setAlphaToOne: true, stepsOffset: 0 });
  });

  test("VAE and CLIP text defaults", () => {
    const v = parseVaeConfig(new ConfigReader("vae/config.json", {}));
    expect(v).toMatchObject({ blockOutChannels: [64], layersPerBlock: 1, latentChannels: 4, scalingFactor: 0.18215, normNumGroups: 32 });
    const t = parseTextEncoderConfig(new ConfigReader("text_encoder/config.json", {}));
    expect(t).toMatchObject({ hiddenSize: 512, numHiddenLayers: 12, numAttentionHeads: 8, maxPositionEmbeddings: 77, hiddenAct: "quick_gelu", bosTokenId: 49406, eosTokenId: 49407 });
  });
});

describe("unsupported or broken configs are UserErrors naming the file and key", () => {
  const cases: [string, (dir: string) => void, string, string][] = [
    ["unknown down block", (d) => editJson(join(d, "unet/config.json"), (j) => { j.down_block_types = ["AttnDownBlock2D", "CrossAttnDownBlock2D"]; }), "unet/config.json", "\"down_block_types\" contains \"AttnDownBlock2D\""],
    ["class embeddings", (d) => editJson(join(d, "unet/config.json"), (j) => { j.class_embed_type = "timestep"; }), "unet/config.json", "\"class_embed_type\""],
    ["mismatched block lists", (d) => editJson(join(d, "unet/config.json"), (j) => { j.block_out_channels = [32, 64, 64]; }), "unet/config.json", "\"block_out_channels\" has 3 entries"],
    ["heads that do not divide the channels", (d) => editJson(join(d, "unet/config.json"), (j) => { j.attention_head_dim = 6; }), "unet/config.json", "\"attention_head_dim\" = 6 does not divide 64"],
    ["wrong type", (d) => editJson(join(d, "unet/config.json"), (j) => { j.in_channels = "eight"; }), "unet/config.json", "\"in_channels\" must be a number"],
    ["v-prediction", (d) => editJson(join(d, "scheduler/scheduler_config.json"), (j) => { j.prediction_type = "v_prediction"; }), "scheduler_config.json", "\"prediction_type\" is \"v_prediction\", which is not supported"],
    ["unknown beta schedule", (d) => editJson(join(d, "scheduler/scheduler_config.json"), (j) => { j.beta_schedule = "sigmoid"; }), "scheduler_config.json", "\"beta_schedule\""],
    ["text activation", (d) => editJson(join(d, "text_encoder/config.json"), (j) => { j.hidden_act = "relu"; }), "text_encoder/config.json", "\"hidden_act\" is \"relu\""],
    ["VAE block", (d) => editJson(join(d, "vae/config.json"), (j) => { j.up_block_types = ["UpDecoderBlock2D", "AttnUpDecoderBlock2D"]; }), "vae/config.json", "\"up_block_types\" contains \"AttnUpDecoderBlock2D\""],
    ["missing component key", (d) => editJson(join(d, "model_index.json"), (j) => { delete j.vae; }), "model_index.json", "\"vae\" is missing"],
    ["wrong component class", (d) => editJson(join(d, "model_index.json"), (j) => { j.unet = ["diffusers", "UNet2DModel"]; }), "model_index.json", "\"unet\" has class \"UNet2DModel\""],
    ["missing component folder", (d) => rmSync(join(d, "text_encoder"), { recursive: true }), "text_encoder", "component folder missing"],
    ["missing config file", (d) => rmSync(join(d, "vae/config.json")), "vae/config.json", "file not found"],
    ["bad JSON", (d) => writeFileSync(join(d, "unet/config.json"), "{\"in_channels\": 8,"), "unet/config.json", "not valid JSON"],
    ["missing tokenizer file", (d) => rmSync(join(d, "tokenizer/merges.txt")), "tokenizer/merges.txt", "file not found"],
  ];
  for (const [what, edit, file, fragment] of cases) {
    test(what, () => {
      const dir = configCopy(edit);
      const e = userError(() => loadPipelineConfig(dir));
      expect(e.message).toContain(file);
      expect(e.message).toContain(fragment);
    });
  }

  test("not a pipeline folder", () => {
    expect(userError(() => loadPipelineConfig(join(tmp, "nowhere"))).message).toContain("folder not found");
    const empty = join(tmp, "empty");
    mkdirSync(empty);
    expect(userError(() => loadPipelineConfig(empty)).message).toContain("no model_index.json");
  });

  test("an unbroken copy loads", () => {
    expect(loadPipelineConfig(configCopy()).unet.inChannels).toBe(8);
  });
});

describe("weight files", () => {
  test("pickle-only, absent, sharded", () => {
    const d = join(tmp, "weights");
    mkdirSync(join(d, "pickle"), { recursive: true });
    writeFileSync(join(d, "pickle", "diffusion_pytorch_model.bin"), "x");
    const e = userError(() => resolveWeightFiles(join(d, "pickle")));
    expect(e.message).toContain("diffusion_pytorch_model.bin: pickle weights are not supported; convert to safetensors");
    mkdirSync(join(d, "none"));
    expect(userError(() => resolveWeightFiles(join(d, "none"))).message).toContain("no weights found");
    mkdirSync(join(d, "sharded"));
    writeFileSync(join(d, "sharded", "model-00001-of-00002.safetensors"), "");
    writeFileSync(join(d, "sharded", "model-00002-of-00002.safetensors"), "");
    writeFileSync(join(d, "sharded", "model.safetensors.index.json"), JSON.stringify({
      metadata: {}, weight_map: { a: "model-00002-of-00002.safetensors", b: "model-00001-of-00002.safetensors", c: "model-00002-of-00002.safetensors" },
    }));
    expect(resolveWeightFiles(join(d, "sharded"))).toEqual([
      join(d, "sharded", "model-00001-of-00002.safetensors"),
      join(d, "sharded", "model-00002-of-00002.safetensors"),
    ]);
  });
});

describe("state-dict keys", () => {
  test("old VAE attention names map to the current ones", () => {
    expect(remapLegacyAttentionKey("encoder.mid_block.attentions.0.query.weight")).toBe("encoder.mid_block.attentions.0.to_q.weight");
    expect(remapLegacyAttentionKey("decoder.mid_block.attentions.0.key.bias")).toBe("decoder.mid_block.attentions.0.to_k.bias");
    expect(remapLegacyAttentionKey("decoder.mid_block.attentions.0.value.weight")).toBe("decoder.mid_block.attentions.0.to_v.weight");
    expect(remapLegacyAttentionKey("decoder.mid_block.attentions.0.proj_attn.weight")).toBe("decoder.mid_block.attentions.0.to_out.0.weight");
    expect(remapLegacyAttentionKey("decoder.mid_block.attentions.0.group_norm.weight")).toBe("decoder.mid_block.attentions.0.group_norm.weight");
    expect(remapLegacyAttentionKey("encoder.conv_in.weight")).toBe("encoder.conv_in.weight");
    const m = remapLegacyAttentionKeys(["a.attentions.0.query.weight", "b.weight"], "vae.safetensors");
    expect([...m]).toEqual([["a.attentions.0.to_q.weight", "a.attentions.0.query.weight"], ["b.weight", "b.weight"]]);
    const e = userError(() => remapLegacyAttentionKeys(["a.attentions.0.query.weight", "a.attentions.0.to_q.weight"], "vae.safetensors"));
    expect(e.message).toContain("vae.safetensors: both 'a.attentions.0.query.weight' and 'a.attentions.0.to_q.weight'");
  });

  test("strictMatch names missing, unexpected and mis-shaped keys with both shapes", () => {
    const expected = new Map<string, number[]>([["w", [4, 3]], ["b", [4]], ["gone", [2]]]);
    strictMatch(expected, new Map(expected), "ok.safetensors"); // identical: no error
    const found = new Map<string, number[]>([["w", [3, 4]], ["b", [4]], ["extra", [7, 1]]]);
    const e = userError(() => strictMatch(expected, found, "model.safetensors"));
    expect(e.message).toContain("model.safetensors:");
    expect(e.message).toContain("1 missing, 1 unexpected, 1 mis-shaped");
    expect(e.message).toContain("'w' has shape [3,4] but the model expects [4,3]");
    expect(e.message).toContain("missing 'gone' (expected shape [2])");
    expect(e.message).toContain("unexpected 'extra' (shape [7,1])");
    expect(e.message).not.toContain("\n");
  });
});
