// The conv2d GPU passes without autograd: the forward and the input gradient (one implicit GEMM,
// two index maps) and the weight gradient, each split into binding-sized passes. Two kernel
// families: register-blocked over a prepared NHWC source (CPU rasterisers) and workgroup-memory
// tiles straight over NCHW (real GPUs); conv_tuning.ts picks one per adapter. f16 activations
// (an f16 source, needs shader-f16) are read as f16 and give an f16 result, summed in f32 and
// rounded once; the weight panels are f32 whatever the weight's dtype.
import regSrc from "../../../wgsl/conv2d.wgsl" with { type: "text" };
import prepSrc from "../../../wgsl/conv2d_prep.wgsl" with { type: "text" };
import tiledSrc from "../../../wgsl/conv2d_tiled.wgsl" with { type: "text" };
import weightsSrc from "../../../wgsl/conv2d_weights.wgsl" with { type: "text" };
import wgradSrc from "../../../wgsl/conv2d_wgrad.wgsl" with { type: "text" };
import im2colSrc from "../../../wgsl/conv2d_im2col.wgsl" with { type: "text" };
import splitkSrc from "../../../wgsl/conv2d_splitk.wgsl" with { type: "text" };
import { gemmInto } from "./matmul_gemm.ts";
import { castRaw } from "./cast.ts";
import { matmulTuning } from "./matmul_tuning.ts";
import { gpu, type GpuBinding, type Uniforms } from "../../gpu/device.ts";
import { Tensor, numel } from "../tensor.ts";
import { keep } from "../scope.ts";
import { type ConvGeometry, type ConvPass, bindingLimitBytes, planPasses, windowBinding } from "./conv_geometry.ts";
import { type RegisterTiles, type SharedTiles, convTuning } from "./conv_tuning.ts";
import { type SplitProblem, chooseSplit, recordSplit } from "./split_k.ts";

const roundUp = (v: number, m: number) => Math.ceil(v / m) * m;

export type GemmMode = "forward" | "inputGrad";

/** The GEMM view of a forward (rows = Cout, channels = Cin) or an input gradient (the reverse). */
function gemmView(mode: GemmMode, geo: ConvGeometry) {
  const taps = geo.kh * geo.kw;
  return mode === "forward"
    ? { m: geo.cout, c: geo.cin, srcH: geo.h, srcW: geo.w, dstH: geo.ho, dstW: geo.wo, strideM: geo.cin * taps, strideC: taps }
    : { m: geo.cin, c: geo.cout, srcH: geo.ho, srcW: geo.wo, dstH: geo.h, dstW: geo.w, strideM: taps, strideC: geo.cin * taps };
}

interface PanelLayout {
  mPad: number;
  cPad: number;
  /** Output element strides of tap, row and channel. */
  tap: number;
  row: number;
  chan: number;
  flip: boolean;
}

let cacheFrozen = true;

/**
 * Keep the re-laid-out panels of frozen weights (`!requiresGrad`) with the weight's storage instead
 * of rebuilding them on every call (on by default; costs the panels' memory while the weight lives).
 */
export function setConvWeightCache(on: boolean): void {
  cacheFrozen = on;
}

/**
 * The weight panels for a call; the caller disposes the returned handle. Frozen weights are never
 * modified in place, so their panels are built once and cached on the weight's storage (released
 * with it).
 */
function weightPanels(weight: Tensor, v: ReturnType<typeof gemmView>, taps: number, l: PanelLayout): Tensor {
  // A weight that is (or was) trained changes in place: its storage is marked mutable, and the
  // backward's saved handle on it (which does not require grad itself) must not cache either.
  if (!cacheFrozen || weight.requiresGrad || weight.storage.mutable) return buildPanels(weight, v, taps, l);
  const key = `conv2d.panels|${v.m}|${v.c}|${v.strideM}|${v.strideC}|${taps}|${l.mPad}|${l.cPad}|${l.tap}|${l.row}|${l.chan}|${l.flip}`;
  const st = weight.storage.derive(key, () => {
    const t = keep(buildPanels(weight, v, taps, l));
    const s = t.storage;
    s.refs++;
    t.dispose();
    return s;
  });
  st.refs++;
  return new Tensor(st, [taps * l.mPad * l.cPad], "f32", "conv2d.weight_panels", false);
}

