// Basic layers with torch's parameter names: Linear and Conv2d (each optionally with a LoRA adapter),
// GroupNorm, LayerNorm.
import type { Tensor } from "../tensor/tensor.ts";
import * as ops from "../tensor/ops/index.ts";
import { Module, type Param } from "./module.ts";

/**
 * A low-rank adapter (peft's). On a Linear: y += scale * (x downᵀ) upᵀ. On a Conv2d: y += scale *
 * conv1x1(conv(x, down), up), the down convolution with the layer's kernel, stride and padding.
 * Tensors are trainable leaves.
 */
export interface LoraAdapter {
  /** lora_A / down: [rank, in] on a Linear, [rank, in, k, k] on a Conv2d. */
  down: Tensor;
  /** lora_B / up: [out, rank] on a Linear, [out, rank, 1, 1] on a Conv2d. */
  up: Tensor;
  scale: number;
}

export class Linear extends Module {
  readonly weight: Param;
  readonly bias: Param | null;
  lora: LoraAdapter | null = null;

  constructor(readonly inFeatures: number, readonly outFeatures: number, bias = true) {
    super();
    this.weight = this.param("weight", [outFeatures, inFeatures], "matmul");
    this.bias = bias ? this.param("bias", [outFeatures]) : null;
  }

  /** x [..., in] -> [..., out]. */
  forward(x: Tensor, activation: "none" | "silu" | "gelu" = "none"): Tensor {
    if (this.lora) {
      const y = ops.loraLinear(x, this.weight.t, this.bias?.t ?? null, this.lora.down, this.lora.up, this.lora.scale);
      return activation === "none" ? y : activation === "silu" ? ops.silu(y) : ops.gelu(y);
    }
    return ops.linear(x, this.weight.t, this.bias?.t, { activation });
  }
}

export interface Conv2dOptions {
  stride?: number;
  padding?: number | [number, number, number, number];
  bias?: boolean;
}

export class Conv2d extends Module {
  readonly weight: Param;
  readonly bias: Param | null;
  readonly stride: number;
  readonly padding: number | [number, number, number, number];
  lora: LoraAdapter | null = null;

  constructor(readonly inChannels: number, readonly outChannels: number, readonly kernelSize: number, opts: Conv2dOptions = {}) {
    super();
    this.weight = this.param("weight", [outChannels, inChannels, kernelSize, kernelSize], "conv");
    this.bias = opts.bias === false ? null : this.param("bias", [outChannels]);
    this.stride = opts.stride ?? 1;
    this.padding = opts.padding ?? 0;
  }

  /** x [N, Cin, H, W] -> [N, Cout, H', W']. */
  forward(x: Tensor): Tensor {
    const geometry = { stride: this.stride, padding: this.padding };
    const y = ops.conv2d(x, this.weight.t, this.bias?.t, geometry);
    if (!this.lora) return y;
    const low = ops.conv2d(x, this.lora.down, null, geometry); // [N, rank, H', W']
    return ops.add(y, ops.scale(ops.conv2d(low, this.lora.up), this.lora.scale));
  }
}

export class GroupNorm extends Module {
  readonly weight: Param;
  readonly bias: Param;
  constructor(readonly numGroups: number, readonly numChannels: number, readonly eps: number) {
    super();
    this.weight = this.param("weight", [numChannels]);
    this.bias = this.param("bias", [numChannels]);
  }

  /** x [N, C, ...]; `silu` fuses the activation that usually follows. */
  forward(x: Tensor, silu = false): Tensor {
    return ops.groupNorm(x, this.numGroups, this.weight.t, this.bias.t, this.eps, { silu });
  }
}

export class LayerNorm extends Module {
  readonly weight: Param;
  readonly bias: Param;
  constructor(readonly dim: number, readonly eps: number) {
    super();
    this.weight = this.param("weight", [dim]);
    this.bias = this.param("bias", [dim]);
  }

  /** Normalise over the last dim. */
  forward(x: Tensor): Tensor {
    return ops.layerNorm(x, this.weight.t, this.bias.t, this.eps);
  }
}
