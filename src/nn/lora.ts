// LoRA adapters on the UNet's attention projections (to_q, to_k, to_v, to_out.0 of every attn1 and
// attn2), as ddpo-pytorch / diffusers set them up: down ~ N(0, (1/r)^2), up = 0, scale alpha/r; on
// request (peft's target_modules) also on any other linear or convolution of the UNet (e.g. the
// transformer blocks' ff.net.0.proj / ff.net.2, the resnets' conv1 / conv2).
import { Tensor, numel } from "../tensor/tensor.ts";
import { UserError } from "../errors.ts";
import { type LoraLayer, loraScale, loraShapes, readLoraFile } from "../io/lora_format.ts";
import { Conv2d, Linear } from "./layers.ts";
import { FeedForward } from "./transformer.ts";
import type { UNet2DConditionModel } from "./unet.ts";
import { hostRandn } from "./load.ts";

/** A module that can carry an adapter. */
export type LoraTarget = Linear | Conv2d;

/** A target's sizes in a LoRA file's terms (a convolution's channels and kernel size). */
export function loraTargetDims(m: LoraTarget): Pick<LoraLayer, "inFeatures" | "outFeatures" | "kernelSize"> {
  return m instanceof Linear
    ? { inFeatures: m.inFeatures, outFeatures: m.outFeatures }
    : { inFeatures: m.inChannels, outFeatures: m.outChannels, kernelSize: m.kernelSize };
}

/**
 * Every LoRA target of the UNet by module path (e.g. `…attn2.to_out.0`, `…ff.net.2`,
 * `…resnets.0.conv1`): the attention projections first, then the feed-forward linears, then every
 * other linear and convolution in module order, so that each addition left the earlier adapters'
 * initialisation indices (and so their weights) as they were.
 */
export function loraTargets(unet: UNet2DConditionModel): Map<string, LoraTarget> {
  const out = new Map<string, LoraTarget>();
  for (const [path, attn] of unet.attentionModules()) {
    for (const [name, lin] of attn.loraTargets()) out.set(`${path}.${name}`, lin);
  }
  const modules = [...unet.namedModules()];
  for (const [path, m] of modules) {
    if (m instanceof FeedForward) for (const [name, lin] of m.loraTargets()) out.set(`${path}.${name}`, lin);
  }
  for (const [path, m] of modules) {
    if ((m instanceof Linear || m instanceof Conv2d) && !out.has(path)) out.set(path, m);
  }
  return out;
}

/** The trainable tensors of the attached adapters, in a stable order (module path, down then up). */
export function loraParameters(unet: UNet2DConditionModel): { path: string; down: Tensor; up: Tensor }[] {
  const out: { path: string; down: Tensor; up: Tensor }[] = [];
  for (const [path, lin] of loraTargets(unet)) if (lin.lora) out.push({ path, down: lin.lora.down, up: lin.lora.up });
  return out;
}

/** Whether a module path is named by one of peft-style `targets` (a name or a dotted suffix of the path). */
export function isLoraTarget(path: string, targets: readonly string[]): boolean {
  return targets.some((t) => path === t || path.endsWith(`.${t}`));
}

/** The targets adapted when none are named: every attention projection (ddpo-pytorch's). */
export const ATTENTION_PROJECTIONS = ["to_q", "to_k", "to_v", "to_out.0"] as const;

/**
 * Fresh trainable adapters of rank `rank` (ddpo-pytorch's initialisation) on every attention
 * projection, or on those `targets` names (peft's target_modules); a module's initial weights do not
 * depend on which others are adapted.
 */
