// Counter-based random numbers on the host: Philox4x32-10 (Salmon et al., SC'11) and the exact
// value mapping that wgsl/random.wgsl uses, so host and GPU draws agree (uniforms bit for bit,
// normals to a few ulp: only the GPU's log/sqrt/cos/sin differ).
//
// Stream layout: element k (k = flat index + offset, 64-bit) belongs to block j = floor(k / 4) and
// lane k % 4. Block j is Philox4x32-10 of counter (j mod 2^32, floor(j / 2^32), 0, 0) under the key
// (seed mod 2^32, floor(seed / 2^32) mod 2^32). Its four words x0..x3 give
//   uniform (lane l):  (x_l >> 8) * 2^-24                      in [0, 1)
//   normal (lanes 0, 1 from x0, x1; lanes 2, 3 from x2, x3), Box-Muller on the pair (a, b):
//     r = sqrt(-2 ln(((a >> 8) + 1) * 2^-24)),  theta = pi * ((b >> 8) * 2^-23 - 1)
//     lane 0/2: r cos(theta),  lane 1/3: r sin(theta)
// ln, cos and sin are our own f32 polynomials (see the shader), evaluated here step by step with
// f32 rounding, so host and GPU agree to about an ulp on any device.

const M0 = 0xd2511f53;
const M1 = 0xcd9e8d57;
const W0 = 0x9e3779b9;
const W1 = 0xbb67ae85;

/** High 32 bits of the 64-bit product of two u32 (exact, through 16-bit halves). */
export function mulhi32(a: number, b: number): number {
  const al = a & 0xffff;
  const ah = a >>> 16;
  const bl = b & 0xffff;
  const bh = b >>> 16;
  const ll = al * bl;
  const lh = al * bh;
  const hl = ah * bl;
  const cross = (ll >>> 16) + (lh & 0xffff) + (hl & 0xffff);
  return (ah * bh + (lh >>> 16) + (hl >>> 16) + (cross >>> 16)) >>> 0;
}

/** Philox4x32 with `rounds` rounds (10 is the standard). Returns four u32 words. */
export function philox4x32(ctr: readonly number[], key: readonly number[], rounds = 10): [number, number, number, number] {
  let [c0, c1, c2, c3] = ctr.map((v) => v >>> 0);
  let k0 = key[0] >>> 0;
  let k1 = key[1] >>> 0;
  for (let r = 0; r < rounds; r++) {
    if (r > 0) {
      k0 = (k0 + W0) >>> 0;
      k1 = (k1 + W1) >>> 0;
    }
    const hi0 = mulhi32(M0, c0);
    const lo0 = Math.imul(M0, c0) >>> 0;
    const hi1 = mulhi32(M1, c2);
    const lo1 = Math.imul(M1, c2) >>> 0;
    c0 = (hi1 ^ c1 ^ k0) >>> 0;
    c1 = lo1;
    c2 = (hi0 ^ c3 ^ k1) >>> 0;
    c3 = lo0;
  }
  return [c0, c1, c2, c3];
}

/** A seed (number up to 2^53 or bigint) as the two key words; negative seeds wrap modulo 2^64. */
export function seedKey(seed: number | bigint): [number, number] {
  if (typeof seed === "number" && !Number.isSafeInteger(seed)) throw new Error(`random seed ${seed} is not a safe integer`);
  const s = BigInt.asUintN(64, BigInt(seed));
  return [Number(s & 0xffffffffn), Number(s >> 32n)];
}

/** A stream offset (number up to 2^53 or bigint >= 0) as a bigint. */
export function offsetBig(offset: number | bigint): bigint {
  if (typeof offset === "number" && !(Number.isSafeInteger(offset) && offset >= 0)) throw new Error(`random offset ${offset} must be a non-negative safe integer`);
  const o = BigInt(offset);
  if (o < 0n || o >= 1n << 64n) throw new Error(`random offset ${offset} out of range`);
  return o;
}

export type RandomKind = "bits" | "uniform" | "normal";

