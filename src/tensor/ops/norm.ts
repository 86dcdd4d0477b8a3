// Group normalisation (optionally fused with SiLU) and layer normalisation, forward and backward side
// by side. Statistics are two-pass in f32; the backward recomputes xhat from the saved (mean, rstd).
// Affine parameters must be f32 (loaders cast f16 norm parameters: they are tiny). The input may be
// f16 (f16 activations, needs shader-f16): the output and the input gradient are f16 then, rounded
// once from f32 arithmetic; the parameter gradients stay f32.
import src from "../../../wgsl/norm.wgsl" with { type: "text" };
import { gpu, type GpuBinding, type Uniforms } from "../../gpu/device.ts";
import { record } from "../autograd.ts";
import { Tensor, numel, shapeStr } from "../tensor.ts";
import { adapterClass, recordTuning } from "../../gpu/tuning.ts";
import { bindingLimitBytes } from "./conv_geometry.ts";

const GN_WG = 256;
const LN_WG = 64;

/**
 * Reduction shape of one workgroup: on CPU adapters with fixed 8-lane subgroups, one subgroup per
 * workgroup reducing with subgroupAdd (no workgroup memory, no barriers); elsewhere `wg` threads
 * with a shared-memory tree.
 */
function reduction(wg: number): { WG: number; SUBGROUP_SUM: boolean } {
  const g = gpu();
  const info = g.adapter.info as unknown as { subgroupMinSize?: number; subgroupMaxSize?: number };
  const fixed8 = g.hasSubgroups && info.subgroupMinSize === 8 && info.subgroupMaxSize === 8;
  if (reductionOverride === "shared") return { WG: wg, SUBGROUP_SUM: false };
  if (reductionOverride === "subgroup") return { WG: 8, SUBGROUP_SUM: true };
  if (adapterClass(g) === "cpu" && fixed8) {
    recordTuning("norm", "cpu: one 8-lane subgroup per group, subgroupAdd reductions");
    return { WG: 8, SUBGROUP_SUM: true };
  }
  recordTuning("norm", `gpu: ${wg}-thread workgroups, shared-memory reductions`);
  return { WG: wg, SUBGROUP_SUM: false };
}
let reductionOverride: "subgroup" | "shared" | null = null;

/**
 * Force the reduction shape (tests run both kernels on one adapter; "subgroup" needs 8-lane
 * subgroups); `null` restores the per-adapter choice.
 */
export function setNormReduction(kind: "subgroup" | "shared" | null): void {
  reductionOverride = kind;
}

/** Rows per chunk of the layer-norm parameter-gradient partial sums. */
const LN_PARAM_ROWS = 256;

function normParams(groups: number, C: number, S: number, G: number, cg: number, n0: number, rows: number, eps: number): Uniforms {
  return ["uuuuuuuf", groups, C, S, G, cg, n0, rows, eps];
}

function checkParam(op: string, name: string, t: Tensor, len: number, x: Tensor): void {
  if (t.dtype !== "f32") throw new Error(`${op}: ${name} must be f32, got ${t.dtype} ${shapeStr(t.shape)}`);
  if (t.size !== len) throw new Error(`${op}: ${name} ${shapeStr(t.shape)} does not match input ${shapeStr(x.shape)} (needs ${len} values)`);
}

/**
 * Split `n` samples of `bytesPer` bytes each into windows that fit one storage binding. Windows
 * after the first start at a byte offset that must meet the adapter's offset alignment.
 */
function sampleWindows(op: string, n: number, bytesPer: number): [start: number, count: number][] {
  const g = gpu();
  const limit = bindingLimitBytes(); // the adapter's, unless a test lowers it
  if (bytesPer > limit) {
    throw new Error(`${op}: one sample is ${bytesPer} bytes, over the ${limit}-byte storage binding limit`);
  }
  const per = Math.max(1, Math.floor(limit / Math.max(bytesPer, 1)));
  if (per >= n) return [[0, n]];
  const align = g.limits.minStorageBufferOffsetAlignment ?? 256;
  if (bytesPer % align !== 0) {
    throw new Error(`${op}: input of ${n} samples x ${bytesPer} bytes needs windows, but ${bytesPer} is not a multiple of ${align}`);
  }
  const out: [number, number][] = [];
  for (let s = 0; s < n; s += per) out.push([s, Math.min(per, n - s)]);
  return out;
}

