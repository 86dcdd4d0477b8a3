// Float64 CPU references for group norm, layer norm and softmax.

const sigmoid = (v: number) => 1 / (1 + Math.exp(-v));

/** Group norm of x [N, C, S] (flattened spatial), affine per channel, optional SiLU. */
export function groupNormRef(x: Float64Array, N: number, C: number, S: number, G: number, w: Float64Array, b: Float64Array, eps: number, silu = false): Float64Array {
  const out = new Float64Array(x.length);
  const cg = C / G;
  const m = cg * S;
  for (let n = 0; n < N; n++) {
    for (let g = 0; g < G; g++) {
      const base = (n * C + g * cg) * S;
      let mean = 0;
      for (let i = 0; i < m; i++) mean += x[base + i];
      mean /= m;
      let v = 0;
      for (let i = 0; i < m; i++) v += (x[base + i] - mean) ** 2;
      v /= m;
      const rstd = 1 / Math.sqrt(v + eps);
      for (let i = 0; i < m; i++) {
        const c = g * cg + Math.floor(i / S);
        const y = (x[base + i] - mean) * rstd * w[c] + b[c];
        out[base + i] = silu ? y * sigmoid(y) : y;
      }
    }
  }
  return out;
}

/** Layer norm over the last dim D of x [R, D]. */
export function layerNormRef(x: Float64Array, D: number, w: Float64Array, b: Float64Array, eps: number): Float64Array {
  const out = new Float64Array(x.length);
  for (let base = 0; base < x.length; base += D) {
    let mean = 0;
    for (let i = 0; i < D; i++) mean += x[base + i];
    mean /= D;
    let v = 0;
    for (let i = 0; i < D; i++) v += (x[base + i] - mean) ** 2;
    v /= D;
    const rstd = 1 / Math.sqrt(v + eps);
    for (let i = 0; i < D; i++) out[base + i] = (x[base + i] - mean) * rstd * w[i] + b[i];
  }
  return out;
}

/** Softmax over rows of length L. */
export function softmaxRef(x: Float64Array, L: number): Float64Array {
  const out = new Float64Array(x.length);
  for (let base = 0; base < x.length; base += L) {
    let m = -Infinity;
    for (let i = 0; i < L; i++) m = Math.max(m, x[base + i]);
    let s = 0;
    for (let i = 0; i < L; i++) s += Math.exp(x[base + i] - m);
    for (let i = 0; i < L; i++) out[base + i] = Math.exp(x[base + i] - m) / s;
  }
  return out;
}
