// Synthetic editing data (SPEC §7): flat-coloured shapes on simple backgrounds, with instructions of
// the paper's four kinds (insert, remove, replace, transform), the exactly edited target, the exact
// edit mask and a caption of the target. Rendering has no anti-aliasing, so masks are exact.
//
// Guarantees (tested):
// - deterministic for a (seed, index) pair (own PRNG, no Math.random);
// - insert / remove / replace: the mask is exactly the set of pixels where source and target
//   differ (shape colours never occur in backgrounds, replacements always change colour, shapes
//   never overlap);
// - transform: the mask (union of the shape's area before and after, or the whole background for
//   a background change) contains every pixel that differs;
// - every instruction and caption word is in SYNTH_VOCABULARY (lower case, single spaces, no
//   punctuation).

import { mixSeeds, Prng } from "./prng.ts";

export type EditKind = "insert" | "remove" | "replace" | "transform";
export const EDIT_KINDS: readonly EditKind[] = ["insert", "remove", "replace", "transform"];

export type ShapeKind = "circle" | "square" | "triangle" | "star";
export const SHAPES: readonly ShapeKind[] = ["circle", "square", "triangle", "star"];

/** Shape colours: saturated, and none of them can occur in a background. */
export const SHAPE_COLORS = {
  red: [220, 30, 30],
  green: [30, 170, 50],
  blue: [40, 70, 220],
  yellow: [240, 220, 30],
  orange: [245, 140, 20],
  purple: [140, 50, 180],
  pink: [240, 120, 190],
  cyan: [30, 200, 210],
} as const satisfies Record<string, readonly [number, number, number]>;
export type ShapeColor = keyof typeof SHAPE_COLORS;

/** Background colours: neutral or brownish. Gradients and stripes mix two of them. */
export const BACKGROUND_COLORS = {
  white: [245, 245, 245],
  gray: [128, 128, 128],
  black: [25, 25, 25],
  brown: [115, 75, 40],
  beige: [225, 210, 170],
} as const satisfies Record<string, readonly [number, number, number]>;
export type BackgroundColor = keyof typeof BACKGROUND_COLORS;

const SHAPE_COLOR_NAMES = Object.keys(SHAPE_COLORS) as ShapeColor[];
const BG_COLOR_NAMES = Object.keys(BACKGROUND_COLORS) as BackgroundColor[];

export interface Shape {
  kind: ShapeKind;
  color: ShapeColor;
  /** Centre in pixels (continuous coordinates; pixel (x, y) has its centre at (x + 0.5, y + 0.5)). */
  cx: number;
  cy: number;
  /** Radius of the bounding circle in pixels: every shape lies inside it. */
  r: number;
}

export interface Background {
  kind: "flat" | "gradient" | "stripes";
  colors: [BackgroundColor, BackgroundColor];
  /** Gradient / stripe direction. */
  vertical: boolean;
  /** Stripe width in pixels. */
  period: number;
}

export interface Scene {
  width: number;
  height: number;
  background: Background;
  shapes: Shape[];
  /** Grounded scenes: every shape has its own colour (edits keep it so). */
  distinctColors?: boolean;
}

export interface SynthSample {
  id: string;
  kind: EditKind;
  instruction: string;
  /** Caption of the target scene. */
  caption: string;
  width: number;
  height: number;
  sourceScene: Scene;
  targetScene: Scene;
  /** Interleaved RGB [H, W, 3]. */
  source: Uint8Array;
  target: Uint8Array;
  /** [H, W], 1 inside the edit region. */
  mask: Uint8Array;
}

// ---------------------------------------------------------------------------------------------
// Text

const POSITIONS = {
  left: "on the left",
  right: "on the right",
  top: "at the top",
  bottom: "at the bottom",
} as const;
type Position = keyof typeof POSITIONS;

