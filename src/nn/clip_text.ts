// transformers' CLIPTextModel (keys under `text_model.`): token + position embeddings, pre-LN
// transformer layers with a causal mask and quick_gelu (or gelu) MLP, final LayerNorm.
import { Tensor } from "../tensor/tensor.ts";
import * as ops from "../tensor/ops/index.ts";
import { UserError } from "../errors.ts";
import { Module, ModuleList, type Param } from "./module.ts";
import { LayerNorm, Linear } from "./layers.ts";
import type { TextEncoderConfig } from "../io/diffusers_config.ts";

class CLIPAttention extends Module {
  readonly q_proj: Linear;
  readonly k_proj: Linear;
  readonly v_proj: Linear;
  readonly out_proj: Linear;
  constructor(readonly dim: number, readonly heads: number, readonly causal = true) {
    super();
    this.q_proj = this.child("q_proj", new Linear(dim, dim));
    this.k_proj = this.child("k_proj", new Linear(dim, dim));
    this.v_proj = this.child("v_proj", new Linear(dim, dim));
    this.out_proj = this.child("out_proj", new Linear(dim, dim));
  }
  /** x [B, L, D] -> [B, L, D], causal unless built with causal = false (the vision tower). */
  forward(x: Tensor): Tensor {
    const [B, L, D] = x.shape;
    const H = this.heads, d = D / H;
    const split = (t: Tensor) => ops.permute(ops.reshape(t, [B, L, H, d]), [0, 2, 1, 3]); // [B,H,L,d]
    const o = ops.attention(split(this.q_proj.forward(x)), split(this.k_proj.forward(x)), split(this.v_proj.forward(x)), {
      causal: this.causal,
      scale: 1 / Math.sqrt(d),
    }); // [B,H,L,d]
    return this.out_proj.forward(ops.reshape(ops.permute(o, [0, 2, 1, 3]), [B, L, D]));
  }
}

class CLIPMLP extends Module {
  readonly fc1: Linear;
  readonly fc2: Linear;
  constructor(dim: number, inner: number, readonly act: string) {
    super();
    this.fc1 = this.child("fc1", new Linear(dim, inner));
    this.fc2 = this.child("fc2", new Linear(inner, dim));
  }
  forward(x: Tensor): Tensor {
    const h = this.fc1.forward(x);
    return this.fc2.forward(this.act === "quick_gelu" ? ops.quickGelu(h) : ops.gelu(h));
  }
}

/** The config fields an encoder layer uses (CLIPTextConfig and CLIPVisionConfig both have them). */
export type CLIPEncoderLayerConfig = Pick<TextEncoderConfig, "hiddenSize" | "numAttentionHeads" | "intermediateSize" | "hiddenAct" | "layerNormEps">;

export class CLIPEncoderLayer extends Module {
  readonly layer_norm1: LayerNorm;
  readonly self_attn: CLIPAttention;
  readonly layer_norm2: LayerNorm;
  readonly mlp: CLIPMLP;
  constructor(c: CLIPEncoderLayerConfig, causal = true) {
    super();
    this.self_attn = this.child("self_attn", new CLIPAttention(c.hiddenSize, c.numAttentionHeads, causal));
    this.layer_norm1 = this.child("layer_norm1", new LayerNorm(c.hiddenSize, c.layerNormEps));
    this.mlp = this.child("mlp", new CLIPMLP(c.hiddenSize, c.intermediateSize, c.hiddenAct));
    this.layer_norm2 = this.child("layer_norm2", new LayerNorm(c.hiddenSize, c.layerNormEps));
  }
  forward(x: Tensor): Tensor {
    const h = ops.add(x, this.self_attn.forward(this.layer_norm1.forward(x)));
    return ops.add(h, this.mlp.forward(this.layer_norm2.forward(h)));
  }
}

