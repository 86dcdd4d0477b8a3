// Shared pieces of the model-level benchmarks (unet, train-step): the UNet configs measured, random
// weights drawn on the GPU, option parsing, timing of whole forwards and the per-kernel profile.
import { loadavg } from "node:os";
import process from "node:process";
import { gpu } from "../gpu/device.ts";
import type { KernelTime } from "../gpu/profiler.ts";
import { ConfigReader } from "../io/config_reader.ts";
import { parseUNetConfig, type UNetConfig } from "../io/diffusers_config.ts";
import { DEFAULT_TINY_SPEC } from "../models/tiny.ts";
import type { Module } from "../nn/module.ts";
import { UNet2DConditionModel } from "../nn/unet.ts";
import { Tensor, keep, scope } from "../tensor/index.ts";
import * as ops from "../tensor/ops/index.ts";
import { UserError } from "../errors.ts";

/** Options of `rl4pix bench unet|train-step` (as commander hands them over). */
export interface ModelBenchOptions {
  config?: string;
  resolution?: string | number;
  batch?: string | number;
  f16?: boolean;
  profile?: boolean;
  reps?: string | number;
  checkpointing?: string;
  torch?: boolean;
}

/** Stable Diffusion 1.5's UNet with InstructPix2Pix's 8 input channels (diffusers config keys). */
export const SD15_IP2P_UNET = {
  in_channels: 8,
  out_channels: 4,
  block_out_channels: [320, 640, 1280, 1280],
  layers_per_block: 2,
  down_block_types: ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
  up_block_types: ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
  attention_head_dim: 8,
  cross_attention_dim: 768,
  norm_num_groups: 32,
  sample_size: 64,
};

export interface ModelShape {
  name: "sd15" | "tiny";
  unet: UNetConfig;
  /** Latent side (image side / 8). */
  latent: number;
  batch: number;
  f16: boolean;
  /** Text tokens of the cross-attention context. */
  tokens: number;
}

function intOption(v: string | number | undefined, def: number, what: string): number {
  if (v === undefined) return def;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new UserError(`bench: --${what} must be a positive integer, got ${v}`);
  return n;
}

/** The model shape the options ask for; the tiny model defaults to its demo shape (batch 3, 32x32 latents). */
export function modelShape(o: ModelBenchOptions): ModelShape {
  const name = o.config ?? "sd15";
  if (name !== "sd15" && name !== "tiny") throw new UserError(`bench: --config must be sd15 or tiny, got ${name}`);
  const json = name === "sd15" ? SD15_IP2P_UNET : DEFAULT_TINY_SPEC.unet;
  const unet = parseUNetConfig(new ConfigReader(`${name} unet config`, json));
  const defRes = name === "tiny" ? 256 : 256;
  const res = intOption(o.resolution, defRes, "resolution");
  if (res % 8 !== 0) throw new UserError(`bench: --resolution must be a multiple of 8, got ${res}`);
  const batch = intOption(o.batch, name === "tiny" ? 3 : 1, "batch");
  const f16 = Boolean(o.f16);
  if (f16 && !gpu().hasF16) throw new UserError("bench: --f16 needs shader-f16, which this adapter lacks");
  return { name, unet, latent: res / 8, batch, f16, tokens: 77 };
}

/**
 * Random parameters drawn on the GPU (Philox, one stream offset per parameter): matrices and conv
 * kernels ~ N(0, 1/fan_in) (f16 through the cast op when `f16`), norm weights 1, biases N(0, 0.02²).
 */
export function randomizeOnGpu(module: Module, seed: number, f16: boolean): { params: number; bytes: number } {
  let offset = 0;
  let params = 0;
  let bytes = 0;
  for (const [key, p] of module.namedParameters()) {
    const n = p.shape.reduce((a, b) => a * b, 1);
    const isNormWeight = /norm\d?\.weight$/.test(key) && p.shape.length === 1;
    const t = scope(() => {
      let v: Tensor;
      if (isNormWeight) v = ops.full(p.shape, 1);
      else if (p.shape.length >= 2) {
        const fanIn = p.shape.slice(1).reduce((a, b) => a * b, 1);
        v = ops.scale(ops.randn(p.shape, seed, offset), 1 / Math.sqrt(fanIn));
        if (f16 && (p.role === "matmul" || p.role === "conv")) v = ops.cast(v, "f16");
      } else v = ops.scale(ops.randn(p.shape, seed, offset), 0.02);
      return keep(v);
    });
    offset += Math.ceil(n / 4) * 4;
    p.tensor?.dispose();
    p.tensor = t;
    params += n;
    bytes += t.byteLength;
  }
  return { params, bytes };
}

