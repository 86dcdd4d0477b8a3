// Float64 CPU references of conv2d (torch semantics: cross-correlation, zero padding) and of
// nearest 2x upsampling, written directly from the definitions.

export interface ConvRefGeometry {
  n: number;
  cin: number;
  h: number;
  w: number;
  cout: number;
  kh: number;
  kw: number;
  stride: [number, number];
  /** top, bottom, left, right */
  pad: [number, number, number, number];
}

export function convOutSize(g: ConvRefGeometry): [number, number] {
  const ho = Math.floor((g.h + g.pad[0] + g.pad[1] - g.kh) / g.stride[0]) + 1;
  const wo = Math.floor((g.w + g.pad[2] + g.pad[3] - g.kw) / g.stride[1]) + 1;
  return [ho, wo];
}

/** y[n, co, oy, ox] = b[co] + sum_{ci, ky, kx} w[co, ci, ky, kx] * x[n, ci, oy*sh + ky - pt, ox*sw + kx - pl]. */
export function conv2dRef(x: Float64Array, w: Float64Array, b: Float64Array | null, g: ConvRefGeometry): Float64Array {
  const [ho, wo] = convOutSize(g);
  const [sh, sw] = g.stride;
  const [pt, , pl] = g.pad;
  const y = new Float64Array(g.n * g.cout * ho * wo);
  for (let n = 0; n < g.n; n++) {
    for (let co = 0; co < g.cout; co++) {
      for (let oy = 0; oy < ho; oy++) {
        for (let ox = 0; ox < wo; ox++) {
          let s = b ? b[co] : 0;
          for (let ci = 0; ci < g.cin; ci++) {
            for (let ky = 0; ky < g.kh; ky++) {
              const iy = oy * sh + ky - pt;
              if (iy < 0 || iy >= g.h) continue;
              for (let kx = 0; kx < g.kw; kx++) {
                const ix = ox * sw + kx - pl;
                if (ix < 0 || ix >= g.w) continue;
                s += w[((co * g.cin + ci) * g.kh + ky) * g.kw + kx] * x[((n * g.cin + ci) * g.h + iy) * g.w + ix];
              }
            }
          }
          y[((n * g.cout + co) * ho + oy) * wo + ox] = s;
        }
      }
    }
  }
  return y;
}

/** [N, C, H, W] -> [N, C, 2H, 2W], out[.., y, x] = in[.., floor(y/2), floor(x/2)]. */
export function upsampleNearest2xRef(x: Float64Array, shape: readonly number[]): Float64Array {
  const [n, c, h, w] = shape;
  const out = new Float64Array(n * c * 4 * h * w);
  for (let p = 0; p < n * c; p++) {
    for (let y = 0; y < 2 * h; y++) {
      for (let xx = 0; xx < 2 * w; xx++) {
        out[(p * 2 * h + y) * 2 * w + xx] = x[(p * h + Math.floor(y / 2)) * w + Math.floor(xx / 2)];
      }
    }
  }
  return out;
}

/**
 * The three gradients of sum(conv2d(x, w, b) * G), accumulated straight from the forward's sum
 * (each product w * x contributes G * x to dw and G * w to dx). Used where finite differences of
 * the reference would be too slow; checked against finite differences in conv.test.ts.
 */
export function conv2dGradsRef(x: Float64Array, w: Float64Array, G: Float64Array, g: ConvRefGeometry): { dx: Float64Array; dw: Float64Array; db: Float64Array } {
  const [ho, wo] = convOutSize(g);
  const [sh, sw] = g.stride;
  const [pt, , pl] = g.pad;
  const dx = new Float64Array(x.length);
  const dw = new Float64Array(w.length);
  const db = new Float64Array(g.cout);
  for (let n = 0; n < g.n; n++) {
    for (let co = 0; co < g.cout; co++) {
      for (let oy = 0; oy < ho; oy++) {
        for (let ox = 0; ox < wo; ox++) {
          const gv = G[((n * g.cout + co) * ho + oy) * wo + ox];
          db[co] += gv;
          for (let ci = 0; ci < g.cin; ci++) {
            for (let ky = 0; ky < g.kh; ky++) {
              const iy = oy * sh + ky - pt;
              if (iy < 0 || iy >= g.h) continue;
              for (let kx = 0; kx < g.kw; kx++) {
                const ix = ox * sw + kx - pl;
                if (ix < 0 || ix >= g.w) continue;
                const wi = ((co * g.cin + ci) * g.kh + ky) * g.kw + kx;
                const xi = ((n * g.cin + ci) * g.h + iy) * g.w + ix;
                dw[wi] += gv * x[xi];
                dx[xi] += gv * w[wi];
              }
            }
          }
        }
      }
    }
  }
  return { dx, dw, db };
}

/** torch's nearest rule for interpolate(size=(oh, ow)): source = min(floor(dst * f32(in/out)), in - 1), in f32. */
export function upsampleNearestRef(x: Float64Array, shape: readonly number[], oh: number, ow: number): Float64Array {
  const [n, c, h, w] = shape;
  const sy = Math.fround(h / oh);
  const sx = Math.fround(w / ow);
  const src = (d: number, scale: number, size: number) => Math.min(Math.floor(Math.fround(d * scale)), size - 1);
  const out = new Float64Array(n * c * oh * ow);
  for (let p = 0; p < n * c; p++) {
    for (let y = 0; y < oh; y++) {
      for (let xx = 0; xx < ow; xx++) {
        out[(p * oh + y) * ow + xx] = x[(p * h + src(y, sy, h)) * w + src(xx, sx, w)];
      }
    }
  }
  return out;
}
