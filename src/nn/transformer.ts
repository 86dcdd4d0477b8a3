// diffusers' Transformer2DModel (continuous input) and BasicTransformerBlock with a GEGLU feed-forward.
import type { Tensor } from "../tensor/tensor.ts";
import * as ops from "../tensor/ops/index.ts";
import { Module, ModuleList } from "./module.ts";
import { Conv2d, GroupNorm, LayerNorm, Linear } from "./layers.ts";
import { Attention } from "./attention.ts";

/** `proj` Linear(dim, 2*inner) then h * gelu(gate). */
class GEGLU extends Module {
  readonly proj: Linear;
  constructor(dim: number, inner: number) {
    super();
    this.proj = this.child("proj", new Linear(dim, inner * 2));
  }
  forward(x: Tensor): Tensor {
    return ops.geglu(this.proj.forward(x));
  }
}

/** `net.0` = GEGLU, `net.1` = dropout (no parameters), `net.2` = Linear(inner, dim). */
class FeedForwardNet extends Module {
  readonly geglu: GEGLU;
  readonly out: Linear;
  constructor(dim: number, mult: number) {
    super();
    const inner = dim * mult;
    this.geglu = this.child("0", new GEGLU(dim, inner));
    this.out = this.child("2", new Linear(inner, dim));
  }
}

export class FeedForward extends Module {
  readonly net: FeedForwardNet;
  constructor(dim: number, mult = 4) {
    super();
    this.net = this.child("net", new FeedForwardNet(dim, mult));
  }

  /** The two linears LoRA may adapt, by their names under this module (peft's `ff.net.0.proj`, `ff.net.2`). */
  loraTargets(): [string, Linear][] {
    return [["net.0.proj", this.net.geglu.proj], ["net.2", this.net.out]];
  }
  forward(x: Tensor): Tensor {
    return this.net.out.forward(this.net.geglu.forward(x));
  }
}

export interface TransformerBlockOptions {
  dim: number;
  heads: number;
  dimHead: number;
  crossAttentionDim: number;
  onlyCrossAttention?: boolean;
}

export class BasicTransformerBlock extends Module {
  readonly norm1: LayerNorm;
  readonly attn1: Attention;
  readonly norm2: LayerNorm;
  readonly attn2: Attention;
  readonly norm3: LayerNorm;
  readonly ff: FeedForward;
  readonly onlyCross: boolean;

  constructor(o: TransformerBlockOptions) {
    super();
    this.onlyCross = Boolean(o.onlyCrossAttention);
    this.norm1 = this.child("norm1", new LayerNorm(o.dim, 1e-5));
    this.attn1 = this.child("attn1", new Attention(o.dim, { heads: o.heads, dimHead: o.dimHead, crossAttentionDim: this.onlyCross ? o.crossAttentionDim : undefined }));
    this.norm2 = this.child("norm2", new LayerNorm(o.dim, 1e-5));
    this.attn2 = this.child("attn2", new Attention(o.dim, { heads: o.heads, dimHead: o.dimHead, crossAttentionDim: o.crossAttentionDim }));
    this.norm3 = this.child("norm3", new LayerNorm(o.dim, 1e-5));
    this.ff = this.child("ff", new FeedForward(o.dim));
  }

  /** x [B, L, dim], context [B, 77, crossDim] -> [B, L, dim]. */
  forward(x: Tensor, context: Tensor): Tensor {
    let h = ops.add(this.attn1.forward(this.norm1.forward(x), this.onlyCross ? context : null), x);
    h = ops.add(this.attn2.forward(this.norm2.forward(h), context), h);
    return ops.add(this.ff.forward(this.norm3.forward(h)), h);
  }
}

export interface Transformer2DOptions {
  inChannels: number;
  heads: number;
  dimHead: number;
  numLayers: number;
  crossAttentionDim: number;
  groups: number;
  useLinearProjection: boolean;
  onlyCrossAttention?: boolean;
}

export class Transformer2DModel extends Module {
  readonly norm: GroupNorm;
  readonly proj_in: Conv2d | Linear;
  readonly transformer_blocks: ModuleList<BasicTransformerBlock>;
  readonly proj_out: Conv2d | Linear;
  readonly linear: boolean;

  constructor(o: Transformer2DOptions) {
    super();
    const inner = o.heads * o.dimHead;
    this.linear = o.useLinearProjection;
    this.norm = this.child("norm", new GroupNorm(o.groups, o.inChannels, 1e-6));
    this.proj_in = this.child("proj_in", this.linear ? new Linear(o.inChannels, inner) : new Conv2d(o.inChannels, inner, 1));
    const blocks = Array.from({ length: o.numLayers }, () =>
      new BasicTransformerBlock({ dim: inner, heads: o.heads, dimHead: o.dimHead, crossAttentionDim: o.crossAttentionDim, onlyCrossAttention: o.onlyCrossAttention })
    );
    this.transformer_blocks = this.child("transformer_blocks", new ModuleList(blocks));
    this.proj_out = this.child("proj_out", this.linear ? new Linear(inner, o.inChannels) : new Conv2d(inner, o.inChannels, 1));
  }

  /** x [B, C, H, W], context [B, 77, crossDim] -> [B, C, H, W]. */
  forward(x: Tensor, context: Tensor): Tensor {
    const [B, C, H, W] = x.shape;
    let h = this.norm.forward(x);
    let inner: number;
    if (this.linear) {
      h = ops.reshape(ops.permute(h, [0, 2, 3, 1]), [B, H * W, C]); // [B, HW, C]
      h = (this.proj_in as Linear).forward(h); // [B, HW, inner]
      inner = h.shape[2];
    } else {
      h = (this.proj_in as Conv2d).forward(h); // [B, inner, H, W]
      inner = h.shape[1];
      h = ops.reshape(ops.permute(h, [0, 2, 3, 1]), [B, H * W, inner]); // [B, HW, inner]
    }
    for (const block of this.transformer_blocks.items) h = block.forward(h, context);
    if (this.linear) {
      h = (this.proj_out as Linear).forward(h); // [B, HW, C]
      h = ops.permute(ops.reshape(h, [B, H, W, C]), [0, 3, 1, 2]);
    } else {
      h = ops.permute(ops.reshape(h, [B, H, W, inner]), [0, 3, 1, 2]); // [B, inner, H, W]
      h = (this.proj_out as Conv2d).forward(h);
    }
    return ops.add(h, x);
  }
}