/** Weights [Cout, Cin, kh, kw] (f32 or f16) re-laid out as zero-padded f32 panels. */
function buildPanels(weight: Tensor, v: ReturnType<typeof gemmView>, taps: number, l: PanelLayout): Tensor {
  const g = gpu();
  const out = Tensor.empty([taps * l.mPad * l.cPad], "f32", "conv2d.weight_panels");
  const c4 = l.cPad / 4;
  const wx = Math.min(64, c4 & -c4); // a power of two dividing c4: no idle lanes
  const wy = 64 / wx;
  const rows = 2; // rows per invocation
  const k = g.kernel("conv2d_weights", weightsSrc, { F16: weight.dtype === "f16", FLIP: l.flip, C_CONTIGUOUS: l.chan === 1, WX: wx, WY: wy, ROWS: rows });
  const u: Uniforms = ["u".repeat(12), v.m, v.c, taps, c4, v.strideM, v.strideC, l.tap, l.row, l.chan, l.mPad, 0, 0];
  g.dispatch(k, [weight.binding(), out.binding()], u, [c4 / wx, Math.ceil(l.mPad / (wy * rows)), 1]);
  return out;
}

/**
 * Forward (`src` = x [N,Cin,H,W] -> [N,Cout,Ho,Wo], plus bias) or input gradient (`src` = dy
 * [N,Cout,Ho,Wo] -> dx [N,Cin,H,W], no bias), in src's dtype (f32, or f16 activations).
 * Accumulates in f32; weights may be f16.
 */
export function convGemm(mode: GemmMode, src: Tensor, weight: Tensor, bias: Tensor | null, geo: ConvGeometry): Tensor {
  const tiles = convTuning(gpu()).forward;
  const dstShape = mode === "forward" ? [geo.n, geo.cout, geo.ho, geo.wo] : [geo.n, geo.cin, geo.h, geo.w];
  const dtype = src.dtype as "f32" | "f16";
  const label = mode === "forward" ? "conv2d" : "conv2d.grad_input";
  if (numel(dstShape) === 0) return Tensor.empty(dstShape, dtype, label);
  // Only the tiled passes split K here (the im2col forward's product splits as a matmul).
  if (tiles.kind === "register") recordSplit("conv", 1);
  if (mode === "forward" && im2colApplies(bias, geo)) {
    const dst = Tensor.empty(dstShape, dtype, label);
    convIm2col(src, weight, bias, geo, dst);
    return dst;
  }
  const out = tiles.kind === "register"
    ? convRegister(mode, src, weight, bias, geo, dstShape, label, tiles)
    : convTiled(mode, src, weight, bias, geo, dstShape, label, tiles);
  if (out.dtype === dtype) return out;
  // f16 activations whose passes split the reduction channels were summed into an f32 result
  // (each later pass adds into it): round it once here.
  const rounded = castRaw(out, dtype);
  out.dispose();
  return rounded;
}

/**
 * The dtype a pass-wise conv writes: the source's, except that an f16 result whose passes split
 * the reduction channels (later passes add into it) is summed in f32 and rounded once afterwards.
 */
function passDtype(src: Tensor, passes: ConvPass[]): "f32" | "f16" {
  return src.dtype === "f16" && !passes.some((ps) => ps.c0 > 0) ? "f16" : "f32";
}

let im2colEnabled = true;
const IM2COL_MIN_COUT = 256;

/** Use the im2col + matmul form of the forward on CPU adapters where it applies (tests and benchmarks compare). */
export function setConvIm2col(on: boolean): void {
  im2colEnabled = on;
}

/** Whether the forward of this geometry runs as im2col + matmul (bias, when given, f32). */
export function convForwardUsesIm2col(geo: ConvGeometry): boolean {
  const g = gpu();
  const K = geo.cin * geo.kh * geo.kw;
  const limit = im2colElementLimit();
  // The patch copy costs about as much as Cout / 30 of the product's multiply-adds per element:
  // worth it for wide outputs only (measured on lavapipe: 1.1-1.2x at Cout 320-1280, slower at 32).
  if (!im2colEnabled || convTuning(g).forward.kind !== "register" || matmulTuning(g).kind !== "register") return false;
  if (K % 4 !== 0 || geo.cout < IM2COL_MIN_COUT) return false;
  return geo.cin * geo.h * geo.w <= limit && geo.cout * geo.ho * geo.wo <= limit && K * geo.wo <= limit;
}