const INSERT_VERBS = ["add", "put", "insert", "draw", "place"] as const;
const REMOVE_TEMPLATES = ["remove the {o}", "delete the {o}", "take away the {o}", "get rid of the {o}", "erase the {o}"];
const REPLACE_TEMPLATES = ["replace the {o} with {n}", "turn the {o} into {n}", "change the {o} into {n}", "swap the {o} for {n}"];
const BIGGER = ["make the {o} bigger", "make the {o} larger", "enlarge the {o}"];
const SMALLER = ["make the {o} smaller", "shrink the {o}"];
const MOVE = ["move the {o} {d}", "shift the {o} {d}"];
const MOVE_DIRS = { left: "to the left", right: "to the right", up: "up", down: "down" } as const;
type MoveDir = keyof typeof MOVE_DIRS;
const RECOLOR = ["make the {o} {c}", "paint the {o} {c}", "color the {o} {c}", "change the color of the {o} to {c}"];
const BG_CHANGE = ["change the background to {c}", "make the background {c}", "paint the background {c}"];

function article(phrase: string): string {
  return /^[aeiou]/.test(phrase) ? `an ${phrase}` : `a ${phrase}`;
}

function fill(template: string, vars: Record<string, string>): string {
  return template.replace(/\{(\w)\}/g, (_, k: string) => vars[k] ?? "");
}

function shapeName(s: Pick<Shape, "kind" | "color">): string {
  return `${s.color} ${s.kind}`;
}

function backgroundPhrase(bg: Background): string {
  const [a, b] = bg.colors;
  if (bg.kind === "flat") return `${a} background`;
  return bg.kind === "gradient" ? `${a} and ${b} gradient background` : `${a} and ${b} striped background`;
}

/** "a red circle and a blue square on a gray background", or "a plain gray background". */
export function captionOf(scene: Scene): string {
  const bg = backgroundPhrase(scene.background);
  if (scene.shapes.length === 0) return `a plain ${bg}`;
  return `${scene.shapes.map((s) => article(shapeName(s))).join(" and ")} on ${article(bg)}`;
}

/** Every word an instruction or caption can contain (sorted, unique). */
export const SYNTH_VOCABULARY: readonly string[] = (() => {
  const words = new Set<string>();
  const add = (text: string) => {
    for (const w of text.replace(/\{\w\}/g, " ").split(/\s+/)) if (w) words.add(w);
  };
  for (const t of [
    ...INSERT_VERBS,
    ...REMOVE_TEMPLATES,
    ...REPLACE_TEMPLATES,
    ...BIGGER,
    ...SMALLER,
    ...MOVE,
    ...RECOLOR,
    ...BG_CHANGE,
    ...Object.values(POSITIONS),
    ...Object.values(MOVE_DIRS),
    ...SHAPES,
    ...SHAPE_COLOR_NAMES,
    ...BG_COLOR_NAMES,
    "a an and on the plain background gradient striped",
  ]) {
    add(t);
  }
  return [...words].sort();
})();

// ---------------------------------------------------------------------------------------------
// Geometry and rendering

const SQUARE_HALF = 0.7; // half side / r: the corners stay inside the bounding circle
const STAR_INNER = 0.45;

function starVertices(s: Shape): [number, number][] {
  const v: [number, number][] = [];
  for (let i = 0; i < 10; i++) {
    const rad = i % 2 === 0 ? s.r : s.r * STAR_INNER;
    const ang = -Math.PI / 2 + (i * Math.PI) / 5;
    v.push([s.cx + rad * Math.cos(ang), s.cy + rad * Math.sin(ang)]);
  }
  return v;
}

function triangleVertices(s: Shape): [number, number][] {
  const v: [number, number][] = [];
  for (let i = 0; i < 3; i++) {
    const ang = -Math.PI / 2 + (i * 2 * Math.PI) / 3;
    v.push([s.cx + s.r * Math.cos(ang), s.cy + s.r * Math.sin(ang)]);
  }
  return v;
}

