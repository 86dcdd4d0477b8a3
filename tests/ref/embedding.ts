// Float64 CPU references for the embedding family.

/** Rows of table [V, D] at ids (zeros for ids outside [0, V)). */
export function gatherRef(table: Float64Array, vocab: number, dim: number, ids: readonly number[]): Float64Array {
  const out = new Float64Array(ids.length * dim);
  ids.forEach((id, t) => {
    if (id >= 0 && id < vocab) for (let d = 0; d < dim; d++) out[t * dim + d] = table[id * dim + d];
  });
  return out;
}

/**
 * diffusers' get_timestep_embedding in float64, written from its definition:
 * freq_i = exp(-ln(maxPeriod) * i / (half - shift)), args = scale * t * freq, [sin | cos] (or
 * [cos | sin] when flipped), a zero column appended for odd dims.
 */
export function timestepEmbeddingRef(
  timesteps: readonly number[],
  dim: number,
  flip: boolean,
  shift: number,
  scale = 1,
  maxPeriod = 10000,
): Float64Array {
  const half = Math.floor(dim / 2);
  const out = new Float64Array(timesteps.length * dim);
  timesteps.forEach((t, n) => {
    for (let i = 0; i < half; i++) {
      const arg = scale * t * Math.exp((-Math.log(maxPeriod) * i) / (half - shift));
      const [first, second] = flip ? [Math.cos(arg), Math.sin(arg)] : [Math.sin(arg), Math.cos(arg)];
      out[n * dim + i] = first;
      out[n * dim + half + i] = second;
    }
  });
  return out;
}
