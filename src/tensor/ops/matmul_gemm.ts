// The matmul launcher (no autograd): C = act(alpha * op(A) op(B) + bias + addend) over broadcast
// batch dims, on the kernel `matmul_tuning.ts` picks for the adapter. Used by matmul.ts for the
// forward and backward of matmul, linear and loraLinear.
import commonSrc from "../../../wgsl/matmul_common.wgsl" with { type: "text" };
import registerSrc from "../../../wgsl/matmul.wgsl" with { type: "text" };
import tiledSrc from "../../../wgsl/matmul_tiled.wgsl" with { type: "text" };
import k4Src from "../../../wgsl/matmul_k4.wgsl" with { type: "text" };
import splitkSrc from "../../../wgsl/matmul_splitk.wgsl" with { type: "text" };
import { gpu, type GpuBinding, type Uniforms } from "../../gpu/device.ts";
import { Tensor, numel, shapeStr } from "../tensor.ts";
import { broadcastShapes, broadcastStrides } from "./shape.ts";
import { type MatmulTuning, matmulTuning, registerRowGroups, tiledDepth, tiledPer } from "./matmul_tuning.ts";
import { unrolledSource } from "./unroll.ts";
import { chooseSplit, recordSplit } from "./split_k.ts";

const REGISTER_SOURCE = commonSrc + "\n" + registerSrc;
const K4_SOURCE = commonSrc + "\n" + k4Src;

let k4Mode: "auto" | boolean = "auto";
const K4_ROW_GROUPS = 2;
/**
 * With f32 weights and at least this many rows the register kernel that loads one k at a time is
 * faster than the vec4-along-k one (lavapipe, GFLOP per CPU-second, interleaved runs: 1024x320x320
 * 8.5 vs 7.3, 1024x320x2560 7.8 vs 5.8, 256x640x640 7.6 vs 6.5; sd15 UNet at 256 px 9-16% less CPU
 * time per forward). The vec4 kernel stays ahead with f16 weights (half the load components:
 * 1024x1280x320 9.8 vs 7.9, 256x640x640 8.2 vs 7.4) and for short products (77x768x320 f32 6.4 vs 5.5).
 */
const K4_F32_MAX_ROWS = 255;
/**
 * Where both operands are contiguous along k: true forces the vec4-along-k register kernel, false
 * the one-k-at-a-time one, "auto" (the default) picks by weight type and rows as measured above.
 * Tests and benchmarks use the forced modes to compare the two.
 */
export function setMatmulK4(mode: "auto" | boolean): void {
  k4Mode = mode;
}
const TILED_SOURCE = commonSrc + "\n" + tiledSrc;
const SPLITK_SOURCE = commonSrc + "\n" + splitkSrc;

export type Activation = "none" | "silu" | "gelu";
const ACT_CODE: Record<Activation, number> = { none: 0, silu: 1, gelu: 2 };
const FLAG_BIAS = 1;
const FLAG_ADDEND = 2;
const FLAG_BIAS_ROWS = 4;
const ACT_SHIFT = 3;
/** Batch dims the kernel decomposes (after collapsing). */
const MAX_BATCH_DIMS = 4;

export interface GemmOptions {
  /** A is stored [..., K, M] (op(A) = Aᵀ). */
  transA?: boolean;
  /** B is stored [..., N, K] (op(B) = Bᵀ). */
  transB?: boolean;
  alpha?: number;
  /** [N], added to every row. */
  bias?: Tensor | null;
  /** Same shape as the output, added before the activation. */
  addend?: Tensor | null;
  activation?: Activation;
  /**
   * dtype of C (and of the addend): defaults to A's. f16 output, like an f16 A, needs shader-f16;
   * products accumulate in f32 either way and round once.
   */
  out?: "f32" | "f16";
  /** Op name for error messages. */
  op?: string;
}

/** Matrix sizes of one product: op(A) is [m, k], op(B) is [k, n]. */
export interface GemmDims {
  m: number;
  k: number;
  n: number;
  /** Broadcast batch shape of the output. */
  batch: number[];
}

/** Sizes and output shape of op(a) op(b); throws an Error naming `op` and both shapes. */
export function gemmDims(a: readonly number[], b: readonly number[], transA: boolean, transB: boolean, op = "matmul"): GemmDims {
  const both = `${shapeStr(a)} and ${shapeStr(b)}${transA ? " (A transposed)" : ""}${transB ? " (B transposed)" : ""}`;
  if (a.length < 2 || b.length < 2) throw new Error(`${op}: operands need at least 2 dims, got ${both}`);
  const [ar, ac] = a.slice(-2);
  const [br, bc] = b.slice(-2);
  const m = transA ? ac : ar;
  const ka = transA ? ar : ac;
  const kb = transB ? bc : br;
  const n = transB ? br : bc;
  if (ka !== kb) throw new Error(`${op}: inner sizes differ (${ka} vs ${kb}) for ${both}`);
  let batch: number[];
  try {
    batch = broadcastShapes(a.slice(0, -2), b.slice(0, -2), op);
  } catch {
    throw new Error(`${op}: batch dims do not broadcast for ${both}`);
  }
  return { m, k: ka, n, batch };
}