/** Even-odd point-in-polygon test. */
function inPolygon(px: number, py: number, v: [number, number][]): boolean {
  let inside = false;
  for (let i = 0, j = v.length - 1; i < v.length; j = i++) {
    const [xi, yi] = v[i]!;
    const [xj, yj] = v[j]!;
    if (yi > py !== yj > py && px < ((xj - xi) * (py - yi)) / (yj - yi) + xi) inside = !inside;
  }
  return inside;
}

/** A predicate telling whether the pixel centre (x + 0.5, y + 0.5) is inside the shape. */
function shapeTest(s: Shape): (x: number, y: number) => boolean {
  switch (s.kind) {
    case "circle": {
      const r2 = s.r * s.r;
      return (x, y) => {
        const dx = x + 0.5 - s.cx;
        const dy = y + 0.5 - s.cy;
        return dx * dx + dy * dy <= r2;
      };
    }
    case "square": {
      const h = s.r * SQUARE_HALF;
      return (x, y) => Math.abs(x + 0.5 - s.cx) <= h && Math.abs(y + 0.5 - s.cy) <= h;
    }
    case "triangle": {
      const v = triangleVertices(s);
      return (x, y) => inPolygon(x + 0.5, y + 0.5, v);
    }
    case "star": {
      const v = starVertices(s);
      return (x, y) => inPolygon(x + 0.5, y + 0.5, v);
    }
  }
}

/** Rasterise one shape: [H, W] of 0/1. */
export function shapeMask(s: Shape, width: number, height: number): Uint8Array {
  const m = new Uint8Array(width * height);
  const test = shapeTest(s);
  const x0 = Math.max(0, Math.floor(s.cx - s.r - 1));
  const x1 = Math.min(width - 1, Math.ceil(s.cx + s.r + 1));
  const y0 = Math.max(0, Math.floor(s.cy - s.r - 1));
  const y1 = Math.min(height - 1, Math.ceil(s.cy + s.r + 1));
  for (let y = y0; y <= y1; y++) for (let x = x0; x <= x1; x++) if (test(x, y)) m[y * width + x] = 1;
  return m;
}

/** The background's colour along its direction: [n, 3] for n = height (vertical) or width. */
function backgroundLine(bg: Background, width: number, height: number): Uint8Array {
  const a = BACKGROUND_COLORS[bg.colors[0]];
  const b = BACKGROUND_COLORS[bg.colors[1]];
  const n = bg.vertical ? height : width;
  const line = new Uint8Array(3 * n);
  for (let t = 0; t < n; t++) {
    for (let c = 0; c < 3; c++) {
      let v: number;
      if (bg.kind === "flat") v = a[c]!;
      else if (bg.kind === "stripes") v = Math.floor(t / bg.period) % 2 === 0 ? a[c]! : b[c]!;
      else v = Math.round(a[c]! + (b[c]! - a[c]!) * (n > 1 ? t / (n - 1) : 0));
      line[3 * t + c] = v;
    }
  }
  return line;
}

/** Render a scene: interleaved RGB [H, W, 3]. */
export function renderScene(scene: Scene): Uint8Array {
  const { width, height } = scene;
  const img = new Uint8Array(width * height * 3);
  const line = backgroundLine(scene.background, width, height);
  const vertical = scene.background.vertical;
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const t = 3 * (vertical ? y : x);
      const o = 3 * (y * width + x);
      img[o] = line[t]!;
      img[o + 1] = line[t + 1]!;
      img[o + 2] = line[t + 2]!;
    }
  }
  for (const s of scene.shapes) {
    const m = shapeMask(s, width, height);
    const c = SHAPE_COLORS[s.color];
    for (let i = 0; i < m.length; i++) {
      if (m[i]) {
        img[3 * i] = c[0];
        img[3 * i + 1] = c[1];
        img[3 * i + 2] = c[2];
      }
    }
  }
  return img;
}

// ---------------------------------------------------------------------------------------------
// Scene and edit generation

const GAP = 2; // pixels between bounding circles

