// diffusers' UNet2DConditionModel (the SD-1.x / InstructPix2Pix family), config-driven.
import type { Tensor } from "../tensor/tensor.ts";
import * as ops from "../tensor/ops/index.ts";
import { checkpoint, isGradEnabled } from "../tensor/autograd.ts";
import { scope } from "../tensor/scope.ts";
import { Module, ModuleList } from "./module.ts";
import { Conv2d, GroupNorm, Linear } from "./layers.ts";
import { Downsample2D, ResnetBlock2D, Upsample2D } from "./resnet.ts";
import { Transformer2DModel } from "./transformer.ts";
import { Attention } from "./attention.ts";
import type { UNetConfig } from "../io/diffusers_config.ts";

export type { UNetConfig };

class TimestepEmbedding extends Module {
  readonly linear_1: Linear;
  readonly linear_2: Linear;
  constructor(inDim: number, dim: number) {
    super();
    this.linear_1 = this.child("linear_1", new Linear(inDim, dim));
    this.linear_2 = this.child("linear_2", new Linear(dim, dim));
  }
  forward(x: Tensor): Tensor {
    return this.linear_2.forward(this.linear_1.forward(x, "silu"));
  }
}

interface BlockContext {
  tembSilu: Tensor;
  context: Tensor;
  /** Recompute each resnet / transformer during backward instead of keeping its activations. */
  checkpointing: boolean;
}

// Each block runs in its own scope so that its intermediates are freed as soon as it returns (what
// autograd needs stays alive through the tape's own handles); otherwise a no-grad forward would hold
// every activation of the whole UNet until the caller's scope closes.
function runResnet(r: ResnetBlock2D, h: Tensor, c: BlockContext, skip?: Tensor): Tensor {
  if (c.checkpointing) {
    if (!skip) return checkpoint((x) => r.forward(x, c.tembSilu), [h], "resnet");
    return checkpoint((x, s) => r.forward(ops.concat([x, s], 1), c.tembSilu), [h, skip], "resnet");
  }
  return scope(() => r.forward(skip ? ops.concat([h, skip], 1) : h, c.tembSilu));
}

function runTransformer(t: Transformer2DModel, h: Tensor, c: BlockContext): Tensor {
  return c.checkpointing ? checkpoint((x) => t.forward(x, c.context), [h], "transformer") : scope(() => t.forward(h, c.context));
}

/** DownBlock2D / CrossAttnDownBlock2D. */
class DownBlock extends Module {
  readonly resnets: ModuleList<ResnetBlock2D>;
  readonly attentions: ModuleList<Transformer2DModel> | null;
  readonly downsamplers: ModuleList<Downsample2D> | null;

  constructor(resnets: ResnetBlock2D[], attentions: Transformer2DModel[] | null, downsample: Downsample2D | null) {
    super();
    this.resnets = this.child("resnets", new ModuleList(resnets));
    this.attentions = attentions ? this.child("attentions", new ModuleList(attentions)) : null;
    this.downsamplers = downsample ? this.child("downsamplers", new ModuleList([downsample])) : null;
  }

  /** Returns the output and the states kept for the skip connections. */
  forward(x: Tensor, c: BlockContext): [Tensor, Tensor[]] {
    const states: Tensor[] = [];
    let h = x;
    this.resnets.items.forEach((r, i) => {
      h = runResnet(r, h, c);
      if (this.attentions) h = runTransformer(this.attentions.items[i], h, c);
      states.push(h);
    });
    if (this.downsamplers) {
      h = this.downsamplers.items[0].forward(h);
      states.push(h);
    }
    return [h, states];
  }
}

/** UpBlock2D / CrossAttnUpBlock2D. */
class UpBlock extends Module {
  readonly resnets: ModuleList<ResnetBlock2D>;
  readonly attentions: ModuleList<Transformer2DModel> | null;
  readonly upsamplers: ModuleList<Upsample2D> | null;

  constructor(resnets: ResnetBlock2D[], attentions: Transformer2DModel[] | null, upsample: Upsample2D | null) {
    super();
    this.resnets = this.child("resnets", new ModuleList(resnets));
    this.attentions = attentions ? this.child("attentions", new ModuleList(attentions)) : null;
    this.upsamplers = upsample ? this.child("upsamplers", new ModuleList([upsample])) : null;
  }