function windowOf(t: Tensor, start: number, count: number, bytesPer: number): GpuBinding {
  // Binding sizes are whole words: an odd count of halves binds one more (never read).
  return { buffer: t.buffer, offset: start * bytesPer, size: Math.max(4, Math.ceil((count * bytesPer) / 4) * 4) };
}

type ActDType = "f32" | "f16";

/** The activation dtype of a norm's input x: f32, or f16 where the adapter has shader-f16. */
function activationDtype(op: string, x: Tensor): ActDType {
  if (x.dtype !== "f32" && x.dtype !== "f16") throw new Error(`${op}: expects an f32 or f16 input, got ${x.dtype} ${shapeStr(x.shape)}`);
  if (x.dtype === "f16" && !gpu().hasF16) throw new Error(`${op}: f16 activations (input ${shapeStr(x.shape)}) need the adapter's shader-f16 feature`);
  return x.dtype;
}

/** The upstream gradient must have the output's dtype, which is the input's. */
function checkGradDtype(op: string, dout: Tensor, x: Tensor): void {
  if (dout.dtype !== x.dtype) throw new Error(`${op} backward: an ${dout.dtype} gradient ${shapeStr(dout.shape)} for an ${x.dtype} output ${shapeStr(x.shape)}`);
}

/** Bytes per element of an activation tensor. */
const elemBytes = (t: Tensor) => (t.dtype === "f16" ? 2 : 4);

// ---------------------------------------------------------------------------------------- group norm

export interface GroupNormOptions {
  /** Apply SiLU after the affine transform (out = silu(norm(x) * w + b)), as diffusers' resnets do. */
  silu?: boolean;
}

/**
 * Group normalisation of x [N, C, ...spatial] over `numGroups` groups of C/numGroups channels,
 * with a per-channel affine (weight, bias [C]) and an optional fused SiLU. Gradients flow to x,
 * weight and bias (each only when required).
 */
export function groupNorm(x: Tensor, numGroups: number, weight: Tensor, bias: Tensor, eps = 1e-5, opts: GroupNormOptions = {}): Tensor {
  const op = "groupNorm";
  const dtype = activationDtype(op, x);
  if (x.rank < 2) throw new Error(`${op}: input ${shapeStr(x.shape)} needs at least [N, C]`);
  const [N, C] = x.shape;
  const S = numel(x.shape.slice(2));
  if (!Number.isInteger(numGroups) || numGroups < 1 || C % numGroups !== 0) {
    throw new Error(`${op}: ${C} channels of input ${shapeStr(x.shape)} do not split into ${numGroups} groups`);
  }
  checkParam(op, "weight", weight, C, x);
  checkParam(op, "bias", bias, C, x);
  const G = numGroups;
  const cg = C / G;
  const silu = opts.silu === true;
  const vec4 = S % 4 === 0;
  const unit = vec4 ? 4 : 1;
  const bytesPer = C * S * elemBytes(x);
  const g = gpu();
  const out = Tensor.empty(x.shape, dtype, silu ? "groupNormSilu" : "groupNorm");
  const stats = Tensor.empty([N, G, 2], "f32", "groupNorm.stats"); // (mean, rstd) per (n, g)
  if (x.size > 0) {
    const k = g.kernel("norm_fwd", src, { NORM_FWD: true, ...reduction(GN_WG), VEC4: vec4, SILU: silu, X_F16: dtype === "f16" });
    for (const [n0, cnt] of sampleWindows(op, N, bytesPer)) {
      const groups = cnt * G;
      g.dispatch(
        k,
        [windowOf(x, n0, cnt, bytesPer), weight.binding(), bias.binding(), windowOf(out, n0, cnt, bytesPer), stats.binding()],
        normParams(groups, C, S / unit, G, cg, n0, 0, eps),
        g.grid(groups),
      );
    }
  }
  const res = record(out, op, [x, weight, bias], [x, weight, bias, stats], (dout, [sx, sw, sb, st], needs) => {
    checkGradDtype(op, dout, sx);
    const grads: (Tensor | null)[] = [null, null, null];
    if (needs[0]) grads[0] = groupNormBackwardX(sx, dout, sw, sb, st, G, silu);
    if (needs[1] || needs[2]) {
      const [dw, db] = groupNormBackwardParams(sx, dout, sw, sb, st, G, silu);
      if (needs[1]) grads[1] = dw;
      else dw.dispose();
      if (needs[2]) grads[2] = db;
      else db.dispose();
    }
    return grads;
  });
  stats.dispose();
  return res;
}

