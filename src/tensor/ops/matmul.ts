// Matmul family with autograd, forward and backward side by side: batched matmul with either
// operand transposed, linear (torch layout, fused bias + activation), and LoRA linear (frozen base
// weight, trainable down/up factors, W + BA never materialised). All run on `gemm`.
import { isGradEnabled, record } from "../autograd.ts";
import { type DType, Tensor, numel, shapeStr } from "../tensor.ts";
import { gpu } from "../../gpu/device.ts";
import { cast } from "./cast.ts";
import { gelu, reshapeRaw, silu } from "./elementwise.ts";
import { sumTo } from "./reduce.ts";
import { type Activation, gemm } from "./matmul_gemm.ts";

export type { Activation } from "./matmul_gemm.ts";
/** The launcher without autograd (transposes, alpha, bias, addend, activation), for products inside other op families' forward and backward passes. */
export { gemm, type GemmOptions } from "./matmul_gemm.ts";
export { setMatmulTuning, matmulTuning, type MatmulTuning } from "./matmul_tuning.ts";

export interface MatmulOptions {
  /** `a` is stored [..., K, M]: the product uses its transpose. */
  transA?: boolean;
  /** `b` is stored [..., N, K]: the product uses its transpose. */
  transB?: boolean;
}

/**
 * `t` as the kernel's A operand: as is where the adapter reads f16 activations (shader-f16), else an
 * f32 copy (a new handle either way).
 */
function asFirstOperand(t: Tensor): Tensor {
  return t.dtype === "f32" || gpu().hasF16 ? t.detach() : cast(t, "f32");
}

/** Sum a broadcast-batch gradient down to `shape`; consumes `full`. */
function reduceTo(full: Tensor, shape: readonly number[]): Tensor {
  if (full.size === numel(shape) && full.rank >= shape.length) {
    const v = reshapeRaw(full, shape);
    full.dispose();
    return v;
  }
  const r = sumTo(full, shape);
  full.dispose();
  return r;
}

/** The dtype a gradient product is computed in: `dtype`, unless a batch reduction (f32 only) follows. */
function productDtype(fullSize: number, shape: readonly number[], dtype: DType): "f32" | "f16" {
  return fullSize === numel(shape) && dtype === "f16" ? "f16" : "f32";
}

/** `reduceTo`, then cast to `dtype` (the operand's own: a gradient has its tensor's dtype); consumes `full`. */
function gradTo(full: Tensor, shape: readonly number[], dtype: DType): Tensor {
  const r = reduceTo(full, shape);
  if (r.dtype === dtype) return r;
  const c = cast(r, dtype as "f32" | "f16");
  r.dispose();
  return c;
}

/** d op(A)·op(B) / dA for upstream gradient `g` [..., M, N], in A's dtype. */
function matmulGradA(g: Tensor, a: Tensor, b: Tensor, transA: boolean, transB: boolean): Tensor {
  const out = productDtype(numel([...gemmBatch(g), a.shape.at(-2)!, a.shape.at(-1)!]), a.shape, a.dtype);
  if (!transA) return gradTo(gemm(g, b, { transB: !transB, out, op: "matmul backward" }), a.shape, a.dtype);
  // A stored [K, M]: dA = op(B) · gᵀ, with B as the kernel's first operand.
  const b1 = asFirstOperand(b);
  const full = gemm(b1, g, { transA: transB, transB: true, out, op: "matmul backward" });
  b1.dispose();
  return gradTo(full, a.shape, a.dtype);
}

/** The batch dims of a product's gradient `g` [..., M, N]. */
function gemmBatch(g: Tensor): number[] {
  return g.shape.slice(0, -2) as number[];
}

/** d op(A)·op(B) / dB for upstream gradient `g` [..., M, N], in B's dtype. */
function matmulGradB(g: Tensor, a: Tensor, b: Tensor, transA: boolean, transB: boolean): Tensor {
  const batchB = numel(b.shape.slice(0, -2));
  if (batchB === 1 && !transA) {
    // One B shared by every batch: flatten the batch into the rows of A and g (one product).
    const k = a.shape[a.rank - 1];
    const rows = numel(a.shape.slice(0, -1));
    const aFlat = reshapeRaw(a, [rows, k]); // [Z*M, K]
    const gFlat = reshapeRaw(g, [rows, g.shape[g.rank - 1]]); // [Z*M, N]
    const out = b.dtype as "f32" | "f16";
    const d = transB ? gemm(gFlat, aFlat, { transA: true, out, op: "matmul backward" }) : gemm(aFlat, gFlat, { transA: true, out, op: "matmul backward" });
    aFlat.dispose();
    gFlat.dispose();
    return gradTo(d, b.shape, b.dtype);
  }
  const out = productDtype(numel([...gemmBatch(g), b.shape.at(-2)!, b.shape.at(-1)!]), b.shape, b.dtype);
  const full = transB
    ? gemm(g, a, { transA: true, transB: transA, out, op: "matmul backward" }) // [..., N, K]
    : gemm(a, g, { transA: !transA, out, op: "matmul backward" }); // [..., K, N]
  return gradTo(full, b.shape, b.dtype);
}