/** Elements one binding of the patch buffer (and of the source and output windows) may hold. */
function im2colElementLimit(): number {
  return Math.floor((bindingLimitBytes() - 2 * (gpu().limits.minStorageBufferOffsetAlignment ?? 256)) / 4);
}

/** Whether this forward runs as im2col + matmul: the geometry allows it and the bias (if any) is f32. */
function im2colApplies(bias: Tensor | null, geo: ConvGeometry): boolean {
  return !(bias && bias.dtype !== "f32") && convForwardUsesIm2col(geo);
}

/**
 * The forward as im2col + matmul (CPU adapters): the patches of a chunk of output rows
 * [pixels, K = Cin * kh * kw] times the weight in torch's layout [Cout, K] (f32 or f16, no copy),
 * stored transposed straight into the NCHW output with the bias fused. Both operands are contiguous
 * along K, so the register matmul may read 4 k at a time (matmul_k4.wgsl, f16 weights); K % 4 == 0
 * is required. Chunks
 * of images (or of output rows within an image) keep the patch buffer under the binding limit.
 * f16 activations: the patches are f16 (an exact copy) and the product is written as f16, summed in
 * f32 over the whole K (no chunk of K: one rounding). Only where `im2colApplies`.
 */
function convIm2col(x: Tensor, weight: Tensor, bias: Tensor | null, geo: ConvGeometry, dst: Tensor): void {
  const g = gpu();
  const taps = geo.kh * geo.kw;
  const K = geo.cin * taps;
  const plane = geo.ho * geo.wo;
  const limit = im2colElementLimit();
  const srcImg = geo.cin * geo.h * geo.w;
  const dstImg = geo.cout * plane;
  const half = x.dtype === "f16";
  const rowsPerChunk = Math.min(geo.ho, Math.floor(limit / (K * geo.wo)));
  const imgsPerChunk = rowsPerChunk === geo.ho ? Math.max(1, Math.min(Math.floor(limit / (K * plane)), Math.floor(limit / srcImg), Math.floor(limit / dstImg))) : 1;
  const kernel = g.kernel("conv2d_im2col", im2colSrc, { SRC_F16: half });
  const w2 = new Tensor(weight.storage, [geo.cout, K], weight.dtype, weight.label, false); // a view of the weight
  weight.storage.refs++;
  try {
    for (let n0 = 0; n0 < geo.n; n0 += imgsPerChunk) {
      const nc = Math.min(imgsPerChunk, geo.n - n0);
      const s = windowBinding(x, n0 * srcImg, nc * srcImg);
      const d = windowBinding(dst, n0 * dstImg, nc * dstImg);
      for (let y0 = 0; y0 < geo.ho; y0 += rowsPerChunk) {
        const rows = Math.min(rowsPerChunk, geo.ho - y0);
        const cols = Tensor.empty([nc, rows * geo.wo, K], x.dtype, "conv2d.im2col");
        const u: Uniforms = ["u".repeat(16), geo.cin, geo.h, geo.w, geo.wo, geo.kh, geo.kw, geo.sh, geo.sw, geo.pt, geo.pl, s.skip, y0, rows, 0, 0, 0];
        for (let z0 = 0; z0 < nc * geo.cin; z0 += g.maxGroupsPerDim) {
          // (z0 > 0 only for more than 65535 image-channels: never with the chunk sizes above)
          g.dispatch(kernel, [s.binding, cols.binding()], u, [Math.ceil(geo.wo / 64), rows, Math.min(g.maxGroupsPerDim, nc * geo.cin - z0)]);
        }
        // C[i][q][co] -> dst[n0 + i][co][y0 * wo + q]
        gemmInto(cols, w2, { transB: true, bias, op: "conv2d" }, { binding: d.binding, offset: d.skip + y0 * geo.wo, sz: dstImg, sm: 1, sn: plane, dtype: dst.dtype as "f32" | "f16" });
        cols.dispose();
      }
    }
  } finally {
    w2.dispose();
  }
}

