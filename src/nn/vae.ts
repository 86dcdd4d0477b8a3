// diffusers' AutoencoderKL: Encoder -> quant_conv -> (mean, logvar); post_quant_conv -> Decoder.
import type { Tensor } from "../tensor/tensor.ts";
import * as ops from "../tensor/ops/index.ts";
import { scope } from "../tensor/scope.ts";
import { UserError } from "../errors.ts";
import { Module, ModuleList } from "./module.ts";
import { Conv2d, GroupNorm } from "./layers.ts";
import { Downsample2D, ResnetBlock2D, Upsample2D } from "./resnet.ts";
import { Attention } from "./attention.ts";
import type { VaeConfig } from "../io/diffusers_config.ts";

export type { VaeConfig };

const VAE_EPS = 1e-6;

/** The VAE mid-block attention: one head over all channels, with its own GroupNorm and residual. */
class VAEAttention extends Attention {
  readonly group_norm: GroupNorm;
  constructor(channels: number, groups: number) {
    super(channels, { heads: 1, dimHead: channels, bias: true });
    this.group_norm = this.child("group_norm", new GroupNorm(groups, channels, VAE_EPS));
  }
  forwardSpatial(x: Tensor): Tensor {
    const [B, C, H, W] = x.shape;
    const n = this.group_norm.forward(x);
    const seq = ops.reshape(ops.permute(n, [0, 2, 3, 1]), [B, H * W, C]); // [B, HW, C]
    const o = this.forward(seq); // [B, HW, C]
    const back = ops.permute(ops.reshape(o, [B, H, W, C]), [0, 3, 1, 2]); // [B, C, H, W]
    return ops.add(back, x);
  }
}

/** UNetMidBlock2D: resnet, attention, resnet (no time embedding). */
class VAEMidBlock extends Module {
  readonly resnets: ModuleList<ResnetBlock2D>;
  /** Absent with diffusers' `mid_block_add_attention: false` (no `attentions.*` keys then). */
  readonly attentions: ModuleList<VAEAttention> | null;
  constructor(ch: number, groups: number, addAttention: boolean) {
    super();
    const r = () => new ResnetBlock2D({ inChannels: ch, outChannels: ch, tembChannels: null, groups, eps: VAE_EPS });
    this.attentions = addAttention ? this.child("attentions", new ModuleList([new VAEAttention(ch, groups)])) : null;
    this.resnets = this.child("resnets", new ModuleList([r(), r()]));
  }
  forward(x: Tensor): Tensor {
    let h = this.resnets.items[0].forward(x, null);
    if (this.attentions) h = this.attentions.items[0].forwardSpatial(h);
    return this.resnets.items[1].forward(h, null);
  }
}

class EncoderBlock extends Module {
  readonly resnets: ModuleList<ResnetBlock2D>;
  readonly downsamplers: ModuleList<Downsample2D> | null;
  constructor(resnets: ResnetBlock2D[], down: Downsample2D | null) {
    super();
    this.resnets = this.child("resnets", new ModuleList(resnets));
    this.downsamplers = down ? this.child("downsamplers", new ModuleList([down])) : null;
  }
  forward(x: Tensor): Tensor {
    let h = x;
    for (const r of this.resnets.items) h = r.forward(h, null);
    return this.downsamplers ? this.downsamplers.items[0].forward(h) : h;
  }
}

class DecoderBlock extends Module {
  readonly resnets: ModuleList<ResnetBlock2D>;
  readonly upsamplers: ModuleList<Upsample2D> | null;
  constructor(resnets: ResnetBlock2D[], up: Upsample2D | null) {
    super();
    this.resnets = this.child("resnets", new ModuleList(resnets));
    this.upsamplers = up ? this.child("upsamplers", new ModuleList([up])) : null;
  }
  forward(x: Tensor): Tensor {
    let h = x;
    for (const r of this.resnets.items) h = r.forward(h, null);
    return this.upsamplers ? this.upsamplers.items[0].forward(h) : h;
  }
}

class Encoder extends Module {
  readonly conv_in: Conv2d;
  readonly down_blocks: ModuleList<EncoderBlock>;
  readonly mid_block: VAEMidBlock;
  readonly conv_norm_out: GroupNorm;
  readonly conv_out: Conv2d;
  constructor(c: VaeConfig) {
    super();
    const boc = c.blockOutChannels;
    const g = c.normNumGroups;
    this.conv_in = this.child("conv_in", new Conv2d(c.inChannels, boc[0], 3, { padding: 1 }));
    let outC = boc[0];
    const blocks = c.downBlockTypes.map((_type, i) => {
      const inC = outC;
      outC = boc[i];
      const rs = Array.from({ length: c.layersPerBlock }, (_, j) =>
        new ResnetBlock2D({ inChannels: j === 0 ? inC : outC, outChannels: outC, tembChannels: null, groups: g, eps: VAE_EPS })
      );
      return new EncoderBlock(rs, i === boc.length - 1 ? null : new Downsample2D(outC, 0));
    });
    this.down_blocks = this.child("down_blocks", new ModuleList(blocks));
    this.mid_block = this.child("mid_block", new VAEMidBlock(boc[boc.length - 1], g, c.midBlockAddAttention));
    this.conv_norm_out = this.child("conv_norm_out", new GroupNorm(g, boc[boc.length - 1], VAE_EPS));
    this.conv_out = this.child("conv_out", new Conv2d(boc[boc.length - 1], 2 * c.latentChannels, 3, { padding: 1 }));
  }
  forward(x: Tensor): Tensor {
    let h = this.conv_in.forward(x);
    for (const b of this.down_blocks.items) h = b.forward(h);
    h = this.mid_block.forward(h);
    return this.conv_out.forward(this.conv_norm_out.forward(h, true));
  }
}