/**
 * Batched matrix product op(a) · op(b): a [..., M, K] (or [..., K, M] with transA), b [..., K, N]
 * (or [..., N, K] with transB); batch dims broadcast. `b` may be f16 (read as f32); an f16 `a`
 * (f16 activations, needs shader-f16) gives an f16 result, accumulated in f32. Gradients come in
 * each operand's dtype.
 */
export function matmul(a: Tensor, b: Tensor, opts: MatmulOptions = {}): Tensor {
  const transA = opts.transA ?? false;
  const transB = opts.transB ?? false;
  const out = gemm(a, b, { transA, transB, op: "matmul" });
  // Save only what the wanted gradients read: dA needs B, dB needs A.
  const wantA = a.requiresGrad;
  const wantB = b.requiresGrad;
  const saved = [wantA ? b : null, wantB ? a : null].filter((t): t is Tensor => t !== null);
  return record(out, "matmul", [a, b], saved, (g, s, needs) => {
    const savedB = wantA ? s[0] : null;
    const savedA = wantB ? s[s.length - 1] : null;
    return [
      needs[0] && savedB ? matmulGradA(g, a, savedB, transA, transB) : null,
      needs[1] && savedA ? matmulGradB(g, savedA, b, transA, transB) : null,
    ];
  });
}

export interface LinearOptions {
  /** Applied after the bias, fused into the kernel when no gradient is recorded. */
  activation?: Activation;
}

function checkLinear(op: string, x: Tensor, weight: Tensor, bias: Tensor | null | undefined): { rows: number; inF: number; outF: number } {
  if (weight.rank !== 2) throw new Error(`${op}: weight must be [out, in], got ${shapeStr(weight.shape)}`);
  const [outF, inF] = weight.shape;
  if (x.rank < 1 || x.shape[x.rank - 1] !== inF) {
    throw new Error(`${op}: input ${shapeStr(x.shape)} does not end in ${inF} features of weight ${shapeStr(weight.shape)}`);
  }
  if (bias && (bias.rank !== 1 || bias.shape[0] !== outF)) {
    throw new Error(`${op}: bias ${shapeStr(bias.shape)} does not match weight ${shapeStr(weight.shape)}`);
  }
  return { rows: numel(x.shape.slice(0, -1)), inF, outF };
}

/** y = x Wᵀ + b (x [..., in], W [out, in] as torch, b [out]) without activation, with autograd. */
function affine(x: Tensor, weight: Tensor, bias: Tensor | null, activation: Activation): Tensor {
  const { rows, inF, outF } = checkLinear("linear", x, weight, bias);
  const outShape = [...x.shape.slice(0, -1), outF];
  const x2 = reshapeRaw(x, [rows, inF]); // [R, in]
  const y2 = gemm(x2, weight, { transB: true, bias, activation, op: "linear" }); // [R, out]
  const y = reshapeRaw(y2, outShape);
  y2.dispose();
  x2.dispose();
  const inputs = bias ? [x, weight, bias] : [x, weight];
  // dx reads W; dW reads x.
  const wantX = x.requiresGrad;
  const wantW = weight.requiresGrad;
  const saved = [wantX ? weight : null, wantW ? x : null].filter((t): t is Tensor => t !== null);
  return record(y, "linear", inputs, saved, (g, s, needs) => {
    const w = wantX ? s[0] : null;
    const xs = wantW ? s[s.length - 1] : null;
    const gy = reshapeRaw(g, [rows, outF]); // [R, out]
    const res: (Tensor | null)[] = [null, null, null];
    if (needs[0] && w) {
      const dx = gemm(gy, w, { out: x.dtype as "f32" | "f16", op: "linear backward" }); // [R, in]
      res[0] = reshapeRaw(dx, x.shape);
      dx.dispose();
    }
    if (needs[1] && xs) {
      const xf = reshapeRaw(xs, [rows, inF]);
      res[1] = gemm(gy, xf, { transA: true, out: weight.dtype as "f32" | "f16", op: "linear backward" }); // [out, in]
      xf.dispose();
    }
    if (bias && needs[2]) {
      // The column sums run in f32 (the bias is f32); an f16 gradient is widened first.
      const g32 = gy.dtype === "f32" ? gy.detach() : cast(gy, "f32");
      res[2] = sumTo(g32, [outF]);
      g32.dispose();
    }
    gy.dispose();
    return bias ? res : res.slice(0, 2);
  });
}