/** The register-blocked passes; returns the result [N, M, dstH, dstW] in `passDtype`. */
function convRegister(mode: GemmMode, src: Tensor, weight: Tensor, bias: Tensor | null, geo: ConvGeometry, dstShape: number[], label: string, tiles: RegisterTiles): Tensor {
  const g = gpu();
  const v = gemmView(mode, geo);
  // At most 8 rows (conv_out's 4 channels): 8-row tiles waste half as many lanes (measured 6.9 ->
  // 4.4 ms for 32 -> 4 channels at 32x32, batch 3).
  const t = v.m <= 8 && tiles.subgroup === 8 && tiles.tm > 8 ? { ...tiles, tm: 8 } : tiles;
  const taps = geo.kh * geo.kw;
  // The prepared source: the forward pads x; the input gradient dilates dy by the stride and pads
  // it by k - 1 - pad, turning the transposed conv into a stride-1 conv with the rotated kernel.
  const fwd = mode === "forward";
  const ph = fwd ? (geo.ho - 1) * geo.sh + geo.kh : geo.h + geo.kh - 1;
  const pw = fwd ? (geo.wo - 1) * geo.sw + geo.kw : geo.w + geo.kw - 1;
  const [offY, offX] = fwd ? [geo.pt, geo.pl] : [geo.kh - 1 - geo.pt, geo.kw - 1 - geo.pl];
  const [dilY, dilX] = fwd ? [1, 1] : [geo.sh, geo.sw];
  const [convSh, convSw] = fwd ? [geo.sh, geo.sw] : [1, 1];
  const mPad = roundUp(v.m, t.tm);
  const cPad = roundUp(v.c, 8);
  const panels = weightPanels(weight, v, taps, { mPad, cPad, tap: mPad * cPad, row: cPad, chan: 1, flip: !fwd }); // [taps, mPad, cPad]
  const dstPlane = v.dstH * v.dstW;
  // Small planes (the 8x8 and 16x16 levels) get smaller workgroups rather than idle lanes.
  let wg = t.wg;
  while (wg > Math.max(8, t.subgroup) && (wg / 2) * t.tn >= dstPlane) wg /= 2;
  const srcPlane = v.srcH * v.srcW;
  const prepPlane = ph * pw;
  const passes = planPasses(geo.n, v.m, v.c, Math.max(prepPlane, srcPlane), dstPlane, t.tm, 8, "conv2d");
  const dst = Tensor.empty(dstShape, passDtype(src, passes), label);
  const half = { SRC_F16: src.dtype === "f16", DST_F16: dst.dtype === "f16" };
  const kernel = g.kernel("conv2d", regSrc, {
    WG: wg, TM: t.tm, TN: t.tn, SUBGROUPS: t.subgroup > 0, SG: t.subgroup || 1,
    BIAS_F16: bias?.dtype === "f16", ...half, HALF: half.SRC_F16 || half.DST_F16 || bias?.dtype === "f16",
  });
  let prepWg = 8;
  while (prepWg < 64 && prepWg < pw) prepWg *= 2;
  const prep = g.kernel("conv2d_prep", prepSrc, { DILATED: !fwd, WG: prepWg, SRC_F16: half.SRC_F16 });
  for (const ps of passes) {
    const ccPad = roundUp(ps.cc, 8);
    const prepared = Tensor.empty([ps.nc, ph, pw, ccPad], src.dtype, "conv2d.prepared"); // NHWC, zero-padded, src's dtype
    const s = windowBinding(src, (ps.n0 * v.c + ps.c0) * srcPlane, ((ps.nc - 1) * v.c + ps.cc) * srcPlane);
    const cp4 = ccPad / 4;
    const perDispatch = Math.max(1, Math.floor(g.maxGroupsPerDim / cp4)); // images per prep dispatch (grid z)
    for (let i0 = 0; i0 < ps.nc; i0 += perDispatch) {
      const u: Uniforms = ["uuuuuuuuiiuuuuuu", ps.cc, cp4, v.srcH, v.srcW, ph, pw, dilY, dilX, offY, offX, s.skip, v.c * srcPlane, i0, 0, 0, 0];
      g.dispatch(prep, [s.binding, prepared.binding()], u, [Math.ceil(pw / prepWg), ph, Math.min(perDispatch, ps.nc - i0) * cp4]);
    }
    const d = windowBinding(dst, (ps.n0 * v.m + ps.m0) * dstPlane, ((ps.nc - 1) * v.m + ps.mc) * dstPlane);
    const u: Uniforms = [
      "u".repeat(20),
      ps.mc, ccPad / 8, geo.kh, geo.kw,
      pw, v.dstH, v.dstW, convSh,
      convSw, (ph * pw * ccPad) / 4, d.skip, v.m * dstPlane,
      (ps.m0 * cPad + ps.c0) / 4, (mPad * cPad) / 4, cPad / 4, ps.m0,
      ps.c0 > 0 ? 1 : 0, bias ? 1 : 0, 0, 0,
    ];
    const bindings = [prepared.binding(), panels.binding(), (bias ?? panels).binding(), d.binding];
    g.dispatch(kernel, bindings, u, [Math.ceil(dstPlane / (wg * t.tn)), Math.ceil(ps.mc / t.tm), ps.nc]);
    prepared.dispose();
  }
  panels.dispose();
  return dst;
}