class Decoder extends Module {
  readonly conv_in: Conv2d;
  readonly mid_block: VAEMidBlock;
  readonly up_blocks: ModuleList<DecoderBlock>;
  readonly conv_norm_out: GroupNorm;
  readonly conv_out: Conv2d;
  constructor(c: VaeConfig) {
    super();
    const rev = [...c.blockOutChannels].reverse();
    const g = c.normNumGroups;
    this.conv_in = this.child("conv_in", new Conv2d(c.latentChannels, rev[0], 3, { padding: 1 }));
    this.mid_block = this.child("mid_block", new VAEMidBlock(rev[0], g, c.midBlockAddAttention));
    let prev = rev[0];
    const blocks = c.upBlockTypes.map((_type, i) => {
      const out = rev[i];
      const rs = Array.from({ length: c.layersPerBlock + 1 }, (_, j) =>
        new ResnetBlock2D({ inChannels: j === 0 ? prev : out, outChannels: out, tembChannels: null, groups: g, eps: VAE_EPS })
      );
      prev = out;
      return new DecoderBlock(rs, i === rev.length - 1 ? null : new Upsample2D(out));
    });
    this.up_blocks = this.child("up_blocks", new ModuleList(blocks));
    this.conv_norm_out = this.child("conv_norm_out", new GroupNorm(g, rev[rev.length - 1], VAE_EPS));
    this.conv_out = this.child("conv_out", new Conv2d(rev[rev.length - 1], c.outChannels, 3, { padding: 1 }));
  }
  forward(z: Tensor): Tensor {
    let h = this.conv_in.forward(z);
    h = this.mid_block.forward(h);
    for (const b of this.up_blocks.items) h = b.forward(h);
    return this.conv_out.forward(this.conv_norm_out.forward(h, true));
  }
}

export interface LatentDistribution {
  /** [B, latent, h, w]; IP2P conditions on this mode (unscaled). */
  mean: Tensor;
  /** clamp(logvar, -30, 20) [B, latent, h, w]. */
  logvar: Tensor;
  /** The raw moments quant_conv(encoder(x)) [B, 2*latent, h, w]. */
  moments: Tensor;
}

export class AutoencoderKL extends Module {
  readonly encoder: Encoder;
  readonly decoder: Decoder;
  readonly quant_conv: Conv2d;
  readonly post_quant_conv: Conv2d;
  /** Spatial downsampling factor (2^(blocks-1)). */
  readonly scaleFactor: number;
  /**
   * dtype of the activations inside the encoder and decoder: "f16" (needs the adapter's shader-f16)
   * stores every intermediate as f16 and computes each op in f32 with one rounding per stored value,
   * as diffusers with torch_dtype=float16. The image and latents given and returned stay f32.
   */
  activationDtype: "f32" | "f16" = "f32";

  constructor(readonly config: VaeConfig) {
    super();
    if (!config.useQuantConv || !config.usePostQuantConv) {
      throw new UserError(`${config.file}: use_quant_conv and use_post_quant_conv must be true`);
    }
    const L = config.latentChannels;
    this.encoder = this.child("encoder", new Encoder(config));
    this.decoder = this.child("decoder", new Decoder(config));
    this.quant_conv = this.child("quant_conv", new Conv2d(2 * L, 2 * L, 1));
    this.post_quant_conv = this.child("post_quant_conv", new Conv2d(L, L, 1));
    this.scaleFactor = 2 ** (config.blockOutChannels.length - 1);
  }

  /** image [B, 3, H, W] in [-1, 1]. */
  encode(image: Tensor): LatentDistribution {
    const moments = this.inActivations(image, (x) => this.quant_conv.forward(this.encoder.forward(x))); // [B, 2L, h, w]
    const [mean, rawLogvar] = ops.chunk(moments, 2, 1);
    const logvar = ops.clamp(rawLogvar, -30, 20);
    return { mean, logvar, moments };
  }

  /** latents [B, L, h, w] (already divided by the scaling factor) -> image [B, 3, H, W], unclamped. */
  decode(latents: Tensor): Tensor {
    return this.inActivations(latents, (z) => this.decoder.forward(this.post_quant_conv.forward(z)));
  }

  /** `fn` on `x` cast to the activation dtype; its result comes back as f32. */
  private inActivations(x: Tensor, fn: (x: Tensor) => Tensor): Tensor {
    if (this.activationDtype === "f32") return fn(x);
    return scope(() => ops.cast(fn(ops.cast(x, "f16")), "f32"));
  }
}
