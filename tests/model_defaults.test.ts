// The training defaults that depend on the model: SD-1.5's reward layers where the UNet has them,
// otherwise the documented rule (closest to latent/4 per side, the finer of two equally close); the
// native resolution (UNet sample_size x VAE factor); and their place below a config file and --set.
import { describe, expect, test } from "bun:test";
import { ConfigReader } from "../src/io/config_reader.ts";
import { parseUNetConfig } from "../src/io/diffusers_config.ts";
import type { PipelineConfig } from "../src/io/diffusers.ts";
import { UNet2DConditionModel } from "../src/nn/unet.ts";
import { nativeResolution } from "../src/diffusion/model_folder.ts";
import { defaultRewardLayers } from "../src/rl/model_defaults.ts";
import { loadConfig } from "../src/rl/config.ts";
import { rewardLayers } from "../src/rl/trainer.ts";
import { resolveLayerSpec } from "../src/diffusion/edit.ts";
import { writeFileSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

function unet(json: Record<string, unknown>): UNet2DConditionModel {
  return new UNet2DConditionModel(parseUNetConfig(new ConfigReader("unet/config.json", { in_channels: 8, out_channels: 4, attention_head_dim: 2, cross_attention_dim: 32, norm_num_groups: 8, ...json })));
}

// timbrooks/instruct-pix2pix's UNet blocks (channels shrunk: only the structure matters here)
const SD15_BLOCKS = {
  block_out_channels: [32, 64, 64, 64],
  layers_per_block: 2,
  down_block_types: ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
  up_block_types: ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
  sample_size: 64,
};

const layerList = (u: UNet2DConditionModel, spec: string) => rewardLayers({ unet: u }, { reward: { layers: spec } } as Parameters<typeof rewardLayers>[1]);
const layerBlocks = (u: UNet2DConditionModel, spec: string) => [...new Set(layerList(u, spec).map((l) => l.path.split(".attentions")[0]))];

describe("default reward layers", () => {
  test("SD-1.5's UNet: res:4, i.e. down_blocks.2 and up_blocks.1 (SPEC §5)", () => {
    const u = unet(SD15_BLOCKS);
    expect(defaultRewardLayers(u)).toBe("res:4");
    expect(layerBlocks(u, defaultRewardLayers(u))).toEqual(["down_blocks.2", "up_blocks.1"]);
  });

  test("a UNet without latent/4 maps takes the closest size", () => {
    // two blocks: attn2 in down_blocks.1, the mid block and up_blocks.0, all latent/2
    const small = unet({ block_out_channels: [32, 64], layers_per_block: 1, down_block_types: ["DownBlock2D", "CrossAttnDownBlock2D"], up_block_types: ["CrossAttnUpBlock2D", "UpBlock2D"] });
    expect(defaultRewardLayers(small)).toBe("res:2");
    expect(layerBlocks(small, "res:2")).toEqual(["down_blocks.1", "mid_block", "up_blocks.0"]);
    // five blocks, attn2 only at latent/1 (down 0, up 4) and latent/16 (the mid block): both two powers of two from /4 -> the finer
    const tie = unet({
      block_out_channels: [32, 32, 32, 32, 32],
      layers_per_block: 1,
      down_block_types: ["CrossAttnDownBlock2D", "DownBlock2D", "DownBlock2D", "DownBlock2D", "DownBlock2D"],
      up_block_types: ["UpBlock2D", "UpBlock2D", "UpBlock2D", "UpBlock2D", "CrossAttnUpBlock2D"],
    });
    expect(defaultRewardLayers(tie)).toBe("res:1");
    // four blocks, attn2 at latent/2 and latent/8 (mid): equally close to /4 -> the finer, latent/2
    const tie2 = unet({
      block_out_channels: [32, 32, 32, 32],
      layers_per_block: 1,
      down_block_types: ["DownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D", "DownBlock2D"],
      up_block_types: ["UpBlock2D", "UpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    });
    expect(defaultRewardLayers(tie2)).toBe("res:2");
    // attn2 only in the mid block (latent/8): that one
    const coarse = unet({
      block_out_channels: [32, 32, 32, 32],
      layers_per_block: 1,
      down_block_types: ["DownBlock2D", "DownBlock2D", "DownBlock2D", "DownBlock2D"],
      up_block_types: ["UpBlock2D", "UpBlock2D", "UpBlock2D", "UpBlock2D"],
    });
    expect(defaultRewardLayers(coarse)).toBe("res:8");
  });
});

describe("edit --attention-layers auto", () => {
  test("takes the reward's default layers", () => {
    const tie2 = unet({
      block_out_channels: [32, 32, 32, 32],
      layers_per_block: 1,
      down_block_types: ["DownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D", "DownBlock2D"],
      up_block_types: ["UpBlock2D", "UpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    });
    // latent/2 and latent/8 (mid) are equally close to latent/4: the finer one, not the coarsest
    const models = { unet: tie2 } as unknown as Parameters<typeof resolveLayerSpec>[0];
    expect([...new Set(resolveLayerSpec(models, "auto").map((l) => l.path.split(".attentions")[0]))]).toEqual(["down_blocks.1", "up_blocks.2"]);
    expect(resolveLayerSpec(models, "auto")).toEqual(layerList(tie2, defaultRewardLayers(tie2)));
  });
});

describe("native resolution", () => {
  const pipeline = (sampleSize: number | null, vaeBlocks: number) =>
    ({ unet: { sampleSize }, vae: { blockOutChannels: new Array(vaeBlocks).fill(64) } }) as unknown as PipelineConfig;
  test("UNet sample_size x 2^(VAE blocks - 1)", () => {
    expect(nativeResolution(pipeline(64, 4))).toBe(512); // SD-1.5 / InstructPix2Pix
    expect(nativeResolution(pipeline(32, 2))).toBe(64);
    expect(nativeResolution(pipeline(null, 4))).toBeNull();
  });
});

describe("the model's defaults sit below a config file and --set", () => {
  const model = ["resolution=64", "reward.layers=res:2"];
  test("they replace the schema's defaults", () => {
    const cfg = loadConfig(undefined, [], "--set", model);
    expect([cfg.resolution, cfg.reward.layers]).toEqual([64, "res:2"]);
    expect([loadConfig().resolution, loadConfig().reward.layers]).toEqual([512, "res:4"]);
  });
  test("a file and --set win", () => {
    const dir = mkdtempSync(join(tmpdir(), "rl4pix-model-defaults-"));
    const file = join(dir, "c.json");
    writeFileSync(file, JSON.stringify({ reward: { layers: "mid" } }));
    const cfg = loadConfig(file, ["resolution=128"], "--set", model);
    expect([cfg.resolution, cfg.reward.layers]).toEqual([128, "mid"]);
  });
});