export function buildUnet(s: ModelShape, seed = 1): { unet: UNet2DConditionModel; params: number; bytes: number } {
  const unet = new UNet2DConditionModel(s.unet);
  const r = randomizeOnGpu(unet, seed, s.f16);
  return { unet, ...r };
}

/** The UNet's inputs: sample [B, in, h, w], timesteps, context [B, 77, crossDim]. */
export function unetInputs(s: ModelShape, seed = 2): { sample: Tensor; timesteps: number[]; context: Tensor } {
  const sample = ops.randn([s.batch, s.unet.inChannels, s.latent, s.latent], seed).keep();
  const context = ops.randn([s.batch, s.tokens, s.unet.crossAttentionDim[0]], seed + 1).keep();
  return { sample, timesteps: new Array(s.batch).fill(500), context };
}

export function describeShape(s: ModelShape): string {
  return `${s.name} ${s.latent * 8}px (latent ${s.latent}x${s.latent}) batch ${s.batch}${s.f16 ? " f16 weights" : ""}`;
}

export interface ModelTiming {
  /** Wall time of the first call (pipeline compilation on lavapipe happens at first dispatch). */
  firstMs: number;
  /** Median of the timed calls. */
  ms: number;
  all: number[];
  /** CPU time of this process / wall time while timed (2 = both cores busy with our work). */
  cores: number;
  /** CPU milliseconds of this process per call (all threads; robust to other load on the machine). */
  cpuMs: number;
  peakBytes: number;
}

/**
 * First call, `warmup` untimed calls, then `reps` timed calls; peak pool bytes over all of them.
 * `reps` 0 times the first call only (long runs that only need the memory peak).
 */
export async function timeModel(fn: () => Promise<void> | void, reps: number, warmup = 1): Promise<ModelTiming> {
  if (reps === 0) warmup = 0;
  const g = gpu();
  await g.sync();
  g.pool.trim();
  g.pool.resetPeak();
  let t0 = performance.now();
  await fn();
  await g.sync();
  const firstMs = performance.now() - t0;
  for (let i = 0; i < warmup; i++) {
    await fn();
    await g.sync();
  }
  const all: number[] = [];
  const cpu0 = process.cpuUsage();
  const wall0 = performance.now();
  for (let i = 0; i < reps; i++) {
    t0 = performance.now();
    await fn();
    await g.sync();
    all.push(performance.now() - t0);
  }
  const cpu = process.cpuUsage(cpu0);
  const cores = (cpu.user + cpu.system) / 1000 / (performance.now() - wall0);
  const sorted = [...all].sort((a, b) => a - b);
  const cpuMs = reps > 0 ? (cpu.user + cpu.system) / 1000 / reps : NaN;
  const ms = reps > 0 ? sorted[Math.floor(sorted.length / 2)] : firstMs;
  return { firstMs, ms, all, cores, cpuMs, peakBytes: g.pool.snapshot().peakAllocatedBytes };
}

/** One more call under the timestamp profiler: per-kernel GPU time, largest first. */
export async function profileModel(fn: () => Promise<void> | void): Promise<KernelTime[]> {
  const g = gpu();
  g.startProfiling();
  await fn();
  await g.sync();
  return await g.stopProfiling();
}

/** The 1-minute load average (what else the shared machine was doing), for the notes. */
export function loadNote(): string {
  return `load ${loadavg().map((v) => v.toFixed(2)).join("/")}`;
}

export const mib = (b: number) => `${(b / 2 ** 20).toFixed(0)} MiB`;
