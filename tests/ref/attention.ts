// Float64 CPU reference of scaled dot-product attention in the [B, H, L, d] layout, and of the
// head-averaged probability maps that attention capture accumulates.

export interface AttnDims {
  B: number;
  H: number;
  Lq: number;
  Lk: number;
  d: number;
  causal?: boolean;
  scale?: number;
}

/** Probabilities P [B, H, Lq, Lk] of softmax(scale * q k^T) with an optional top-left causal mask. */
export function attentionProbsRef(q: Float64Array, k: Float64Array, dims: AttnDims): Float64Array {
  const { B, H, Lq, Lk, d } = dims;
  const scale = dims.scale ?? 1 / Math.sqrt(d);
  const P = new Float64Array(B * H * Lq * Lk);
  const row = new Float64Array(Lk);
  for (let bh = 0; bh < B * H; bh++) {
    for (let i = 0; i < Lq; i++) {
      let m = -Infinity;
      for (let j = 0; j < Lk; j++) {
        if (dims.causal && j > i) {
          row[j] = -Infinity;
          continue;
        }
        let s = 0;
        for (let c = 0; c < d; c++) s += q[(bh * Lq + i) * d + c] * k[(bh * Lk + j) * d + c];
        row[j] = s * scale;
        m = Math.max(m, row[j]);
      }
      let sum = 0;
      for (let j = 0; j < Lk; j++) sum += row[j] === -Infinity ? 0 : Math.exp(row[j] - m);
      for (let j = 0; j < Lk; j++) P[(bh * Lq + i) * Lk + j] = row[j] === -Infinity ? 0 : Math.exp(row[j] - m) / sum;
    }
  }
  return P;
}

/** Output [B, H, Lq, d] = P v. */
export function attentionRef(q: Float64Array, k: Float64Array, v: Float64Array, dims: AttnDims): Float64Array {
  const { B, H, Lq, Lk, d } = dims;
  const P = attentionProbsRef(q, k, dims);
  const out = new Float64Array(B * H * Lq * d);
  for (let bh = 0; bh < B * H; bh++) {
    for (let i = 0; i < Lq; i++) {
      for (let j = 0; j < Lk; j++) {
        const pij = P[(bh * Lq + i) * Lk + j];
        if (pij === 0) continue;
        for (let c = 0; c < d; c++) out[(bh * Lq + i) * d + c] += pij * v[(bh * Lk + j) * d + c];
      }
    }
  }
  return out;
}

/** mean over heads of P for batch rows [row0, row0 + count): [count, Lq, Lk]. */
export function headMeanProbsRef(q: Float64Array, k: Float64Array, dims: AttnDims, row0: number, count: number): Float64Array {
  const { H, Lq, Lk } = dims;
  const P = attentionProbsRef(q, k, dims);
  const out = new Float64Array(count * Lq * Lk);
  for (let r = 0; r < count; r++) {
    for (let h = 0; h < H; h++) {
      const src = ((row0 + r) * H + h) * Lq * Lk;
      for (let t = 0; t < Lq * Lk; t++) out[r * Lq * Lk + t] += P[src + t] / H;
    }
  }
  return out;
}

/** [B, H, L, d] -> [B, L, H*d]. */
export function mergeHeads(x: Float64Array, B: number, H: number, L: number, d: number): Float64Array {
  const out = new Float64Array(x.length);
  for (let b = 0; b < B; b++) for (let h = 0; h < H; h++) for (let i = 0; i < L; i++) for (let c = 0; c < d; c++) {
    out[((b * L + i) * H + h) * d + c] = x[(((b * H + h) * L) + i) * d + c];
  }
  return out;
}

/** [B, L, H*d] -> [B, H, L, d]. */
export function splitHeads(x: Float64Array, B: number, H: number, L: number, d: number): Float64Array {
  const out = new Float64Array(x.length);
  for (let b = 0; b < B; b++) for (let h = 0; h < H; h++) for (let i = 0; i < L; i++) for (let c = 0; c < d; c++) {
    out[(((b * H + h) * L) + i) * d + c] = x[((b * L + i) * H + h) * d + c];
  }
  return out;
}

/**
 * Analytic float64 gradients of attention for an upstream gradient G [B, H, Lq, d]:
 * dV = P^T G, dP = G V^T, dS = P * (dP - rowsum(P * dP)), dQ = scale dS K, dK = scale dS^T Q.
 * (Checked against finite differences in the tests, then used where finite differences are too slow.)
 */
export function attentionBackwardRef(q: Float64Array, k: Float64Array, v: Float64Array, G: Float64Array, dims: AttnDims): { dq: Float64Array; dk: Float64Array; dv: Float64Array } {
  const { B, H, Lq, Lk, d } = dims;
  const scale = dims.scale ?? 1 / Math.sqrt(d);
  const P = attentionProbsRef(q, k, dims);
  const dq = new Float64Array(q.length), dk = new Float64Array(k.length), dv = new Float64Array(v.length);
  const dS = new Float64Array(Lk);
  for (let bh = 0; bh < B * H; bh++) {
    for (let i = 0; i < Lq; i++) {
      const qi = (bh * Lq + i) * d;
      let rowDot = 0;
      for (let j = 0; j < Lk; j++) {
        const pij = P[(bh * Lq + i) * Lk + j];
        let dp = 0;
        for (let c = 0; c < d; c++) dp += G[qi + c] * v[(bh * Lk + j) * d + c];
        dS[j] = dp;
        rowDot += pij * dp;
        for (let c = 0; c < d; c++) dv[(bh * Lk + j) * d + c] += pij * G[qi + c];
      }
      for (let j = 0; j < Lk; j++) {
        const ds = P[(bh * Lq + i) * Lk + j] * (dS[j] - rowDot) * scale;
        if (ds === 0) continue;
        for (let c = 0; c < d; c++) {
          dq[qi + c] += ds * k[(bh * Lk + j) * d + c];
          dk[(bh * Lk + j) * d + c] += ds * q[qi + c];
        }
      }
    }
  }
  return { dq, dk, dv };
}
