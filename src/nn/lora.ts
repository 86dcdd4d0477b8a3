// LoRA adapters on the UNet's attention projections (to_q, to_k, to_v, to_out.0 of every attn1 and
// attn2), as ddpo-pytorch / diffusers set them up: down ~ N(0, (1/r)^2), up = 0, scale alpha/r; on
// request (peft's target_modules) also on the transformer blocks' feed-forward linears (ff.net.0.proj,
// ff.net.2).
import { Tensor } from "../tensor/tensor.ts";
import { UserError } from "../errors.ts";
import { type LoraLayer, loraScale, readLoraFile } from "../io/lora_format.ts";
import { Linear } from "./layers.ts";
import { FeedForward } from "./transformer.ts";
import type { UNet2DConditionModel } from "./unet.ts";
import { hostRandn } from "./load.ts";

/**
 * Every LoRA target of the UNet by module path (e.g. `…attn2.to_out.0`, `…ff.net.2`): the attention
 * projections first, then the feed-forward linears, so that adding the latter left every attention
 * adapter's initialisation index (and so its weights) as it was.
 */
export function loraTargets(unet: UNet2DConditionModel): Map<string, Linear> {
  const out = new Map<string, Linear>();
  for (const [path, attn] of unet.attentionModules()) {
    for (const [name, lin] of attn.loraTargets()) out.set(`${path}.${name}`, lin);
  }
  for (const [path, m] of unet.namedModules()) {
    if (m instanceof FeedForward) for (const [name, lin] of m.loraTargets()) out.set(`${path}.${name}`, lin);
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
  for (const [path, lin] of loraTargets(unet)) {
    const index = i++;
    lin.lora?.down.dispose();
    lin.lora?.up.dispose();
    lin.lora = null;
    if (!isLoraTarget(path, targets)) continue;
    const down = hostRandn(rank * lin.inFeatures, (seed * 65537 + index * 2654435761) >>> 0).map((v) => v / rank);
    lin.lora = {
      down: Tensor.from(down, [rank, lin.inFeatures], "f32", "lora_A").keep().requireGrad(),
      up: Tensor.from(new Float32Array(lin.outFeatures * rank), [lin.outFeatures, rank], "f32", "lora_B").keep().requireGrad(),
      scale: alpha / rank,
    };
  }
}

/** Check that every peft-style target names at least one module of this UNet (host only). Throws a UserError. */
export function checkLoraTargets(unet: UNet2DConditionModel, targets: readonly string[]): void {
  const paths = [...loraTargets(unet).keys()];
  const unmatched = targets.find((t) => !paths.some((p) => isLoraTarget(p, [t])));
  if (unmatched !== undefined) throw new UserError(`"lora.target_modules": '${unmatched}' names no LoRA target of this UNet (attention projection or feed-forward linear)`);
}

/**
 * Check that every layer names an existing target with matching sizes (host only: commands run it
 * before the GPU starts). Throws a UserError naming `source`.
 */
export function checkLoraLayers(unet: UNet2DConditionModel, layers: ReadonlyMap<string, LoraLayer>, source: string): void {
  const targets = loraTargets(unet);
  for (const [path, l] of layers) {
    const lin = targets.get(path);
    if (!lin) throw new UserError(`${source}: LoRA layer '${path}' is not a LoRA target of this UNet (attention projection or feed-forward linear)`);
    if (l.inFeatures !== lin.inFeatures || l.outFeatures !== lin.outFeatures) {
      throw new UserError(`${source}: LoRA layer '${path}' is ${l.outFeatures}x${l.inFeatures}, the UNet's projection is ${lin.outFeatures}x${lin.inFeatures}`);
    }
  }
}

/** Attach adapters read from a file; every layer must name an existing target with matching sizes. */
export function attachLoraLayers(unet: UNet2DConditionModel, layers: ReadonlyMap<string, LoraLayer>, source: string, trainable = false): void {
  checkLoraLayers(unet, layers, source);
  const targets = loraTargets(unet);
  for (const [path, l] of layers) {
    const lin = targets.get(path)!;
    lin.lora?.down.dispose();
    lin.lora?.up.dispose();
    lin.lora = {
      down: Tensor.from(l.down, [l.rank, l.inFeatures], "f32", "lora_A").keep().requireGrad(trainable),
      up: Tensor.from(l.up, [l.outFeatures, l.rank], "f32", "lora_B").keep().requireGrad(trainable),
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
  for (const [path, lin] of loraTargets(unet)) {
    if (!lin.lora) continue;
    const rank = lin.lora.down.shape[0];
    out.set(path, {
      down: await lin.lora.down.readF32(),
      up: await lin.lora.up.readF32(),
      rank,
      inFeatures: lin.inFeatures,
      outFeatures: lin.outFeatures,
      alpha: lin.lora.scale * rank,
    });
  }
  return out;
}

export function removeLora(unet: UNet2DConditionModel): void {
  for (const [, lin] of loraTargets(unet)) {
    lin.lora?.down.dispose();
    lin.lora?.up.dispose();
    lin.lora = null;
  }
}
