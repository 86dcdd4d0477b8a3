// diffusers' ResnetBlock2D, Downsample2D and Upsample2D.
import type { Tensor } from "../tensor/tensor.ts";
import * as ops from "../tensor/ops/index.ts";
import { Module } from "./module.ts";
import { Conv2d, GroupNorm, Linear } from "./layers.ts";

export interface ResnetOptions {
  inChannels: number;
  outChannels: number;
  /** Channels of the time embedding; null for the VAE (no time conditioning). */
  tembChannels: number | null;
  groups: number;
  eps: number;
  outputScaleFactor?: number;
}

export class ResnetBlock2D extends Module {
  readonly norm1: GroupNorm;
  readonly conv1: Conv2d;
  readonly time_emb_proj: Linear | null;
  readonly norm2: GroupNorm;
  readonly conv2: Conv2d;
  readonly conv_shortcut: Conv2d | null;
  readonly outputScaleFactor: number;

  constructor(o: ResnetOptions) {
    super();
    this.norm1 = this.child("norm1", new GroupNorm(o.groups, o.inChannels, o.eps));
    this.conv1 = this.child("conv1", new Conv2d(o.inChannels, o.outChannels, 3, { padding: 1 }));
    this.time_emb_proj = o.tembChannels !== null ? this.child("time_emb_proj", new Linear(o.tembChannels, o.outChannels)) : null;
    this.norm2 = this.child("norm2", new GroupNorm(o.groups, o.outChannels, o.eps));
    this.conv2 = this.child("conv2", new Conv2d(o.outChannels, o.outChannels, 3, { padding: 1 }));
    this.conv_shortcut = o.inChannels !== o.outChannels ? this.child("conv_shortcut", new Conv2d(o.inChannels, o.outChannels, 1)) : null;
    this.outputScaleFactor = o.outputScaleFactor ?? 1;
  }

  /** x [N, Cin, H, W], temb [N, tembChannels] (already through SiLU by the caller) -> [N, Cout, H, W]. */
  forward(x: Tensor, tembSilu: Tensor | null): Tensor {
    let h = this.conv1.forward(this.norm1.forward(x, true));
    if (this.time_emb_proj && tembSilu) {
      const t = this.time_emb_proj.forward(tembSilu); // [N, Cout]
      h = ops.add(h, ops.reshape(t, [t.shape[0], t.shape[1], 1, 1]));
    }
    h = this.conv2.forward(this.norm2.forward(h, true));
    const shortcut = this.conv_shortcut ? this.conv_shortcut.forward(x) : x;
    const sum = ops.add(shortcut, h);
    return this.outputScaleFactor === 1 ? sum : ops.scale(sum, 1 / this.outputScaleFactor);
  }
}

/** Strided 3x3 conv (`conv`). padding 0 means diffusers' asymmetric (0,1,0,1) pad before the conv. */
export class Downsample2D extends Module {
  readonly conv: Conv2d;
  constructor(channels: number, padding: number) {
    super();
    const pad: number | [number, number, number, number] = padding === 0 ? [0, 1, 0, 1] : padding;
    this.conv = this.child("conv", new Conv2d(channels, channels, 3, { stride: 2, padding: pad }));
  }
  forward(x: Tensor): Tensor {
    return this.conv.forward(x);
  }
}

/** Nearest 2x upsampling (or to an explicit size) followed by a 3x3 conv (`conv`). */
export class Upsample2D extends Module {
  readonly conv: Conv2d;
  constructor(channels: number) {
    super();
    this.conv = this.child("conv", new Conv2d(channels, channels, 3, { padding: 1 }));
  }
  forward(x: Tensor, size?: [number, number]): Tensor {
    const up = size && (size[0] !== x.shape[2] * 2 || size[1] !== x.shape[3] * 2)
      ? ops.upsampleNearest(x, size[0], size[1])
      : ops.upsampleNearest2x(x);
    return this.conv.forward(up);
  }
}
