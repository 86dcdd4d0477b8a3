// Float64 CPU references for the matmul family.
import { erf } from "./elementwise.ts";

export interface RefTensor {
  data: Float64Array;
  shape: number[];
}

function prod(s: readonly number[]): number {
  return s.reduce((a, b) => a * b, 1);
}

/** Element (i, j) of matrix `mat` (offset `off`) stored [rows, cols], read transposed when `trans`. */
function at(x: Float64Array, off: number, rows: number, cols: number, i: number, j: number, trans: boolean): number {
  return trans ? x[off + j * cols + i] : x[off + i * cols + j];
}

/** op(a) · op(b) with numpy broadcasting of the batch dims. */
export function refMatmul(a: Float64Array, aShape: number[], b: Float64Array, bShape: number[], transA = false, transB = false): RefTensor {
  const [ar, ac] = aShape.slice(-2);
  const [br, bc] = bShape.slice(-2);
  const m = transA ? ac : ar;
  const k = transA ? ar : ac;
  const n = transB ? br : bc;
  if ((transB ? bc : br) !== k) throw new Error("refMatmul: inner sizes differ");
  const ba = aShape.slice(0, -2);
  const bb = bShape.slice(0, -2);
  const r = Math.max(ba.length, bb.length);
  const pa = [...new Array(r - ba.length).fill(1), ...ba];
  const pb = [...new Array(r - bb.length).fill(1), ...bb];
  const batch = pa.map((d, i) => Math.max(d, pb[i]));
  const z = prod(batch);
  const out = new Float64Array(z * m * n);
  for (let zi = 0; zi < z; zi++) {
    // batch coordinates -> each operand's batch index (size-1 dims broadcast)
    let rem = zi;
    let ia = 0, ib = 0, sa = 1, sb = 1;
    for (let d = r - 1; d >= 0; d--) {
      const c = rem % batch[d];
      rem = Math.floor(rem / batch[d]);
      ia += (pa[d] === 1 ? 0 : c) * sa;
      ib += (pb[d] === 1 ? 0 : c) * sb;
      sa *= pa[d];
      sb *= pb[d];
    }
    const offA = ia * ar * ac;
    const offB = ib * br * bc;
    for (let i = 0; i < m; i++) {
      for (let j = 0; j < n; j++) {
        let s = 0;
        for (let t = 0; t < k; t++) s += at(a, offA, ar, ac, i, t, transA) * at(b, offB, br, bc, t, j, transB);
        out[(zi * m + i) * n + j] = s;
      }
    }
  }
  return { data: out, shape: [...batch, m, n] };
}

export type RefActivation = "none" | "silu" | "gelu";

export function refActivate(v: number, act: RefActivation): number {
  if (act === "silu") return v / (1 + Math.exp(-v));
  if (act === "gelu") return 0.5 * v * (1 + erf(v / Math.SQRT2));
  return v;
}

/** act(x Wᵀ + b): x [..., in] (as rows x in), W [out, in], b [out] or null. */
export function refLinear(x: Float64Array, inF: number, w: Float64Array, outF: number, bias: Float64Array | null, act: RefActivation = "none"): Float64Array {
  const rows = x.length / inF;
  const y = new Float64Array(rows * outF);
  for (let i = 0; i < rows; i++) {
    for (let o = 0; o < outF; o++) {
      let s = bias ? bias[o] : 0;
      for (let t = 0; t < inF; t++) s += x[i * inF + t] * w[o * inF + t];
      y[i * outF + o] = refActivate(s, act);
    }
  }
  return y;
}

/** x Wᵀ + b + scale · (x Aᵀ) Bᵀ with A [r, in], B [out, r]. */
export function refLora(x: Float64Array, inF: number, w: Float64Array, outF: number, bias: Float64Array | null, down: Float64Array, up: Float64Array, r: number, scale: number): Float64Array {
  const y = refLinear(x, inF, w, outF, bias);
  const h = refLinear(x, inF, down, r, null);
  const low = refLinear(h, r, up, outF, null);
  for (let i = 0; i < y.length; i++) y[i] += scale * low[i];
  return y;
}
