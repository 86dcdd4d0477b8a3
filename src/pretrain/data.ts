// The data our own InstructPix2Pix is trained and judged on: grounded synthetic edits (2–3 shapes
// of distinct colours, the instruction naming the edited shape by colour and kind; src/data/synth.ts
// with `grounded`). Training streams examples 0, 1, 2, … of TRAIN_SEED; the held-out split is a
// fixed list drawn from another seed, which no training stream ever reads.
import { rgbToPlanar, shapeMask, synthSample, type SynthSample } from "../data/synth.ts";

export const TRAIN_SEED = 1;
export const HELDOUT_SEED = 2;

export interface PretrainExample {
  /** Planar RGB [3, S, S] in [0, 1]. */
  source: Float32Array;
  target: Float32Array;
  /** [S * S], 1 inside the edit region. */
  mask: Uint8Array;
  instruction: string;
  /** Caption of the target scene (the text-to-image stage's prompt). */
  caption: string;
  /** The target's shapes: the words naming each ("red circle") and its pixels [S * S]. */
  objects: { words: string; mask: Uint8Array }[];
  sample: SynthSample;
}

function toExample(s: SynthSample): PretrainExample {
  const { width: W, height: H } = s;
  return {
    source: rgbToPlanar(s.source, W, H),
    target: rgbToPlanar(s.target, W, H),
    mask: s.mask,
    instruction: s.instruction,
    caption: s.caption,
    objects: s.targetScene.shapes.map((o) => ({ words: `${o.color} ${o.kind}`, mask: shapeMask(o, W, H) })),
    sample: s,
  };
}

/** Training example `i` (the stream every stage reads in order). */
export function trainExample(i: number, size: number): PretrainExample {
  return toExample(synthSample(TRAIN_SEED, i, { size, grounded: true }));
}

/** The fixed held-out split: its first `n` examples. */
export function heldOutExamples(n: number, size: number): PretrainExample[] {
  return Array.from({ length: n }, (_, i) => toExample(synthSample(HELDOUT_SEED, i, { size, grounded: true })));
}

/** Area-average a binary [S * S] mask to a [m * m] map (S a multiple of m). */
export function maskToMap(mask: Uint8Array, size: number, mapSide: number): Float32Array {
  const f = size / mapSide;
  if (!Number.isInteger(f)) throw new Error(`maskToMap: ${size} is not a multiple of ${mapSide}`);
  const out = new Float32Array(mapSide * mapSide);
  for (let y = 0; y < size; y++) for (let x = 0; x < size; x++) out[Math.floor(y / f) * mapSide + Math.floor(x / f)] += mask[y * size + x] / (f * f);
  return out;
}