function sharedDefines(t: SharedTiles) {
  return { BM: t.bm, BN: t.bn, BK: t.bk, TM: t.tm, TN: t.tn, WGX: t.bn / t.tn, WGY: t.bm / t.tm };
}

/**
 * One tiled pass's reduction as split-K sees it (conv2d_tiled.wgsl's grid):
 *   forward / inputGrad: tiles of rows (Cout or Cin) x output pixels per image, K = taps * channels;
 *   weightGrad: tiles of Cout x (Cin * taps), K = images * output pixels (the pass's images).
 */
export function tiledSplitProblem(mode: GemmMode | "weightGrad", geo: ConvGeometry, ps: ConvPass, t: SharedTiles, maxGroupsPerDim: number): SplitProblem {
  const taps = geo.kh * geo.kw;
  if (mode === "weightGrad") {
    const ncols = ps.cc * taps;
    return { groups: Math.ceil(ncols / t.bn) * Math.ceil(ps.mc / t.bm), k: ps.nc * geo.ho * geo.wo, step: t.bk, partialBytes: 4 * ps.mc * ncols, cap: maxGroupsPerDim };
  }
  const dstPlane = mode === "forward" ? geo.ho * geo.wo : geo.h * geo.w;
  return {
    groups: Math.ceil(dstPlane / t.bn) * Math.ceil(ps.mc / t.bm) * ps.nc, k: taps * ps.cc, step: t.bk,
    partialBytes: 4 * ps.nc * ps.mc * dstPlane, cap: Math.floor(maxGroupsPerDim / ps.nc),
  };
}

/** Where a split pass's sums go: the element (image, row, col) of the pass is out[off + image * bstride + row * mstride + col]. */
interface SplitTarget {
  images: number;
  rows: number;
  cols: number;
  /** The bias index of the pass's row 0. */
  mFirst: number;
  off: number;
  bstride: number;
  mstride: number;
  /** Add into what the target holds (a later pass) instead of adding the bias. */
  accumulate: boolean;
}

/** Sum `splits` chunks of f32 partials [images * splits, rows, cols] into the target (conv2d_splitk.wgsl). */
function reduceSplits(part: Tensor, splits: number, bias: Tensor | null, out: { binding: GpuBinding; dtype: "f32" | "f16" }, t: SplitTarget): void {
  const g = gpu();
  const dstF16 = out.dtype === "f16";
  const kernel = g.kernel("conv2d_splitk", splitkSrc, { DST_F16: dstF16, BIAS_F16: bias?.dtype === "f16", HALF: dstF16 || bias?.dtype === "f16" });
  const u: Uniforms = ["u".repeat(12), t.rows, t.cols, splits, t.mFirst, t.off, t.bstride, t.mstride, t.accumulate ? 1 : 0, bias && !t.accumulate ? 1 : 0, 0, 0, 0];
  const [gx, gy] = g.grid(Math.ceil((t.rows * t.cols) / 256));
  g.dispatch(kernel, [part.binding(), (bias ?? part).binding(), out.binding], u, [gx, gy, t.images]);
}