/**
 * y = act(x Wᵀ + b): x [..., in], weight [out, in] (torch layout, f32 or f16), bias [out] (f32).
 * An f16 x gives an f16 y (f32 accumulation, one rounding). Gradients for x, weight and bias, each
 * only when it requires grad, in its own dtype.
 */
export function linear(x: Tensor, weight: Tensor, bias?: Tensor | null, opts: LinearOptions = {}): Tensor {
  const activation = opts.activation ?? "none";
  const recording = isGradEnabled() && (x.requiresGrad || weight.requiresGrad || (bias?.requiresGrad ?? false));
  if (activation === "none" || !recording) return affine(x, weight, bias ?? null, activation);
  // Training: the activation's backward needs its input, so it runs as its own op.
  const z = affine(x, weight, bias ?? null, "none");
  const y = activation === "silu" ? silu(z) : gelu(z);
  z.dispose();
  return y;
}

/**
 * LoRA linear: y = x Wᵀ + b + scale · (x Aᵀ) Bᵀ with A = loraDown [r, in], B = loraUp [out, r].
 * W and b are frozen: they never receive a gradient; x, loraDown and loraUp do (when they require
 * it). W + BA is never formed: the low-rank path is a rank-r product added in the kernel epilogue.
 */
export function loraLinear(x: Tensor, weight: Tensor, bias: Tensor | null | undefined, loraDown: Tensor, loraUp: Tensor, scale: number): Tensor {
  const op = "loraLinear";
  const { rows, inF, outF } = checkLinear(op, x, weight, bias);
  if (loraDown.rank !== 2 || loraDown.shape[1] !== inF) {
    throw new Error(`${op}: lora down ${shapeStr(loraDown.shape)} must be [r, ${inF}] for weight ${shapeStr(weight.shape)}`);
  }
  const r = loraDown.shape[0];
  if (loraUp.rank !== 2 || loraUp.shape[0] !== outF || loraUp.shape[1] !== r) {
    throw new Error(`${op}: lora up ${shapeStr(loraUp.shape)} must be [${outF}, ${r}] for weight ${shapeStr(weight.shape)} and down ${shapeStr(loraDown.shape)}`);
  }
  const x2 = reshapeRaw(x, [rows, inF]); // [R, in]
  const h = gemm(x2, loraDown, { transB: true, op }); // [R, r]
  const base = gemm(x2, weight, { transB: true, bias: bias ?? null, op }); // [R, out]
  const y2 = gemm(h, loraUp, { transB: true, alpha: scale, addend: base, op }); // [R, out]
  base.dispose();
  x2.dispose();
  const y = reshapeRaw(y2, [...x.shape.slice(0, -1), outF]);
  y2.dispose();

  const needX = x.requiresGrad;
  const needDown = loraDown.requiresGrad;
  const needUp = loraUp.requiresGrad;
  // Saved: x for dDown; W for dx; h for dUp; the factors for everything.
  const saved = [loraDown, loraUp, h, needDown ? x : null, needX ? weight : null].filter((t): t is Tensor => t !== null);
  const out = record(y, op, [x, loraDown, loraUp], saved, (g, s, needs) => {
    const [down, up, hs] = s;
    const xs = needDown ? s[3] : null;
    const w = needX ? s[s.length - 1] : null;
    const gy = reshapeRaw(g, [rows, outF]); // [R, out]
    const res: (Tensor | null)[] = [null, null, null];
    if (needs[2]) res[2] = gemm(gy, hs, { transA: true, alpha: scale, out: loraUp.dtype as "f32" | "f16", op: `${op} backward` }); // [out, r]
    if (needs[0] || needs[1]) {
      const dh = gemm(gy, up, { alpha: scale, out: "f32", op: `${op} backward` }); // [R, r] = scale · dy B (f32: r is small)
      if (needs[1] && xs) {
        const xf = reshapeRaw(xs, [rows, inF]);
        res[1] = gemm(dh, xf, { transA: true, out: loraDown.dtype as "f32" | "f16", op: `${op} backward` }); // [r, in]
        xf.dispose();
      }
      if (needs[0] && w) {
        const xd = x.dtype as "f32" | "f16";
        const low = gemm(dh, down, { out: xd, op: `${op} backward` }); // [R, in] = dh A
        const dx = gemm(gy, w, { addend: low, out: xd, op: `${op} backward` }); // [R, in] = dy W + dh A
        low.dispose();
        res[0] = reshapeRaw(dx, x.shape);
        dx.dispose();
      }
      dh.dispose();
    }
    gy.dispose();
    return res;
  });
  h.dispose();
  return out;
}