function fits(s: Shape, scene: Scene, ignore?: Shape): boolean {
  if (s.cx - s.r < 1 || s.cy - s.r < 1 || s.cx + s.r > scene.width - 1 || s.cy + s.r > scene.height - 1) return false;
  for (const o of scene.shapes) {
    if (o === ignore) continue;
    if (Math.hypot(o.cx - s.cx, o.cy - s.cy) < o.r + s.r + GAP) return false;
  }
  return true;
}

function minRadius(scene: Scene): number {
  return Math.max(3, Math.min(scene.width, scene.height) * 0.1);
}

function maxRadius(scene: Scene): number {
  return Math.max(minRadius(scene), Math.min(scene.width, scene.height) * 0.2);
}

function randomRadius(rng: Prng, scene: Scene): number {
  return Math.round(rng.range(minRadius(scene), maxRadius(scene)) * 2) / 2;
}

/** Place a new shape (kind, colour given) without overlap, optionally in a region. */
function place(
  rng: Prng,
  scene: Scene,
  kind: ShapeKind,
  color: ShapeColor,
  region?: Position,
): Shape | null {
  const { width: w, height: h } = scene;
  for (let attempt = 0; attempt < 60; attempt++) {
    const r = attempt < 40 ? randomRadius(rng, scene) : minRadius(scene);
    let xlo = r + 1;
    let xhi = w - 1 - r;
    let ylo = r + 1;
    let yhi = h - 1 - r;
    if (region === "left") xhi = Math.min(xhi, w / 3);
    if (region === "right") xlo = Math.max(xlo, (2 * w) / 3);
    if (region === "top") yhi = Math.min(yhi, h / 3);
    if (region === "bottom") ylo = Math.max(ylo, (2 * h) / 3);
    if (xhi < xlo || yhi < ylo) continue;
    const s: Shape = { kind, color, r, cx: Math.round(rng.range(xlo, xhi) * 2) / 2, cy: Math.round(rng.range(ylo, yhi) * 2) / 2 };
    if (fits(s, scene)) return s;
  }
  return null;
}

/**
 * (kind, colour) pairs not in the scene yet. In a grounded scene (`distinctColors`) a new shape's
 * colour is also unused, so a colour word alone names one shape.
 */
function unusedPairs(scene: Scene): { kind: ShapeKind; color: ShapeColor }[] {
  const used = new Set(scene.shapes.map((s) => shapeName(s)));
  const usedColors = new Set(scene.shapes.map((s) => s.color));
  const out: { kind: ShapeKind; color: ShapeColor }[] = [];
  for (const color of SHAPE_COLOR_NAMES) {
    if (scene.distinctColors && usedColors.has(color)) continue;
    for (const kind of SHAPES) if (!used.has(`${color} ${kind}`)) out.push({ kind, color });
  }
  return out;
}

function randomBackground(rng: Prng, size: number): Background {
  const kind = rng.pick(["flat", "flat", "gradient", "stripes"] as const);
  const [a, b] = rng.shuffle(BG_COLOR_NAMES);
  return {
    kind,
    colors: [a!, kind === "flat" ? a! : b!],
    vertical: rng.next() < 0.5,
    period: Math.max(2, Math.round(size / rng.pick([4, 6, 8]))),
  };
}

/** A random scene with `count` non-overlapping shapes with distinct (colour, kind) names. */
function randomScene(rng: Prng, width: number, height: number, count: number, distinctColors = false): Scene {
  const scene: Scene = { width, height, background: randomBackground(rng, Math.min(width, height)), shapes: [], ...(distinctColors ? { distinctColors } : {}) };
  for (let i = 0; i < count; i++) {
    const { kind, color } = rng.pick(unusedPairs(scene));
    const s = place(rng, scene, kind, color);
    if (s) scene.shapes.push(s);
  }
  return scene;
}

function cloneScene(s: Scene): Scene {
  return { ...s, background: { ...s.background, colors: [...s.background.colors] }, shapes: s.shapes.map((x) => ({ ...x })) };
}