  /** `skips` are consumed from the end; `upSize` is the spatial size the upsampler must reach. */
  forward(x: Tensor, skips: Tensor[], c: BlockContext, upSize?: [number, number]): Tensor {
    let h = x;
    this.resnets.items.forEach((r, i) => {
      const skip = skips.pop()!;
      h = runResnet(r, h, c, skip);
      if (this.attentions) h = runTransformer(this.attentions.items[i], h, c);
    });
    if (this.upsamplers) {
      const up = this.upsamplers.items[0];
      const x = h;
      h = scope(() => up.forward(x, upSize));
    }
    return h;
  }
}

/** UNetMidBlock2DCrossAttn: resnet, (attention, resnet) x layers. */
class MidBlockCrossAttn extends Module {
  readonly resnets: ModuleList<ResnetBlock2D>;
  readonly attentions: ModuleList<Transformer2DModel>;
  constructor(resnets: ResnetBlock2D[], attentions: Transformer2DModel[]) {
    super();
    this.attentions = this.child("attentions", new ModuleList(attentions));
    this.resnets = this.child("resnets", new ModuleList(resnets));
  }
  forward(x: Tensor, c: BlockContext): Tensor {
    let h = runResnet(this.resnets.items[0], x, c);
    this.attentions.items.forEach((a, i) => {
      h = runTransformer(a, h, c);
      h = runResnet(this.resnets.items[i + 1], h, c);
    });
    return h;
  }
}

export class UNet2DConditionModel extends Module {
  readonly conv_in: Conv2d;
  readonly time_embedding: TimestepEmbedding;
  readonly down_blocks: ModuleList<DownBlock>;
  readonly mid_block: MidBlockCrossAttn;
  readonly up_blocks: ModuleList<UpBlock>;
  readonly conv_norm_out: GroupNorm;
  readonly conv_out: Conv2d;
  readonly timeProjDim: number;
  /** Gradient checkpointing of every resnet and transformer block while training. */
  gradientCheckpointing = false;
  /**
   * dtype of the activations between conv_in and conv_out: "f16" (needs the adapter's shader-f16)
   * stores them as f16 and computes every op in f32 with one rounding per stored value, as diffusers
   * with torch_dtype=float16. The time embedding is computed in f32 and then cast; the input and the
   * returned noise prediction stay f32.
   */
  activationDtype: "f32" | "f16" = "f32";
  /** Called with (module path, output) after each top-level block (tests compare intermediates). */
  onIntermediate: ((path: string, t: Tensor) => void) | null = null;

  constructor(readonly config: UNetConfig) {
    super();
    const c = config;
    const boc = c.blockOutChannels;
    const nBlocks = boc.length;
    const heads = c.attentionHeads;
    const tembDim = c.timeEmbeddingDim;
    const groups = c.normNumGroups;
    const eps = c.normEps;
    this.timeProjDim = boc[0];
    const transformer = (ch: number, i: number) =>
      new Transformer2DModel({
        inChannels: ch,
        heads: heads[i],
        dimHead: ch / heads[i],
        numLayers: c.transformerLayersPerBlock[i],
        crossAttentionDim: c.crossAttentionDim[i],
        groups,
        useLinearProjection: c.useLinearProjection,
        onlyCrossAttention: c.onlyCrossAttention[i],
      });
    const resnet = (inC: number, outC: number, scale = 1) =>
      new ResnetBlock2D({ inChannels: inC, outChannels: outC, tembChannels: tembDim, groups, eps, outputScaleFactor: scale });

    this.conv_in = this.child("conv_in", new Conv2d(c.inChannels, boc[0], c.convInKernel, { padding: (c.convInKernel - 1) / 2 }));
    this.time_embedding = this.child("time_embedding", new TimestepEmbedding(boc[0], tembDim));

    const downs: DownBlock[] = [];
    let outC = boc[0];
    c.downBlockTypes.forEach((type, i) => {
      const inC = outC;
      outC = boc[i];
      const final = i === nBlocks - 1;
      const cross = type === "CrossAttnDownBlock2D";
      const rs = Array.from({ length: c.layersPerBlock[i] }, (_, j) => resnet(j === 0 ? inC : outC, outC));
      const ats = cross ? Array.from({ length: c.layersPerBlock[i] }, () => transformer(outC, i)) : null;
      downs.push(new DownBlock(rs, ats, final ? null : new Downsample2D(outC, c.downsamplePadding)));
    });
    this.down_blocks = this.child("down_blocks", new ModuleList(downs));

    const top = boc[nBlocks - 1];
    this.mid_block = this.child("mid_block", new MidBlockCrossAttn(
      [resnet(top, top, c.midBlockScaleFactor), resnet(top, top, c.midBlockScaleFactor)],
      [transformer(top, nBlocks - 1)],
    ));

    const rev = [...boc].reverse();
    const revHeadsIndex = (i: number) => nBlocks - 1 - i;
    const ups: UpBlock[] = [];
    let prevOut = rev[0];
    c.upBlockTypes.forEach((type, i) => {
      const out = rev[i];
      const inC = rev[Math.min(i + 1, nBlocks - 1)];
      const final = i === nBlocks - 1;
      const cross = type === "CrossAttnUpBlock2D";
      const n = c.layersPerBlock[revHeadsIndex(i)] + 1;
      const rs = Array.from({ length: n }, (_, j) => {
        const skipC = j === n - 1 ? inC : out;
        const resIn = j === 0 ? prevOut : out;
        return resnet(resIn + skipC, out);
      });
      const ats = cross ? Array.from({ length: n }, () => transformer(out, revHeadsIndex(i))) : null;
      ups.push(new UpBlock(rs, ats, final ? null : new Upsample2D(out)));
      prevOut = out;
    });
    this.up_blocks = this.child("up_blocks", new ModuleList(ups));

    this.conv_norm_out = this.child("conv_norm_out", new GroupNorm(groups, boc[0], eps));
    this.conv_out = this.child("conv_out", new Conv2d(boc[0], c.outChannels, c.convOutKernel, { padding: (c.convOutKernel - 1) / 2 }));

    for (const [path, m] of this.namedModules()) if (m instanceof Attention) m.path = path;
  }

