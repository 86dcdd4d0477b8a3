// Counter-based random numbers: Philox4x32-10, then uniforms or Box-Muller normals.
// The stream layout and value mapping are documented in src/tensor/philox.ts (the host twin).
// Thread t handles Philox block j = block0 + t (64-bit), whose lanes are stream elements 4j..4j+3;
// lane l lands at output index 4t + l - lead (lead = the offset's position inside its first block).
// A value therefore depends only on (seed, flat index + offset), never on the dispatch shape.
// KIND: BITS (u32 words, stored as i32), UNIFORM, NORMAL.

struct Params {
  n: u32,
  key0: u32,
  key1: u32,
  block0_lo: u32,
  block0_hi: u32,
  lead: u32,
}

#if BITS
@group(0) @binding(0) var<storage, read_write> out: array<u32>;
#else
@group(0) @binding(0) var<storage, read_write> out: array<f32>;
#endif
@group(0) @binding(1) var<uniform> p: Params;

fn mulhi(a: u32, b: u32) -> u32 {
  let al = a & 0xffffu;
  let ah = a >> 16u;
  let bl = b & 0xffffu;
  let bh = b >> 16u;
  let ll = al * bl;
  let lh = al * bh;
  let hl = ah * bl;
  let cross = (ll >> 16u) + (lh & 0xffffu) + (hl & 0xffffu);
  return ah * bh + (lh >> 16u) + (hl >> 16u) + (cross >> 16u);
}

fn philox(ctr: vec4<u32>, key: vec2<u32>) -> vec4<u32> {
  var c = ctr;
  var k = key;
  for (var r = 0u; r < 10u; r++) {
    if (r > 0u) {
      k = k + vec2<u32>(0x9e3779b9u, 0xbb67ae85u);
    }
    let hi0 = mulhi(0xd2511f53u, c.x);
    let lo0 = 0xd2511f53u * c.x;
    let hi1 = mulhi(0xcd9e8d57u, c.z);
    let lo1 = 0xcd9e8d57u * c.z;
    c = vec4<u32>(hi1 ^ c.y ^ k.x, lo1, hi0 ^ c.w ^ k.y, lo0);
  }
  return c;
}

// Own f32 log, sin and cos from + - * / only, so that any device (and the host twin) gives the
// same values to an ulp or so; WGSL's built-ins only promise absolute errors (2^-21 for log near 1,
// 2^-11 for sin/cos), which would lose all relative accuracy for radii near zero.

/** ln(u) for u > 0, relative error ~1 ulp (atanh series on the mantissa reduced to [0.707, 1.414)). */
fn ln_f32(u: f32) -> f32 {
  let bits = bitcast<u32>(u);
  var e = f32(i32((bits >> 23u) & 0xffu) - 127);
  var m = bitcast<f32>((bits & 0x7fffffu) | 0x3f800000u);
  if (m > 1.41421356) {
    m = m * 0.5;
    e = e + 1.0;
  }
  let s = (m - 1.0) / (m + 1.0);
  let s2 = s * s;
  let series = 1.0 + s2 * (0.333333333 + s2 * (0.2 + s2 * (0.142857143 + s2 * 0.111111111)));
  return e * 0.693145751953125 + (e * 1.42860682030941723e-6 + 2.0 * s * series);
}

/** (cos(pi v), sin(pi v)) for v in [-1, 1]: quadrant from round(2v), Taylor polynomials on [-pi/4, pi/4]. */
fn cos_sin_pi(v: f32) -> vec2<f32> {
  let q = round(2.0 * v);
  let x = 3.14159265358979 * (v - 0.5 * q);
  let x2 = x * x;
  let s = x * (1.0 + x2 * (-0.166666667 + x2 * (0.00833333333 + x2 * (-0.000198412698 + x2 * 2.75573192e-6))));
  let c = 1.0 + x2 * (-0.5 + x2 * (0.0416666667 + x2 * (-0.00138888889 + x2 * (2.48015873e-5 + x2 * -2.75573192e-7))));
  let quadrant = (i32(q) + 4) % 4;
  if (quadrant == 0) { return vec2<f32>(c, s); }
  if (quadrant == 1) { return vec2<f32>(-s, c); }
  if (quadrant == 2) { return vec2<f32>(-c, -s); }
  return vec2<f32>(s, -c);
}

fn normal_pair(a: u32, b: u32) -> vec2<f32> {
  let u = f32((a >> 8u) + 1u) * 5.9604644775390625e-8; // (0, 1], exact
  let r = sqrt(-2.0 * ln_f32(u));
  let v = f32(b >> 8u) * 1.1920928955078125e-7 - 1.0; // [-1, 1), exact
  return r * cos_sin_pi(v);
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let t = (wid.y * nwg.x + wid.x) * 64u + lid;
  if (t * 4u >= p.n + p.lead) { return; }
  let lo = p.block0_lo + t;
  let hi = p.block0_hi + select(0u, 1u, lo < t); // carry of the 64-bit add
  let w = philox(vec4<u32>(lo, hi, 0u, 0u), vec2<u32>(p.key0, p.key1));
#if BITS
  let v = w;
#endif
#if UNIFORM
  let v = vec4<f32>(vec4<f32>(w >> vec4<u32>(8u)) * 5.9604644775390625e-8);
#endif
#if NORMAL
  let v = vec4<f32>(normal_pair(w.x, w.y), normal_pair(w.z, w.w));
#endif
  for (var l = 0u; l < 4u; l++) {
    let idx = t * 4u + l;
    if (idx >= p.lead && idx - p.lead < p.n) {
      out[idx - p.lead] = v[l];
    }
  }
}
