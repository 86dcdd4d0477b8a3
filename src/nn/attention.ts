// diffusers' `Attention` (to_q, to_k, to_v, to_out.0) and the capture hook the reward uses.
import type { Tensor } from "../tensor/tensor.ts";
import * as ops from "../tensor/ops/index.ts";
import { Module, ModuleList } from "./module.ts";
import { Linear } from "./layers.ts";

/**
 * Asked by every attention layer before it runs: when it returns a request, the layer's attention
 * probabilities are accumulated into the request (see ops.attention's `capture`).
 */
export interface AttentionCaptureHook {
  /** Captures for the layer at `path` (none when the layer is not recorded). */
  request(path: string, batch: number, queries: number, keys: number): ops.AttentionCapture[];
}

let captureHook: AttentionCaptureHook | null = null;

/** Install (or clear with null) the process-wide capture hook. */
export function setAttentionCaptureHook(h: AttentionCaptureHook | null): void {
  captureHook = h;
}

/** Output projection list: `to_out.0` is the Linear, `to_out.1` a dropout without parameters. */
class ToOut extends ModuleList<Linear> {}

export class Attention extends Module {
  readonly to_q: Linear;
  readonly to_k: Linear;
  readonly to_v: Linear;
  readonly to_out: ToOut;
  readonly heads: number;
  readonly dimHead: number;
  /** Dotted module path inside its model (set by the model after construction). */
  path = "";

  constructor(queryDim: number, opts: { crossAttentionDim?: number; heads: number; dimHead: number; bias?: boolean; outBias?: boolean }) {
    super();
    const inner = opts.heads * opts.dimHead;
    const kvDim = opts.crossAttentionDim ?? queryDim;
    const bias = opts.bias ?? false;
    this.heads = opts.heads;
    this.dimHead = opts.dimHead;
    this.to_q = this.child("to_q", new Linear(queryDim, inner, bias));
    this.to_k = this.child("to_k", new Linear(kvDim, inner, bias));
    this.to_v = this.child("to_v", new Linear(kvDim, inner, bias));
    this.to_out = this.child("to_out", new ToOut([new Linear(inner, queryDim, opts.outBias ?? true)]));
  }

  /** The four projections LoRA adapts, by their names under this module. */
  loraTargets(): [string, Linear][] {
    return [["to_q", this.to_q], ["to_k", this.to_k], ["to_v", this.to_v], ["to_out.0", this.to_out.items[0]]];
  }

  /**
   * x [B, Lq, queryDim]; context [B, Lk, kvDim] for cross-attention (self-attention when absent).
   * Returns [B, Lq, queryDim].
   */
  forward(x: Tensor, context: Tensor | null = null, causal = false): Tensor {
    const [B, Lq] = x.shape;
    const ctx = context ?? x;
    const Lk = ctx.shape[1];
    const q = this.to_q.forward(x); // [B, Lq, H*d]
    const k = this.to_k.forward(ctx); // [B, Lk, H*d]
    const v = this.to_v.forward(ctx); // [B, Lk, H*d]
    const captures = captureHook?.request(this.path, B, Lq, Lk) ?? [];
    const scale = 1 / Math.sqrt(this.dimHead);
    const o = ops.attentionMergedHeads(q, k, v, this.heads, { causal, scale, capture: captures[0] }); // [B, Lq, H*d]
    for (const c of captures.slice(1)) ops.captureAttention(q, k, this.heads, { causal, scale, capture: c });
    return this.to_out.items[0].forward(o);
  }
}