interface Edit {
  target: Scene;
  instruction: string;
  mask: Uint8Array;
}

function union(a: Uint8Array, b: Uint8Array): Uint8Array {
  const m = new Uint8Array(a.length);
  for (let i = 0; i < a.length; i++) m[i] = a[i]! | b[i]!;
  return m;
}

function insertEdit(rng: Prng, src: Scene): Edit | null {
  if (src.shapes.length >= 3) return null;
  const { kind, color } = rng.pick(unusedPairs(src));
  const region = rng.next() < 0.4 ? rng.pick(Object.keys(POSITIONS) as Position[]) : undefined;
  const s = place(rng, src, kind, color, region);
  if (!s) return null;
  const target = cloneScene(src);
  target.shapes.push(s);
  const verb = rng.pick(INSERT_VERBS);
  const instruction = `${verb} ${article(shapeName(s))}${region ? ` ${POSITIONS[region]}` : ""}`;
  return { target, instruction, mask: shapeMask(s, src.width, src.height) };
}

function removeEdit(rng: Prng, src: Scene): Edit | null {
  if (src.shapes.length === 0) return null;
  const i = rng.int(0, src.shapes.length - 1);
  const s = src.shapes[i]!;
  const target = cloneScene(src);
  target.shapes.splice(i, 1);
  return { target, instruction: fill(rng.pick(REMOVE_TEMPLATES), { o: shapeName(s) }), mask: shapeMask(s, src.width, src.height) };
}

function replaceEdit(rng: Prng, src: Scene): Edit | null {
  if (src.shapes.length === 0) return null;
  const i = rng.int(0, src.shapes.length - 1);
  const old = src.shapes[i]!;
  // A new shape kind and a new colour (so every pixel of both areas changes).
  const choices = unusedPairs(src).filter((p) => p.kind !== old.kind && p.color !== old.color);
  if (choices.length === 0) return null;
  const { kind, color } = rng.pick(choices);
  const target = cloneScene(src);
  const s: Shape = { ...old, kind, color };
  target.shapes[i] = s;
  const instruction = fill(rng.pick(REPLACE_TEMPLATES), { o: shapeName(old), n: article(shapeName(s)) });
  return { target, instruction, mask: union(shapeMask(old, src.width, src.height), shapeMask(s, src.width, src.height)) };
}

function transformEdit(rng: Prng, src: Scene): Edit | null {
  const { width: w, height: h } = src;
  const variants = rng.shuffle(["bigger", "smaller", "move", "recolor", "background"] as const);
  for (const v of variants) {
    if (v === "background") {
      const current = src.background;
      const options = BG_COLOR_NAMES.filter((c) => !(current.kind === "flat" && current.colors[0] === c));
      const c = rng.pick(options);
      const target = cloneScene(src);
      target.background = { kind: "flat", colors: [c, c], vertical: false, period: current.period };
      // Edit region: everything that is not a shape.
      const mask = new Uint8Array(w * h).fill(1);
      for (const s of src.shapes) {
        const m = shapeMask(s, w, h);
        for (let k = 0; k < m.length; k++) if (m[k]) mask[k] = 0;
      }
      return { target, instruction: fill(rng.pick(BG_CHANGE), { c }), mask };
    }
    if (src.shapes.length === 0) continue;
    const i = rng.int(0, src.shapes.length - 1);
    const old = src.shapes[i]!;
    let s: Shape | null = null;
    let instruction = "";
    if (v === "bigger") {
      s = { ...old, r: Math.round(old.r * 1.4 * 2) / 2 };
      instruction = fill(rng.pick(BIGGER), { o: shapeName(old) });
    } else if (v === "smaller") {
      const r = Math.round((old.r / 1.4) * 2) / 2;
      if (r < 3) continue;
      s = { ...old, r };
      instruction = fill(rng.pick(SMALLER), { o: shapeName(old) });
    } else if (v === "move") {
      const d = rng.pick(Object.keys(MOVE_DIRS) as MoveDir[]);
      const step = Math.round(Math.min(w, h) * 0.25);
      const dx = d === "left" ? -step : d === "right" ? step : 0;
      const dy = d === "up" ? -step : d === "down" ? step : 0;
      s = { ...old, cx: old.cx + dx, cy: old.cy + dy };
      instruction = fill(rng.pick(MOVE), { o: shapeName(old), d: MOVE_DIRS[d] });
    } else {
      const taken = new Set(src.shapes.map((x) => shapeName(x)));
      const takenColors = new Set(src.shapes.map((x) => x.color));
      const options = SHAPE_COLOR_NAMES.filter((c) => c !== old.color && !taken.has(`${c} ${old.kind}`) && !(src.distinctColors && takenColors.has(c)));
      if (options.length === 0) continue;
      const c = rng.pick(options);
      s = { ...old, color: c };
      instruction = fill(rng.pick(RECOLOR), { o: shapeName(old), c });
    }
    if (!fits(s, src, old)) continue;
    const target = cloneScene(src);
    target.shapes[i] = s;
    return { target, instruction, mask: union(shapeMask(old, w, h), shapeMask(s, w, h)) };
  }
  return null;
}

