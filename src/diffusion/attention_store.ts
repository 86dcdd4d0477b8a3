// The instruction's cross-attention map (SPEC §5): attn2 probabilities of the text-conditioned branch,
// averaged over heads, the chosen layers, the instruction's real tokens and every sampling step.
// Recorded through the attention capture hook, so self-attention maps are never materialised.
import { Tensor } from "../tensor/tensor.ts";
import * as ops from "../tensor/ops/index.ts";
import { UserError } from "../errors.ts";
import { type AttentionCaptureHook, setAttentionCaptureHook } from "../nn/attention.ts";
import type { UNet2DConditionModel } from "../nn/unet.ts";

/** Where an attn2 layer sits: its path and how many times smaller than the latent its map is per side. */
export interface CrossAttentionLayer {
  path: string;
  place: "down" | "mid" | "up";
  /** latent side / map side. */
  factor: number;
}

export function crossAttentionLayers(unet: UNet2DConditionModel): CrossAttentionLayer[] {
  const n = unet.config.blockOutChannels.length;
  const out: CrossAttentionLayer[] = [];
  for (const [path] of unet.attentionModules()) {
    if (!path.endsWith(".attn2")) continue;
    const m = /^(down_blocks|up_blocks)\.(\d+)\./.exec(path);
    if (m) {
      const i = Number(m[2]);
      out.push(m[1] === "down_blocks" ? { path, place: "down", factor: 2 ** i } : { path, place: "up", factor: 2 ** (n - 1 - i) });
    } else if (path.startsWith("mid_block.")) {
      out.push({ path, place: "mid", factor: 2 ** (n - 1) });
    }
  }
  return out;
}

/**
 * The latent/N of the default attention-map layers (SPEC §5: latent/4, SD-1.5's down_blocks.2 and
 * up_blocks.1): 4 where the UNet has attn2 maps of that size, otherwise the size closest to latent/4
 * in powers of two, and of two equally close the finer (a coarse map can shrink to a few pixels on a
 * small model). The reward's default (rl/model_defaults.ts) and `--attention-layers auto`.
 */
export const DEFAULT_MAP_DIVISOR = 4;

export function defaultLayerFactor(unet: UNet2DConditionModel): number {
  const factors = [...new Set(crossAttentionLayers(unet).map((l) => l.factor))];
  if (factors.length === 0) throw new UserError(`${unet.config.file}: this UNet has no cross-attention (attn2) layers, so it has no instruction attention map`);
  const distance = (f: number) => Math.abs(Math.log2(f) - Math.log2(DEFAULT_MAP_DIVISOR));
  factors.sort((a, b) => distance(a) - distance(b) || a - b);
  return factors[0];
}

/**
 * Choose layers by a spec: "res:N" (maps latent/N per side), "down", "mid", "up", "all", or a comma
 * list mixing these and explicit module paths. Throws a UserError naming what exists when nothing matches.
 */
export function selectCrossAttentionLayers(unet: UNet2DConditionModel, spec: string): CrossAttentionLayer[] {
  const all = crossAttentionLayers(unet);
  const chosen = new Map<string, CrossAttentionLayer>();
  for (const partRaw of spec.split(",")) {
    const part = partRaw.trim();
    if (!part) continue;
    let hits: CrossAttentionLayer[];
    const res = /^res:(\d+)$/.exec(part);
    if (res) hits = all.filter((l) => l.factor === Number(res[1]));
    else if (part === "down" || part === "mid" || part === "up") hits = all.filter((l) => l.place === part);
    else if (part === "all") hits = all;
    else hits = all.filter((l) => l.path === part || l.path === `${part}.attn2` || l.path.startsWith(`${part}.`));
    if (hits.length === 0) {
      const factors = [...new Set(all.map((l) => l.factor))].map((f) => `res:${f}`).join(", ");
      throw new UserError(`reward.layers: '${part}' matches no cross-attention layer of this UNet (it has ${factors}; or down, mid, up, all, or a module path)`);
    }
    for (const h of hits) chosen.set(h.path, h);
  }
  const list = [...chosen.values()];
  const f0 = list[0]?.factor;
  if (list.some((l) => l.factor !== f0)) {
    throw new UserError(`reward.layers: '${spec}' mixes map resolutions (${[...new Set(list.map((l) => `res:${l.factor}`))].join(", ")}); choose layers of one resolution`);
  }
  return list;
}

/**
 * Records a_pred for B samples during sampling. `tokenCounts[b]` is the number of real instruction
 * tokens of sample b (positions 1..count, after BOS). Rows 0..B-1 of every UNet batch must be the
 * text-conditioned branch (the pipeline's layout).
 */
export class AttentionMapRecorder implements AttentionCaptureHook {
  private readonly layers: Set<string>;
  /** One accumulator per sample [1, mapH*mapW]. */
  private readonly sums: Tensor[];
  private steps = 0;

  constructor(
    layers: readonly CrossAttentionLayer[],
    private readonly tokenCounts: readonly number[],
    readonly mapH: number,
    readonly mapW: number,
  ) {
    this.layers = new Set(layers.map((l) => l.path));
    this.sums = tokenCounts.map(() => ops.zeros([1, mapH * mapW], "attention-map").keep());
  }

  request(path: string, _batch: number, queries: number): ops.AttentionCapture[] {
    if (!this.layers.has(path)) return [];
    if (queries !== this.mapH * this.mapW) {
      throw new Error(`attention map: layer ${path} has ${queries} queries, expected ${this.mapH}x${this.mapW}`);
    }
    const out: ops.AttentionCapture[] = [];
    this.tokenCounts.forEach((count, b) => {
      if (count <= 0) return;
      out.push({ rows: [b, 1], cols: { start: 1, count }, out: this.sums[b], weight: 1 / (this.layers.size * count) });
    });
    return out;
  }

  /** Count one sampling step (call after each UNet evaluation that recorded maps). */
  step(): void {
    this.steps++;
  }

  /** Start recording (installs the process-wide hook). */
  attach(): this {
    setAttentionCaptureHook(this);
    return this;
  }

  detach(): void {
    setAttentionCaptureHook(null);
  }

  /** a_pred per sample: [mapH*mapW] on the host, averaged over the recorded steps. */
  async maps(): Promise<Float32Array[]> {
    const out: Float32Array[] = [];
    for (const s of this.sums) {
      const d = await s.readF32();
      const k = this.steps > 0 ? 1 / this.steps : 0;
      out.push(d.map((v) => v * k));
    }
    return out;
  }

  dispose(): void {
    this.detach();
    for (const s of this.sums) s.dispose();
  }
}