/** dL/dx of group norm in x's dtype; `stats` [N, G, 2] from the forward. */
function groupNormBackwardX(x: Tensor, dout: Tensor, weight: Tensor, bias: Tensor, stats: Tensor, G: number, silu: boolean): Tensor {
  const [N, C] = x.shape;
  const S = numel(x.shape.slice(2));
  const vec4 = S % 4 === 0;
  const bytesPer = C * S * elemBytes(x);
  const g = gpu();
  const dx = Tensor.empty(x.shape, x.dtype, "groupNorm.dx");
  if (x.size === 0) return dx;
  const k = g.kernel("norm_bwd_x", src, { NORM_BWD_X: true, ...reduction(GN_WG), VEC4: vec4, SILU: silu, X_F16: x.dtype === "f16" });
  for (const [n0, cnt] of sampleWindows("groupNorm backward", N, bytesPer)) {
    const groups = cnt * G;
    g.dispatch(
      k,
      [windowOf(x, n0, cnt, bytesPer), windowOf(dout, n0, cnt, bytesPer), weight.binding(), bias.binding(), stats.binding(), windowOf(dx, n0, cnt, bytesPer)],
      normParams(groups, C, S / (vec4 ? 4 : 1), G, C / G, n0, 0, 0),
      g.grid(groups),
    );
  }
  return dx;
}

/** dL/dweight and dL/dbias [C] of group norm (f32, the parameters' dtype; sums in f32). */
function groupNormBackwardParams(x: Tensor, dout: Tensor, weight: Tensor, bias: Tensor, stats: Tensor, G: number, silu: boolean): [Tensor, Tensor] {
  const [N, C] = x.shape;
  const S = numel(x.shape.slice(2));
  const vec4 = S % 4 === 0;
  const bytesPer = C * S * elemBytes(x);
  const g = gpu();
  const partial = Tensor.empty([N, C, 2], "f32", "groupNorm.partial"); // (sum dy, sum dy*xhat) per (n, c)
  if (x.size > 0) {
    const k = g.kernel("gn_bwd_partial", src, { GN_BWD_PARTIAL: true, ...reduction(GN_WG), VEC4: vec4, SILU: silu, X_F16: x.dtype === "f16" });
    for (const [n0, cnt] of sampleWindows("groupNorm backward", N, bytesPer)) {
      const groups = cnt * C;
      g.dispatch(
        k,
        [windowOf(x, n0, cnt, bytesPer), windowOf(dout, n0, cnt, bytesPer), weight.binding(), bias.binding(), stats.binding(), partial.binding()],
        normParams(groups, C, S / (vec4 ? 4 : 1), G, C / G, n0, 0, 0),
        g.grid(groups),
      );
    }
  }
  const res = reduceParamPartials(partial, x.size > 0 ? N : 0, C, weight.shape);
  partial.dispose();
  return res;
}

/** Sum partial [rows, C, 2] over rows into (dweight, dbias), both shaped `paramShape`. */
function reduceParamPartials(partial: Tensor, rows: number, C: number, paramShape: readonly number[]): [Tensor, Tensor] {
  const g = gpu();
  const dw = Tensor.empty(paramShape, "f32", "norm.dweight");
  const db = Tensor.empty(paramShape, "f32", "norm.dbias");
  const k = g.kernel("norm_param_reduce", src, { PARAM_REDUCE: true, WG: 64 });
  g.dispatch(k, [partial.binding(), dw.binding(), db.binding()], normParams(0, C, 0, 0, 0, 0, rows, 0), g.grid(Math.ceil(C / 64)));
  return [dw, db];
}

// ---------------------------------------------------------------------------------------- layer norm

/**
 * Layer normalisation over the last dim of x [..., D] with per-element affine weight, bias [D] (f32).
 * An f16 x gives an f16 output and an f16 input gradient; the parameter gradients are f32.
 */