const EDITORS: Record<EditKind, (rng: Prng, src: Scene) => Edit | null> = {
  insert: insertEdit,
  remove: removeEdit,
  replace: replaceEdit,
  transform: transformEdit,
};

export interface SynthOptions {
  /** Image width and height in pixels (default 64, at least 16). */
  size?: number;
  /**
   * Scenes that force grounding: 2–3 shapes of distinct colours in every source (1–2 before an
   * insert), so an instruction naming "the red circle" is the only way to know where to edit.
   */
  grounded?: boolean;
}

/**
 * Sample `index` of the synthetic dataset with `seed`: the edit kind cycles through insert,
 * remove, replace, transform (index mod 4); everything else is drawn from the (seed, index) PRNG.
 */
export function synthSample(seed: number, index: number, opts: SynthOptions = {}): SynthSample {
  const size = opts.size ?? 64;
  if (!Number.isInteger(size) || size < 16) throw new Error(`synthSample: size must be an integer >= 16, got ${size}`);
  if (!Number.isInteger(index) || index < 0) throw new Error(`synthSample: bad index ${index}`);
  const kind = EDIT_KINDS[index % 4]!;
  const grounded = Boolean(opts.grounded);
  const rng = new Prng(mixSeeds(seed, index));
  for (let attempt = 0; ; attempt++) {
    const count = grounded ? (kind === "insert" ? rng.int(1, 2) : rng.int(2, 3)) : kind === "insert" ? rng.int(0, 2) : rng.int(1, 3);
    const src = randomScene(rng, size, size, count, grounded);
    // A grounded scene promises its shape count: when placement failed, redraw.
    const edit = grounded && src.shapes.length < count ? null : EDITORS[kind](rng, src);
    if (!edit) {
      if (attempt > 200) throw new Error(`synthSample: could not build a ${kind} edit (seed ${seed}, index ${index})`);
      continue;
    }
    return {
      id: `synth-${seed}-${String(index).padStart(5, "0")}`,
      kind,
      instruction: edit.instruction,
      caption: captionOf(edit.target),
      width: size,
      height: size,
      sourceScene: src,
      targetScene: edit.target,
      source: renderScene(src),
      target: renderScene(edit.target),
      mask: edit.mask,
    };
  }
}

/** Interleaved 8-bit RGB [H, W, 3] → planar float [3, H, W] in [0, 1]. */
export function rgbToPlanar(rgb: Uint8Array, width: number, height: number): Float32Array {
  const n = width * height;
  const out = new Float32Array(3 * n);
  for (let i = 0; i < n; i++) {
    out[i] = rgb[3 * i]! / 255;
    out[n + i] = rgb[3 * i + 1]! / 255;
    out[2 * n + i] = rgb[3 * i + 2]! / 255;
  }
  return out;
}