/** Drop size-1 batch dims and merge neighbours that both operands step through contiguously. */
function collapseBatch(dims: number[], sa: number[], sb: number[]): { dims: number[]; sa: number[]; sb: number[] } {
  const d: number[] = [];
  const a: number[] = [];
  const b: number[] = [];
  for (let i = 0; i < dims.length; i++) {
    if (dims[i] === 1) continue;
    const last = d.length - 1;
    if (last >= 0 && a[last] === sa[i] * dims[i] && b[last] === sb[i] * dims[i]) {
      d[last] *= dims[i];
      a[last] = sa[i];
      b[last] = sb[i];
    } else {
      d.push(dims[i]);
      a.push(sa[i]);
      b.push(sb[i]);
    }
  }
  return { dims: d, sa: a, sb: b };
}

function padFront(v: number[], fill: number): number[] {
  return [...new Array(MAX_BATCH_DIMS - v.length).fill(fill), ...v];
}

/**
 * Where `gemmInto` writes C: element (z, m, n) of the product goes to element
 * `offset + z * sz + m * sm + n * sn` of `binding` (e.g. a conv's NCHW output written as the
 * transposed product of pixels x channels). No fold of the batch into M happens then.
 */
export interface GemmTarget {
  binding: GpuBinding;
  offset: number;
  sz: number;
  sm: number;
  sn: number;
  /** dtype of the target's elements (default f32; f16 needs shader-f16). */
  dtype?: "f32" | "f16";
}

/** The shape of a product's launch: workgroups along n and m, the kernel's K step, and its tile parameters. */
export interface GemmGrid {
  gx: number;
  gy: number;
  /** K elements per step of the kernel: split chunks are multiples of it. */
  step: number;
  /** Register kernels: row groups of 8. */
  rg: number;
  /** Tiled kernel: accumulators per invocation side. */
  per: 4 | 8;
}

/** The grid of an m x n product (times `batch`) on `tuning`'s kernel (`k4`: the vec4-along-k register kernel). */
export function gemmGrid(tuning: MatmulTuning, m: number, n: number, batch: number, k4: boolean): GemmGrid {
  if (tuning.kind === "register") {
    // k4: 16 rows at most (more accumulators spill and make the pipeline slow to compile and to run).
    const rg = k4 ? Math.min(K4_ROW_GROUPS, registerRowGroups(tuning, m)) : registerRowGroups(tuning, m);
    return { gx: Math.ceil(n / (32 * tuning.colGroups)), gy: Math.ceil(m / (8 * rg)), step: k4 ? 4 : 1, rg, per: 4 };
  }
  const per = tiledPer(tuning, m, n, batch);
  return { gx: Math.ceil(n / (16 * per)), gy: Math.ceil(m / (16 * per)), step: tiledDepth(tuning, per), rg: 1, per };
}

/** C = act(alpha * op(A) op(B) + bias + addend), batched with numpy broadcasting of the batch dims. */
export function gemm(a: Tensor, b: Tensor, opts: GemmOptions = {}): Tensor {
  return launch(a, b, opts, null)!;
}

/** `gemm` writing into an existing buffer with explicit strides (no addend); see GemmTarget. */
export function gemmInto(a: Tensor, b: Tensor, opts: GemmOptions, target: GemmTarget): void {
  if (opts.addend) throw new Error(`${opts.op ?? "matmul"}: gemmInto takes no addend`);
  launch(a, b, opts, target);
}

