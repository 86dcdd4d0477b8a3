// Access to ../shared/goldens (reference outputs of diffusers / transformers / ddpo-pytorch).
import { fileURLToPath } from "node:url";
import { openSafetensors, type SafetensorsFile } from "../src/io/safetensors.ts";

export const GOLDENS = fileURLToPath(new URL("../../shared/goldens/", import.meta.url));
export const TINY_IP2P = GOLDENS + "tiny-ip2p";

const cache = new Map<string, SafetensorsFile>();

export function golden(file: string): SafetensorsFile {
  let f = cache.get(file);
  if (!f) cache.set(file, (f = openSafetensors(GOLDENS + file)));
  return f;
}

export function goldenF32(file: string, name: string): Float32Array {
  return golden(file).toF32(name);
}

export function goldenShape(file: string, name: string): number[] {
  return golden(file).info(name).shape;
}

export function goldenInts(file: string, name: string): number[] {
  return Array.from(golden(file).toI32(name));
}
