// transformers' CLIPVisionModel (keys under `vision_model.`): a ViT. The image is cut into
// patch x patch squares by a strided convolution without bias (`embeddings.patch_embedding`), a
// learned class token (`embeddings.class_embedding`) is put in front, learned position embeddings
// (`embeddings.position_embedding.weight`, one row per token) are added, then `pre_layrnorm` (sic,
// transformers' spelling), the encoder layers of the text tower without the causal mask, and
// `post_layernorm` applied to the class token only: that is the pooled output. CLIPModel projects it
// with `visual_projection` (see clip_model.ts).
import type { Tensor } from "../tensor/tensor.ts";
import * as ops from "../tensor/ops/index.ts";
import { UserError } from "../errors.ts";
import type { ConfigReader } from "../io/config_reader.ts";
import { SUPPORTED } from "../io/diffusers_config.ts";
import { Module, type Param } from "./module.ts";
import { Conv2d, LayerNorm } from "./layers.ts";
import { CLIPEncoder } from "./clip_text.ts";

export interface CLIPVisionConfig {
  file: string;
  hiddenSize: number;
  intermediateSize: number;
  numHiddenLayers: number;
  numAttentionHeads: number;
  numChannels: number;
  /** The (square) input size the position embeddings are made for. */
  imageSize: number;
  patchSize: number;
  hiddenAct: "quick_gelu" | "gelu";
  layerNormEps: number;
  projectionDim: number;
}

/** Read a CLIPVisionConfig (transformers' defaults for absent keys: ViT-B/32 at 224 px). */
export function parseVisionConfig(r: ConfigReader): CLIPVisionConfig {
  const modelType = r.str("model_type", "clip_vision_model");
  if (modelType !== "clip_vision_model") r.fail("model_type", `is ${JSON.stringify(modelType)}; expected "clip_vision_model"`);
  const hiddenSize = r.int("hidden_size", 768);
  const numAttentionHeads = r.int("num_attention_heads", 12);
  if (hiddenSize % numAttentionHeads !== 0) r.fail("num_attention_heads", `= ${numAttentionHeads} does not divide hidden_size ${hiddenSize}`);
  const imageSize = r.int("image_size", 224);
  const patchSize = r.int("patch_size", 32);
  if (patchSize > imageSize) r.fail("patch_size", `= ${patchSize} is larger than image_size ${imageSize}`);
  return {
    file: r.file,
    hiddenSize,
    intermediateSize: r.int("intermediate_size", 3072),
    numHiddenLayers: r.int("num_hidden_layers", 12),
    numAttentionHeads,
    numChannels: r.int("num_channels", 3),
    imageSize,
    patchSize,
    hiddenAct: r.oneOf("hidden_act", SUPPORTED.textActivations, "quick_gelu"),
    layerNormEps: r.num("layer_norm_eps", 1e-5),
    projectionDim: r.int("projection_dim", 512),
  };
}

/** Patches per side: the conv's output size, floor(image / patch), as transformers computes it. */
export function patchGrid(c: CLIPVisionConfig): number {
  return Math.floor(c.imageSize / c.patchSize);
}

class WeightOnly extends Module {
  readonly weight: Param;
  constructor(shape: number[]) {
    super();
    this.weight = this.param("weight", shape, "embedding");
  }
}

class CLIPVisionEmbeddings extends Module {
  readonly class_embedding: Param;
  readonly patch_embedding: Conv2d;
  readonly position_embedding: Param;
  constructor(readonly c: CLIPVisionConfig) {
    super();
    const g = patchGrid(c);
    this.class_embedding = this.param("class_embedding", [c.hiddenSize]);
    this.patch_embedding = this.child("patch_embedding", new Conv2d(c.numChannels, c.hiddenSize, c.patchSize, { stride: c.patchSize, bias: false }));
    this.position_embedding = this.child("position_embedding", new WeightOnly([g * g + 1, c.hiddenSize])).weight;
  }

  /** pixels [B, C, S, S] -> tokens [B, 1 + g*g, D] (class token first, positions added). */
  forward(pixels: Tensor): Tensor {
    const B = pixels.shape[0];
    const D = this.c.hiddenSize;
    const patches = this.patch_embedding.forward(pixels); // [B, D, g, g]
    const L = patches.shape[2] * patches.shape[3];
    const tokens = ops.permute(ops.reshape(patches, [B, D, L]), [0, 2, 1]); // [B, g*g, D]
    const cls = ops.expand(ops.reshape(this.class_embedding.t, [1, 1, D]), [B, 1, D]); // [B, 1, D]
    return ops.add(ops.concat([cls, tokens], 1), this.position_embedding.t); // [B, 1+g*g, D]
  }
}

class CLIPVisionTransformer extends Module {
  readonly embeddings: CLIPVisionEmbeddings;
  readonly pre_layrnorm: LayerNorm;
  readonly encoder: CLIPEncoder;
  readonly post_layernorm: LayerNorm;
  constructor(c: CLIPVisionConfig) {
    super();
    this.embeddings = this.child("embeddings", new CLIPVisionEmbeddings(c));
    this.pre_layrnorm = this.child("pre_layrnorm", new LayerNorm(c.hiddenSize, c.layerNormEps));
    this.encoder = this.child("encoder", new CLIPEncoder(c, false));
    this.post_layernorm = this.child("post_layernorm", new LayerNorm(c.hiddenSize, c.layerNormEps));
  }
}

export interface CLIPVisionOutput {
  /** Encoder output [B, 1 + g*g, D] (no final norm, as transformers' last_hidden_state). */
  lastHiddenState: Tensor;
  /** post_layernorm(class token) [B, D]. */
  pooled: Tensor;
}

export class CLIPVisionModel extends Module {
  readonly vision_model: CLIPVisionTransformer;
  /** Checkpoint buffers that are accepted and not used. */
  static readonly IGNORED_KEYS = ["vision_model.embeddings.position_ids"];

  constructor(readonly config: CLIPVisionConfig) {
    super();
    if (!(SUPPORTED.textActivations as readonly string[]).includes(config.hiddenAct)) {
      throw new UserError(`${config.file}: hidden_act '${config.hiddenAct}' is not supported (quick_gelu, gelu)`);
    }
    this.vision_model = this.child("vision_model", new CLIPVisionTransformer(config));
  }

  /** pixels [B, C, imageSize, imageSize] (normalised as the image processor does). */
  forward(pixels: Tensor): CLIPVisionOutput {
    const c = this.config;
    const [B, C, H, W] = pixels.shape;
    if (pixels.rank !== 4 || C !== c.numChannels || H !== c.imageSize || W !== c.imageSize) {
      throw new Error(`CLIPVisionModel: expects pixels [B, ${c.numChannels}, ${c.imageSize}, ${c.imageSize}], got [${pixels.shape.join(", ")}]`);
    }
    const vm = this.vision_model;
    let h = vm.pre_layrnorm.forward(vm.embeddings.forward(pixels)); // [B, L, D]
    for (const layer of vm.encoder.layers.items) h = layer.forward(h);
    const cls = ops.reshape(ops.slice(h, 1, 0, 1), [B, c.hiddenSize]); // [B, D]
    return { lastHiddenState: h, pooled: vm.post_layernorm.forward(cls) };
  }
}