const f = Math.fround;
const TWO_POW_M24 = 2 ** -24;
const TWO_POW_M23 = 2 ** -23;
// The decimal constants of wgsl/random.wgsl, rounded to f32 as the shader compiler does.
const SQRT2 = f(1.41421356);
const LN2_HI = f(0.693145751953125);
const LN2_LO = f(1.42860682030941723e-6);
const LN_SERIES = [0.333333333, 0.2, 0.142857143, 0.111111111].map(f);
const PI = f(3.14159265358979);
const SIN_SERIES = [-0.166666667, 0.00833333333, -0.000198412698, 2.75573192e-6].map(f);
const COS_SERIES = [-0.5, 0.0416666667, -0.00138888889, 2.48015873e-5, -2.75573192e-7].map(f);

/** Uniform [0, 1) from one word. */
export function wordToUniform(x: number): number {
  return (x >>> 8) * TWO_POW_M24;
}

/** 1 + z·(c0 + z·(c1 + …)) in f32 steps (Horner). */
function series(z: number, coeffs: readonly number[]): number {
  let acc = coeffs[coeffs.length - 1];
  for (let i = coeffs.length - 2; i >= 0; i--) acc = f(coeffs[i] + f(z * acc));
  return f(1 + f(z * acc));
}

const bitsView = new DataView(new ArrayBuffer(4));

/** The shader's `ln_f32`, step by step in f32. */
export function lnF32(u: number): number {
  bitsView.setFloat32(0, u, true);
  const bits = bitsView.getUint32(0, true);
  let e = ((bits >>> 23) & 0xff) - 127;
  bitsView.setUint32(0, (bits & 0x7fffff) | 0x3f800000, true);
  let m = bitsView.getFloat32(0, true);
  if (m > SQRT2) {
    m = f(m * 0.5);
    e += 1;
  }
  const s = f(f(m - 1) / f(m + 1));
  const s2 = f(s * s);
  const poly = series(s2, LN_SERIES);
  return f(f(e * LN2_HI) + f(f(e * LN2_LO) + f(f(2 * s) * poly)));
}

/** WGSL `round`: halfway cases to even. */
function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return r - x === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** The shader's `cos_sin_pi`: (cos(pi v), sin(pi v)) step by step in f32. */
export function cosSinPi(v: number): [number, number] {
  const q = roundHalfEven(f(2 * v));
  const x = f(PI * f(v - f(0.5 * q)));
  const x2 = f(x * x);
  const s = f(x * series(x2, SIN_SERIES));
  const c = series(x2, COS_SERIES);
  switch ((q + 4) % 4) {
    case 0:
      return [c, s];
    case 1:
      return [-s, c];
    case 2:
      return [-c, -s];
    default:
      return [s, -c];
  }
}

/** The two normals of one Box-Muller pair of words, in f32 steps. */
export function wordsToNormals(a: number, b: number): [number, number] {
  const u = ((a >>> 8) + 1) * TWO_POW_M24;
  const r = f(Math.sqrt(f(-2 * lnF32(u))));
  const [c, s] = cosSinPi((b >>> 8) * TWO_POW_M23 - 1);
  return [f(r * c), f(r * s)];
}

/**
 * `n` values of the stream (seed, offset + i), i < n, as the GPU's `rand`/`randn`/`randomBits`
 * produce them (bits come back as u32 numbers).
 */
export function hostRandom(kind: RandomKind, n: number, seed: number | bigint, offset: number | bigint = 0): Float64Array {
  const key = seedKey(seed);
  const first = offsetBig(offset);
  const out = new Float64Array(n);
  let block = -1n;
  let words: number[] = [];
  let normals: number[] = [];
  for (let i = 0; i < n; i++) {
    const k = first + BigInt(i);
    const j = k >> 2n;
    const lane = Number(k & 3n);
    if (j !== block) {
      block = j;
      words = philox4x32([Number(j & 0xffffffffn), Number((j >> 32n) & 0xffffffffn), 0, 0], key);
      normals = kind === "normal" ? [...wordsToNormals(words[0], words[1]), ...wordsToNormals(words[2], words[3])] : [];
    }
    out[i] = kind === "bits" ? words[lane] : kind === "uniform" ? wordToUniform(words[lane]) : normals[lane];
  }
  return out;
}