/** The workgroup-memory tiled passes; returns the result [N, M, dstH, dstW] in `passDtype`. */
function convTiled(mode: GemmMode, src: Tensor, weight: Tensor, bias: Tensor | null, geo: ConvGeometry, dstShape: number[], label: string, t: SharedTiles): Tensor {
  const g = gpu();
  const v = gemmView(mode, geo);
  const taps = geo.kh * geo.kw;
  const mPad = roundUp(v.m, 4);
  const cPad = roundUp(v.c, 4);
  const panels = weightPanels(weight, v, taps, { mPad, cPad, tap: cPad * mPad, row: 1, chan: mPad, flip: false }); // [taps, cPad, mPad]
  const srcPlane = v.srcH * v.srcW;
  const dstPlane = v.dstH * v.dstW;
  const passes = planPasses(geo.n, v.m, v.c, srcPlane, dstPlane, 4, 1, "conv2d");
  const dst = Tensor.empty(dstShape, passDtype(src, passes), label);
  const srcF16 = src.dtype === "f16";
  // A split pass writes f32 partials; conv2d_splitk.wgsl then writes dst.
  const kernelFor = (dstF16: boolean) => g.kernel("conv2d_tiled", tiledSrc, {
    BIAS_F16: bias?.dtype === "f16", BWD_INPUT: mode === "inputGrad", MODE_WGRAD: false, ...sharedDefines(t),
    SRC_F16: srcF16, DST_F16: dstF16, HALF: srcF16 || dstF16 || bias?.dtype === "f16",
  });
  for (const ps of passes) {
    const s = windowBinding(src, (ps.n0 * v.c + ps.c0) * srcPlane, ((ps.nc - 1) * v.c + ps.cc) * srcPlane);
    const d = windowBinding(dst, (ps.n0 * v.m + ps.m0) * dstPlane, ((ps.nc - 1) * v.m + ps.mc) * dstPlane);
    const groups = [Math.ceil(dstPlane / t.bn), Math.ceil(ps.mc / t.bm), ps.nc];
    const split = chooseSplit(g, tiledSplitProblem(mode, geo, ps, t, g.maxGroupsPerDim));
    recordSplit("conv", split.splits);
    // The tiled kernel reads the panels as f32 with 4 * (vec4 offsets) and clamps rows to m.
    const u = (dstOff: number, dstBstride: number, accumulate: boolean, hasBias: boolean): Uniforms => [
      "u".repeat(24),
      ps.mc, ps.cc, taps, geo.kw,
      v.srcH, v.srcW, v.dstH, v.dstW,
      geo.sh, geo.sw, geo.pt, geo.pl,
      s.skip, v.c * srcPlane, dstOff, dstBstride,
      (ps.c0 * mPad + ps.m0) / 4, (cPad * mPad) / 4, mPad / 4, ps.m0,
      accumulate ? 1 : 0, hasBias ? 1 : 0, split.splits, split.chunk,
    ];
    if (split.splits === 1) {
      const bindings = [s.binding, panels.binding(), (bias ?? panels).binding(), d.binding];
      g.dispatch(kernelFor(dst.dtype === "f16"), bindings, u(d.skip, v.m * dstPlane, ps.c0 > 0, bias !== null), groups);
      continue;
    }
    const part = Tensor.empty([ps.nc * split.splits, ps.mc, dstPlane], "f32", `${label}.split_k`); // [images * splits, rows, pixels]
    g.dispatch(kernelFor(false), [s.binding, panels.binding(), panels.binding(), part.binding()], u(0, ps.mc * dstPlane, false, false), [groups[0], groups[1], ps.nc * split.splits]);
    reduceSplits(part, split.splits, bias, { binding: d.binding, dtype: dst.dtype as "f32" | "f16" }, {
      images: ps.nc, rows: ps.mc, cols: dstPlane, mFirst: ps.m0, off: d.skip, bstride: v.m * dstPlane, mstride: dstPlane, accumulate: ps.c0 > 0,
    });
    part.dispose();
  }
  panels.dispose();
  return dst;
}

/**
 * Weight gradient dW[co, ci, ky, kx] = sum over images and output pixels of
 * dy[n, co, oy, ox] * x[n, ci, oy*sh + ky - pt, ox*sw + kx - pl], f32 (dy and x both f32, or both
 * f16 activations read as f16 and summed in f32).
 */