export function layerNorm(x: Tensor, weight: Tensor, bias: Tensor, eps = 1e-5): Tensor {
  const op = "layerNorm";
  const dtype = activationDtype(op, x);
  if (x.rank < 1) throw new Error(`${op}: input ${shapeStr(x.shape)} has no last dim`);
  const D = x.shape[x.rank - 1];
  const R = D === 0 ? 0 : x.size / D;
  checkParam(op, "weight", weight, D, x);
  checkParam(op, "bias", bias, D, x);
  const vec4 = D % 4 === 0;
  const unit = vec4 ? 4 : 1;
  const g = gpu();
  const out = Tensor.empty(x.shape, dtype, op);
  const stats = Tensor.empty([R, 2], "f32", "layerNorm.stats"); // (mean, rstd) per row
  const rowBytes = D * elemBytes(x);
  if (x.size > 0) {
    const k = g.kernel("norm_fwd", src, { NORM_FWD: true, ...reduction(LN_WG), VEC4: vec4, AFFINE_PER_ELEMENT: true, X_F16: dtype === "f16" });
    for (const [r0, cnt] of sampleWindows(op, R, rowBytes)) {
      g.dispatch(
        k,
        [windowOf(x, r0, cnt, rowBytes), weight.binding(), bias.binding(), windowOf(out, r0, cnt, rowBytes), stats.binding()],
        normParams(cnt, D / unit, 1, 1, D / unit, r0, 0, eps),
        g.grid(cnt),
      );
    }
  }
  const res = record(out, op, [x, weight, bias], [x, weight, bias, stats], (dout, [sx, sw, sb, st], needs) => {
    checkGradDtype(op, dout, sx);
    const grads: (Tensor | null)[] = [null, null, null];
    if (needs[0]) grads[0] = layerNormBackwardX(sx, dout, sw, sb, st);
    if (needs[1] || needs[2]) {
      const [dw, db] = layerNormBackwardParams(sx, dout, st, sw.shape);
      if (needs[1]) grads[1] = dw;
      else dw.dispose();
      if (needs[2]) grads[2] = db;
      else db.dispose();
    }
    return grads;
  });
  stats.dispose();
  return res;
}

/** dL/dx of layer norm in x's dtype; `stats` [R, 2] from the forward. */
function layerNormBackwardX(x: Tensor, dout: Tensor, weight: Tensor, bias: Tensor, stats: Tensor): Tensor {
  const D = x.shape[x.rank - 1];
  const R = D === 0 ? 0 : x.size / D;
  const vec4 = D % 4 === 0;
  const unit = vec4 ? 4 : 1;
  const rowBytes = D * elemBytes(x);
  const g = gpu();
  const dx = Tensor.empty(x.shape, x.dtype, "layerNorm.dx");
  if (x.size === 0) return dx;
  const k = g.kernel("norm_bwd_x", src, { NORM_BWD_X: true, ...reduction(LN_WG), VEC4: vec4, AFFINE_PER_ELEMENT: true, X_F16: x.dtype === "f16" });
  for (const [r0, cnt] of sampleWindows("layerNorm backward", R, rowBytes)) {
    g.dispatch(
      k,
      [windowOf(x, r0, cnt, rowBytes), windowOf(dout, r0, cnt, rowBytes), weight.binding(), bias.binding(), stats.binding(), windowOf(dx, r0, cnt, rowBytes)],
      normParams(cnt, D / unit, 1, 1, D / unit, r0, 0, 0),
      g.grid(cnt),
    );
  }
  return dx;
}

/** dL/dweight and dL/dbias [D] of layer norm (f32, the parameters' dtype; sums in f32). */
function layerNormBackwardParams(x: Tensor, dout: Tensor, stats: Tensor, paramShape: readonly number[]): [Tensor, Tensor] {
  const D = x.shape[x.rank - 1];
  const R = D === 0 ? 0 : x.size / D;
  const g = gpu();
  if (x.byteLength > g.maxBinding) throw new Error(`layerNorm backward: input ${shapeStr(x.shape)} exceeds the storage binding limit`);
  const chunks = Math.max(1, Math.ceil(R / LN_PARAM_ROWS));
  const partial = Tensor.empty([chunks, D, 2], "f32", "layerNorm.partial"); // (sum dy, sum dy*xhat) per (chunk, column)
  if (R > 0) {
    const k = g.kernel("ln_bwd_partial", src, { LN_BWD_PARTIAL: true, WG: 64, X_F16: x.dtype === "f16" });
    g.dispatch(k, [x.binding(), dout.binding(), stats.binding(), partial.binding()], normParams(R, D, 1, 1, D, 0, LN_PARAM_ROWS, 0), [Math.ceil(D / 64), chunks, 1]);
  }
  const res = reduceParamPartials(partial, R > 0 ? chunks : 0, D, paramShape);
  partial.dispose();
  return res;
}