class CLIPEmbeddings extends Module {
  readonly token_embedding: Param;
  readonly position_embedding: Param;
  constructor(c: TextEncoderConfig) {
    super();
    const tok = new (class extends Module {
      readonly weight: Param;
      constructor() {
        super();
        this.weight = this.param("weight", [c.vocabSize, c.hiddenSize], "embedding");
      }
    })();
    const pos = new (class extends Module {
      readonly weight: Param;
      constructor() {
        super();
        this.weight = this.param("weight", [c.maxPositionEmbeddings, c.hiddenSize], "embedding");
      }
    })();
    this.child("token_embedding", tok);
    this.child("position_embedding", pos);
    this.token_embedding = tok.weight;
    this.position_embedding = pos.weight;
  }
}

export class CLIPEncoder extends Module {
  readonly layers: ModuleList<CLIPEncoderLayer>;
  constructor(c: CLIPEncoderLayerConfig & { numHiddenLayers: number }, causal = true) {
    super();
    this.layers = this.child("layers", new ModuleList(Array.from({ length: c.numHiddenLayers }, () => new CLIPEncoderLayer(c, causal))));
  }
}

class CLIPTextTransformer extends Module {
  readonly embeddings: CLIPEmbeddings;
  readonly encoder: CLIPEncoder;
  readonly final_layer_norm: LayerNorm;
  constructor(c: TextEncoderConfig) {
    super();
    this.embeddings = this.child("embeddings", new CLIPEmbeddings(c));
    this.encoder = this.child("encoder", new CLIPEncoder(c));
    this.final_layer_norm = this.child("final_layer_norm", new LayerNorm(c.hiddenSize, c.layerNormEps));
  }
}

export interface CLIPTextOutput {
  lastHiddenState: Tensor;
  /** Embeddings output and each layer's output (pre final LayerNorm), when asked for. */
  hiddenStates?: Tensor[];
}

export class CLIPTextModel extends Module {
  readonly text_model: CLIPTextTransformer;
  /** Checkpoint buffers that are accepted and not used (e.g. `text_model.embeddings.position_ids`). */
  static readonly IGNORED_KEYS = ["text_model.embeddings.position_ids"];
  /**
   * dtype of the activations from the embeddings' sum to the final LayerNorm: "f16" (needs the
   * adapter's shader-f16) stores every intermediate as f16 and computes each op in f32 with one
   * rounding per stored value, as transformers with torch_dtype=float16 (whose f16 tables give f16
   * token and position rows, added with one rounding). The returned states are f32.
   */
  activationDtype: "f32" | "f16" = "f32";

  constructor(readonly config: TextEncoderConfig) {
    super();
    if (!["quick_gelu", "gelu"].includes(config.hiddenAct)) {
      throw new UserError(`text_encoder/config.json: hidden_act '${config.hiddenAct}' is not supported (quick_gelu, gelu)`);
    }
    this.text_model = this.child("text_model", new CLIPTextTransformer(config));
  }

  /** ids [B, L] (L <= max positions) -> last_hidden_state [B, L, D]. */
  forward(ids: Int32Array, batch: number, opts: { hiddenStates?: boolean } = {}): CLIPTextOutput {
    const L = ids.length / batch;
    const tm = this.text_model;
    const idsT = Tensor.from(ids, [batch, L], "i32", "input_ids");
    const f16 = this.activationDtype === "f16";
    const act = (t: Tensor) => (f16 ? ops.cast(t, "f16") : t); // -> the activation dtype
    const f32 = (t: Tensor) => (f16 ? ops.cast(t, "f32") : t); // the activation dtype -> f32
    const tok = ops.embedding(tm.embeddings.token_embedding.t, idsT); // [B, L, D] f32
    const pos = ops.slice(tm.embeddings.position_embedding.t, 0, 0, L); // [L, D]
    let h = ops.add(act(tok), act(pos)); // [B, L, D]
    const states: Tensor[] = [];
    if (opts.hiddenStates) states.push(f32(h));
    for (const layer of tm.encoder.layers.items) {
      h = layer.forward(h);
      if (opts.hiddenStates) states.push(f32(h));
    }
    return { lastHiddenState: f32(tm.final_layer_norm.forward(h)), hiddenStates: opts.hiddenStates ? states : undefined };
  }
}