export function convWeightGrad(dy: Tensor, x: Tensor, geo: ConvGeometry): Tensor {
  const g = gpu();
  const tiles = convTuning(g).weightGrad;
  const taps = geo.kh * geo.kw;
  const cols = geo.cin * taps; // GEMM columns: (ci, tap), contiguous in dW
  const dw = Tensor.empty([geo.cout, geo.cin, geo.kh, geo.kw], "f32", "conv2d.grad_weight");
  const inPlane = geo.h * geo.w;
  const outPlane = geo.ho * geo.wo;
  if (dy.dtype !== x.dtype) throw new Error(`conv2d weight gradient: an ${dy.dtype} output gradient with an ${x.dtype} input`);
  const half = x.dtype === "f16";
  const kernel = tiles.kind === "register"
    ? g.kernel("conv2d_wgrad", wgradSrc, { WG: tiles.wg, TM4: tiles.tm / 4, TN: tiles.tn, NACC: (tiles.tm / 4) * tiles.tn, SRC_F16: half })
    : g.kernel("conv2d_tiled", tiledSrc, { BIAS_F16: false, BWD_INPUT: false, MODE_WGRAD: true, ...sharedDefines(tiles), SRC_F16: half, HALF: half });
  const rowTile = tiles.kind === "register" ? tiles.tm : 4;
  // Windows: dy (rows = Cout planes of outPlane) and x (channels = Cin planes of inPlane) per image.
  const passes = planPasses(geo.n, geo.cout, geo.cin, inPlane, outPlane, rowTile, 1, "conv2d weight gradient");
  for (const ps of passes) {
    const xs = windowBinding(x, (ps.n0 * geo.cin + ps.c0) * inPlane, ((ps.nc - 1) * geo.cin + ps.cc) * inPlane);
    const ds = windowBinding(dy, (ps.n0 * geo.cout + ps.m0) * outPlane, ((ps.nc - 1) * geo.cout + ps.mc) * outPlane);
    const ncols = ps.cc * taps;
    const groups = tiles.kind === "register"
      ? [Math.ceil(ncols / (tiles.wg * tiles.tn)), Math.ceil(ps.mc / tiles.tm), 1]
      : [Math.ceil(ncols / tiles.bn), Math.ceil(ps.mc / tiles.bm), 1];
    // The reduction runs over the pass's images and output pixels: long where images are large and
    // channels few (the VAE's outer convs), where the (Cout x Cin * taps) tile grid is small.
    const split = tiles.kind === "register"
      ? { splits: 1, chunk: ps.nc * outPlane }
      : chooseSplit(g, tiledSplitProblem("weightGrad", geo, ps, tiles, g.maxGroupsPerDim));
    recordSplit("conv weight gradient", split.splits);
    const repeat = isRepeatBlock(passes, ps);
    const u = (cols: number, mFirst: number, colFirst: number, accumulate: boolean): Uniforms => [
      "u".repeat(24),
      ps.mc, ncols, taps, geo.kw,
      geo.h, geo.w, geo.ho, geo.wo,
      geo.sh, geo.sw, geo.pt, geo.pl,
      xs.skip, geo.cin * inPlane, ds.skip, geo.cout * outPlane,
      ps.nc, cols, mFirst, colFirst,
      accumulate ? 1 : 0, split.splits, split.chunk, 0,
    ];
    if (split.splits === 1) {
      g.dispatch(kernel, [ds.binding, xs.binding, dw.binding()], u(cols, ps.m0, ps.c0 * taps, repeat), groups);
      continue;
    }
    const part = Tensor.empty([split.splits, ps.mc, ncols], "f32", "conv2d.grad_weight.split_k"); // [splits, rows, (ci, tap) columns]
    g.dispatch(kernel, [ds.binding, xs.binding, part.binding()], u(ncols, 0, 0, false), [groups[0], groups[1], split.splits]);
    reduceSplits(part, split.splits, null, { binding: dw.binding(), dtype: "f32" }, {
      images: 1, rows: ps.mc, cols: ncols, mFirst: 0, off: ps.m0 * cols + ps.c0 * taps, bstride: 0, mstride: cols, accumulate: repeat,
    });
    part.dispose();
  }
  return dw;
}

/** True when an earlier pass already wrote the same (rows, channels) block of dW (a later image chunk). */
function isRepeatBlock(passes: { n0: number; m0: number; c0: number }[], ps: { n0: number; m0: number; c0: number }): boolean {
  return passes.some((o) => o.n0 < ps.n0 && o.m0 === ps.m0 && o.c0 === ps.c0);
}