function launch(a: Tensor, b: Tensor, opts: GemmOptions, target: GemmTarget | null): Tensor | null {
  const op = opts.op ?? "matmul";
  const transA = opts.transA ?? false;
  const transB = opts.transB ?? false;
  if (a.dtype !== "f32" && a.dtype !== "f16") throw new Error(`${op}: the first operand must be f32 or f16, got ${a.dtype} ${shapeStr(a.shape)}`);
  if (b.dtype !== "f32" && b.dtype !== "f16") throw new Error(`${op}: the second operand must be f32 or f16, got ${b.dtype} ${shapeStr(b.shape)}`);
  const outDtype = target ? target.dtype ?? "f32" : opts.out ?? (a.dtype as "f32" | "f16");
  if ((a.dtype === "f16" || outDtype === "f16") && !gpu().hasF16) {
    throw new Error(`${op}: f16 activations (an f16 first operand or output) need the adapter's shader-f16 feature`);
  }
  const { m, k, n, batch } = gemmDims(a.shape, b.shape, transA, transB, op);
  const outShape = [...batch, m, n];
  const bias = opts.bias ?? null;
  const addend = opts.addend ?? null;
  if (bias && (bias.dtype !== "f32" || bias.size !== n)) {
    throw new Error(`${op}: bias ${shapeStr(bias.shape)} ${bias.dtype} does not match ${n} output features (f32 needed)`);
  }
  if (addend && (addend.dtype !== outDtype || addend.size !== numel(outShape))) {
    throw new Error(`${op}: addend ${shapeStr(addend.shape)} ${addend.dtype} does not match the ${outDtype} output ${shapeStr(outShape)}`);
  }
  const out = target ? null : Tensor.empty(outShape, outDtype, op);
  const batchA = a.shape.slice(0, -2);
  const batchB = b.shape.slice(0, -2);
  const zCount = numel(batch);
  if (m === 0 || n === 0 || zCount === 0) return out;

  // One B for every batch and A rows contiguous across batches: fold the batch into M.
  const fold = numel(batchB) === 1 && !transA && !target;
  const rows = fold ? numel(batchA) * m : m;
  let bdims: number[] = [];
  let bsa: number[] = [];
  let bsb: number[] = [];
  if (!fold) {
    const c = collapseBatch(
      batch,
      broadcastStrides(batchA, batch).map((s) => s * m * k),
      broadcastStrides(batchB, batch).map((s) => s * k * n),
    );
    if (c.dims.length > MAX_BATCH_DIMS) throw new Error(`${op}: more than ${MAX_BATCH_DIMS} independent batch dims in ${shapeStr(a.shape)} x ${shapeStr(b.shape)}`);
    ({ dims: bdims, sa: bsa, sb: bsb } = c);
  }
  const zTotal = fold ? 1 : zCount;

  const g = gpu();
  for (const [t, what] of [[a, "A"], [b, "B"], [out, "output"], [addend, "addend"]] as [Tensor | null, string][]) {
    if (t && t.byteLength > g.maxBinding) {
      throw new Error(`${op}: ${what} ${shapeStr(t.shape)} is ${t.byteLength} bytes, over the ${g.maxBinding}-byte storage binding limit`);
    }
  }

  const tuning = matmulTuning(g);
  const bF16 = b.dtype === "f16";
  // Element strides of op(A) along (m, k) and of op(B) along (k, n).
  let prod = {
    m: rows, n, sam: transA ? 1 : k, sak: transA ? m : 1, sbk: transB ? 1 : n, sbn: transB ? k : 1,
    bsa, bsb, scm: target ? target.sm : n, scn: target ? target.sn : 1, biasRows: false,
  };
  // The register kernel's workgroup spans 32 columns: for a narrow C (LoRA's rank-r products)
  // compute Cᵀ = op(B)ᵀ op(A)ᵀ instead and store it transposed, so no lane idles on clamped columns.
  const swap = tuning.kind === "register" && n < 32 && rows >= 32 && !bF16;
  if (swap) {
    prod = {
      m: n, n: rows, sam: prod.sbn, sak: prod.sbk, sbk: prod.sak, sbn: prod.sam,
      bsa: bsb, bsb: bsa, scm: prod.scn, scn: prod.scm, biasRows: true,
    };
  }
  // The kernel's A operand (b when swapped) and C: f16 activations read and written as f16.
  const [first, second] = swap ? [b, a] : [a, b];
  const secondF16 = second.dtype === "f16";
  // Both operands contiguous along k, k a multiple of 4 and every row start 4-aligned: 4 k per load.
  const k4Wanted = k4Mode === "auto" ? bF16 || prod.m <= K4_F32_MAX_ROWS : k4Mode;
  const k4 = tuning.kind === "register" && k4Wanted && k > 0 && k % 4 === 0 && prod.sak === 1 && prod.sbk === 1 &&
    prod.sam % 4 === 0 && prod.sbn % 4 === 0 && [...prod.bsa, ...prod.bsb].every((v) => v % 4 === 0) && (!swap || !bF16);
  const { gx, gy, step, rg, per } = gemmGrid(tuning, prod.m, prod.n, zTotal, k4);
  if (gx > g.maxGroupsPerDim || gy > g.maxGroupsPerDim) {
    throw new Error(`${op}: output ${shapeStr(outShape)} needs ${gx}x${gy} workgroups, over the ${g.maxGroupsPerDim} per dimension limit`);
  }
  const split = chooseSplit(g, { groups: gx * gy * zTotal, k, step, partialBytes: 4 * zTotal * prod.m * prod.n });
  recordSplit("matmul", split.splits);
  // A split writes f32 partials (no epilogue); the reduction writes C.
  const cHalf = outDtype === "f16" && split.splits === 1;
  const halfDefs = { A_F16: first.dtype === "f16", C_F16: cHalf, HALF: first.dtype === "f16" || cHalf };
  let kernel;
  if (tuning.kind === "register" && k4) {
    const defs = { SUBGROUPS: true, K4: true, B_F16: secondF16, RG: rg, ROWS: 8 * rg, CG2: tuning.colGroups === 2, COLS: 32 * tuning.colGroups, ...halfDefs };
    kernel = g.kernel("matmul_k4", unrolledSource("matmul_k4", K4_SOURCE, defs), defs);
  } else if (tuning.kind === "register") {
    kernel = g.kernel("matmul", REGISTER_SOURCE, {
      ...halfDefs,
      SUBGROUPS: true,
      B_F16: secondF16,
      RG2: rg >= 2,
      RG3: rg >= 3,
      RG4: rg >= 4,
      ROWS: 8 * rg,
      CG2: tuning.colGroups === 2,
      COLS: 32 * tuning.colGroups,
    });
  } else {
    const defs = { B_F16: secondF16, PER: per, PV: per / 4, DEPTH: step, STAGE: (16 * per * step) / 256, ...halfDefs };
    kernel = g.kernel("matmul_tiled", unrolledSource("matmul_tiled", TILED_SOURCE, defs), defs);
  }

  const flags = (bias ? FLAG_BIAS : 0) | (addend ? FLAG_ADDEND : 0) | (prod.biasRows ? FLAG_BIAS_ROWS : 0) |
    (ACT_CODE[opts.activation ?? "none"] << ACT_SHIFT);
  const dummy: GpuBinding = a.binding();
  const cBinding = target ? target.binding : out!.binding();
  const shape = [prod.m, prod.n, k] as const;
  const strides = [prod.sam, prod.sak, prod.sbk, prod.sbn, ...padFront(bdims, 1), ...padFront(prod.bsa, 0), ...padFront(prod.bsb, 0)];
  const params = (z0: number, alpha: number, fl: number, scm: number, scn: number, scz: number, cOff: number): Uniforms =>
    ["u".repeat(20) + "fuuuuuuu", shape[0], shape[1], shape[2], z0, ...strides, alpha, fl, scm, scn, scz, cOff, split.splits, split.chunk];
  const scz = target ? target.sz : prod.m * prod.n;
  const cOff = target ? target.offset : 0;
  if (split.splits === 1) {
    const bindings = [first.binding(), second.binding(), bias ? bias.binding() : dummy, addend ? addend.binding() : dummy, cBinding];
    for (let z0 = 0; z0 < zTotal; z0 += g.maxGroupsPerDim) {
      g.dispatch(kernel, bindings, params(z0, opts.alpha ?? 1, flags, prod.scm, prod.scn, scz, cOff), [gx, gy, Math.min(g.maxGroupsPerDim, zTotal - z0)]);
    }
    return out;
  }
  // Split-K: each chunk's raw sums into f32 partials, then one reduction applies the epilogue.
  const layers = zTotal * split.splits;
  const partial = Tensor.empty([layers, prod.m, prod.n], "f32", `${op}.split_k`); // [products * splits, m, n]
  const pb = [first.binding(), second.binding(), dummy, dummy, partial.binding()];
  for (let z0 = 0; z0 < layers; z0 += g.maxGroupsPerDim) {
    g.dispatch(kernel, pb, params(z0, 1, 0, prod.n, 1, prod.m * prod.n, 0), [gx, gy, Math.min(g.maxGroupsPerDim, layers - z0)]);
  }
  const reduce = g.kernel("matmul_splitk", SPLITK_SOURCE, { C_F16: outDtype === "f16", HALF: outDtype === "f16" });
  const pd = partial.binding();
  const rb = [pd, pd, bias ? bias.binding() : pd, addend ? addend.binding() : pd, cBinding];
  const [rx, ry] = g.grid(Math.ceil((prod.m * prod.n) / 256));
  for (let z0 = 0; z0 < zTotal; z0 += g.maxGroupsPerDim) {
    g.dispatch(reduce, rb, params(z0, opts.alpha ?? 1, flags, prod.scm, prod.scn, scz, cOff), [rx, ry, Math.min(g.maxGroupsPerDim, zTotal - z0)]);
  }
  partial.dispose();
  return out;
}
