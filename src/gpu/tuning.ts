// Per-adapter kernel tuning: which tile shapes each op family uses. Software rasterisers (lavapipe)
// prefer register blocking without workgroup memory; real GPUs prefer workgroup-memory tiles.
import type { AdapterDescription, Gpu } from "./device.ts";

export type AdapterClass = "cpu" | "gpu";

export function adapterClass(g: Gpu): AdapterClass {
  return adapterClassOf(g.info);
}

/** The class of an adapter from its description alone (tests feed descriptions of adapters they lack). */
export function adapterClassOf(info: AdapterDescription): AdapterClass {
  const d = `${info.vendor} ${info.architecture} ${info.description}`.toLowerCase();
  if (info.isFallbackAdapter || /llvmpipe|lavapipe|swiftshader|software/.test(d)) return "cpu";
  return "gpu";
}

/** Tuning choices, filled in by each op family and reported by `rl4pix doctor`. */
export const tuningChoices: Record<string, string> = {};

export function recordTuning(family: string, choice: string): void {
  tuningChoices[family] = choice;
}