  /** All attention modules with their paths (LoRA targets, capture layers). */
  attentionModules(): [string, Attention][] {
    return this.namedModules().filter((e): e is [string, Attention] => e[1] instanceof Attention);
  }

  /**
   * sample [B, in_channels, h, w], timesteps (one per batch element), encoderHiddenStates [B, 77, D]
   * -> noise prediction [B, out_channels, h, w].
   */
  forward(sample: Tensor, timesteps: number[], encoderHiddenStates: Tensor): Tensor {
    const B = sample.shape[0];
    if (timesteps.length !== B) throw new Error(`unet: ${timesteps.length} timesteps for batch ${B}`);
    const hook = this.onIntermediate;
    const tProj = ops.timestepEmbedding(timesteps, this.timeProjDim, {
      flipSinToCos: this.config.flipSinToCos,
      downscaleFreqShift: this.config.freqShift,
    }); // [B, timeProjDim]
    hook?.("time_proj", tProj);
    const temb = this.time_embedding.forward(tProj); // [B, tembDim]
    hook?.("time_embedding", temb);
    const f16 = this.activationDtype === "f16";
    const act = (t: Tensor) => (f16 ? ops.cast(t, "f16") : t); // f32 -> the activation dtype
    const ctx: BlockContext = {
      tembSilu: act(ops.silu(temb)), // [B, tembDim]
      context: act(encoderHiddenStates), // [B, 77, D]
      checkpointing: this.gradientCheckpointing && isGradEnabled(),
    };

    let h = this.conv_in.forward(act(sample)); // [B, C0, h, w]
    hook?.("conv_in", h);
    const skips: Tensor[] = [h];
    this.down_blocks.items.forEach((blk, i) => {
      const [out, states] = blk.forward(h, ctx);
      skips.push(...states);
      h = out;
      hook?.(`down_blocks.${i}`, h);
    });
    h = this.mid_block.forward(h, ctx);
    hook?.("mid_block", h);
    this.up_blocks.items.forEach((blk, i) => {
      const n = blk.resnets.length;
      const mine = skips.splice(skips.length - n, n);
      // The upsampler must reach the size of the next block's last skip (odd latent sizes).
      const next = skips[skips.length - 1];
      const upSize: [number, number] | undefined = next ? [next.shape[2], next.shape[3]] : undefined;
      h = blk.forward(h, mine, ctx, upSize);
      hook?.(`up_blocks.${i}`, h);
    });
    h = this.conv_norm_out.forward(h);
    hook?.("conv_norm_out", h);
    const normed = h;
    h = scope(() => {
      const out = this.conv_out.forward(ops.silu(normed)); // [B, out_channels, h, w]
      return f16 ? ops.cast(out, "f32") : out;
    });
    hook?.("conv_out", h);
    return h;
  }
}