export function initLora(unet: UNet2DConditionModel, rank: number, seed: number, alpha = rank, targets: readonly string[] = ATTENTION_PROJECTIONS): void {
  checkLoraTargets(unet, targets);
  let i = 0;
  for (const [path, m] of loraTargets(unet)) {
    const index = i++;
    m.lora?.down.dispose();
    m.lora?.up.dispose();
    m.lora = null;
    if (!isLoraTarget(path, targets)) continue;
    const shapes = loraShapes({ rank, ...loraTargetDims(m) });
    const down = hostRandn(numel(shapes.down), (seed * 65537 + index * 2654435761) >>> 0).map((v) => v / rank);
    m.lora = {
      down: Tensor.from(down, shapes.down, "f32", "lora_A").keep().requireGrad(),
      up: Tensor.from(new Float32Array(numel(shapes.up)), shapes.up, "f32", "lora_B").keep().requireGrad(),
      scale: alpha / rank,
    };
  }
}

/** Check that every peft-style target names at least one module of this UNet (host only). Throws a UserError. */
export function checkLoraTargets(unet: UNet2DConditionModel, targets: readonly string[]): void {
  const paths = [...loraTargets(unet).keys()];
  const unmatched = targets.find((t) => !paths.some((p) => isLoraTarget(p, [t])));
  if (unmatched !== undefined) throw new UserError(`"lora.target_modules": '${unmatched}' names no linear or convolution of this UNet`);
}

/**
 * Check that every layer names an existing target with matching sizes (host only: commands run it
 * before the GPU starts). Throws a UserError naming `source`.
 */
export function checkLoraLayers(unet: UNet2DConditionModel, layers: ReadonlyMap<string, LoraLayer>, source: string): void {
  const targets = loraTargets(unet);
  const describe = (d: Pick<LoraLayer, "inFeatures" | "outFeatures" | "kernelSize">) =>
    d.kernelSize === undefined ? `a ${d.outFeatures}x${d.inFeatures} linear` : `a ${d.kernelSize}x${d.kernelSize} convolution from ${d.inFeatures} to ${d.outFeatures} channels`;
  for (const [path, l] of layers) {
    const m = targets.get(path);
    if (!m) throw new UserError(`${source}: LoRA layer '${path}' names no linear or convolution of this UNet`);
    const want = loraTargetDims(m);
    if (l.inFeatures !== want.inFeatures || l.outFeatures !== want.outFeatures || l.kernelSize !== want.kernelSize) {
      throw new UserError(`${source}: LoRA layer '${path}' is for ${describe(l)}, the UNet's module is ${describe(want)}`);
    }
  }
}

/** Attach adapters read from a file; every layer must name an existing target with matching sizes. */
export function attachLoraLayers(unet: UNet2DConditionModel, layers: ReadonlyMap<string, LoraLayer>, source: string, trainable = false): void {
  checkLoraLayers(unet, layers, source);
  const targets = loraTargets(unet);
  for (const [path, l] of layers) {
    const m = targets.get(path)!;
    const shapes = loraShapes(l);
    m.lora?.down.dispose();
    m.lora?.up.dispose();
    m.lora = {
      down: Tensor.from(l.down, shapes.down, "f32", "lora_A").keep().requireGrad(trainable),
      up: Tensor.from(l.up, shapes.up, "f32", "lora_B").keep().requireGrad(trainable),
      scale: loraScale(l),
    };
  }
}

export function loadLoraFile(unet: UNet2DConditionModel, path: string, trainable = false): number {
  const f = readLoraFile(path);
  attachLoraLayers(unet, f.layers, path, trainable);
  return f.layers.size;
}

/** The attached adapters as host data (for writing peft files and checkpoints). */
export async function exportLora(unet: UNet2DConditionModel): Promise<Map<string, LoraLayer>> {
  const out = new Map<string, LoraLayer>();
  for (const [path, m] of loraTargets(unet)) {
    if (!m.lora) continue;
    const rank = m.lora.down.shape[0];
    out.set(path, {
      down: await m.lora.down.readF32(),
      up: await m.lora.up.readF32(),
      rank,
      ...loraTargetDims(m),
      alpha: m.lora.scale * rank,
    });
  }
  return out;
}

export function removeLora(unet: UNet2DConditionModel): void {
  for (const [, m] of loraTargets(unet)) {
    m.lora?.down.dispose();
    m.lora?.up.dispose();
    m.lora = null;
  }
}
