// Float64 CPU references for the layout family, written with explicit coordinates (no strides
// tricks) so they stay independent of the GPU implementation.

function coordsOf(i: number, shape: readonly number[]): number[] {
  const c = new Array<number>(shape.length);
  for (let d = shape.length - 1; d >= 0; d--) {
    c[d] = i % shape[d];
    i = Math.floor(i / shape[d]);
  }
  return c;
}

function indexOf(c: readonly number[], shape: readonly number[]): number {
  let i = 0;
  for (let d = 0; d < shape.length; d++) i = i * shape[d] + c[d];
  return i;
}

const size = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1);

/** out[c] = x[c permuted back]: out.shape[i] = shape[perm[i]]. */
export function permuteRef(x: Float64Array, shape: readonly number[], perm: readonly number[]): Float64Array {
  const outShape = perm.map((d) => shape[d]);
  const out = new Float64Array(x.length);
  for (let i = 0; i < out.length; i++) {
    const oc = coordsOf(i, outShape);
    const ic = new Array<number>(shape.length);
    perm.forEach((d, k) => (ic[d] = oc[k]));
    out[i] = x[indexOf(ic, shape)];
  }
  return out;
}

export function sliceRef(x: Float64Array, shape: readonly number[], axis: number, start: number, end: number): Float64Array {
  const outShape = shape.map((d, i) => (i === axis ? end - start : d));
  const out = new Float64Array(size(outShape));
  for (let i = 0; i < out.length; i++) {
    const c = coordsOf(i, outShape);
    c[axis] += start;
    out[i] = x[indexOf(c, shape)];
  }
  return out;
}

export function concatRef(xs: Float64Array[], shapes: number[][], axis: number): Float64Array {
  const outShape = shapes[0].map((d, i) => (i === axis ? shapes.reduce((a, s) => a + s[axis], 0) : d));
  const out = new Float64Array(size(outShape));
  for (let i = 0; i < out.length; i++) {
    const c = coordsOf(i, outShape);
    let k = 0;
    while (c[axis] >= shapes[k][axis]) c[axis] -= shapes[k++][axis];
    out[i] = xs[k][indexOf(c, shapes[k])];
  }
  return out;
}
