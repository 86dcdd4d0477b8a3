#if SUBGROUP_SUM
enable subgroups;
#endif
#if X_F16
enable f16;
#endif
// Group and layer normalisation, forward and backward. Statistics are two-pass (mean, then the mean
// of squared deviations) and accumulated in f32; a group's data is re-read from cache.
//
// Both norms are one "group" = a contiguous run of cg*S elements normalised together:
//   group norm  x [N, C, S] (S = spatial size), G groups of cg = C/G channels; affine per channel
//   layer norm  x [R, D] seen as N = R rows, G = 1, cg = D, S = 1; affine per element (AFFINE_PER_ELEMENT)
// Kernels (one define each):
//   NORM_FWD        one workgroup per group: stats [groups, 2] = (mean, rstd), out = affine(xhat) (+ SiLU)
//   NORM_BWD_X      one workgroup per group: dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))
//                   with dxhat = dy * w, dy = dout (times SiLU' of the affine output when SILU)
//   GN_BWD_PARTIAL  one workgroup per (n, c): partial[n, c] = (sum_s dy, sum_s dy * xhat)
//   LN_BWD_PARTIAL  one thread per column over a chunk of rows: partial[chunk, c] = (sum dy, sum dy * xhat)
//   PARAM_REDUCE    one thread per channel: dbias[c] = sum_k partial[k, c].x, dweight[c] = sum_k partial[k, c].y
// VEC4: x/out (and, with AFFINE_PER_ELEMENT, the affine parameters) are read as vec4 (needs S % 4 == 0,
// or D % 4 == 0 for layer norm). Indices below are in units of T (f32 or vec4).
// X_F16: f16 activations (needs shader-f16): x, out, dout and dx are stored as f16 (XS), widened to
// T on load; statistics, affine parameters, partial sums and all arithmetic stay f32, and each
// stored value is rounded once.

struct Params {
  groups: u32,   // groups (or rows, or channels) in this dispatch
  C: u32,        // channels (layer norm: D)
  S: u32,        // spatial size in T units (layer norm: 1)
  G: u32,        // groups per sample (layer norm: 1)
  cg: u32,       // channels per group
  n0: u32,       // first sample of this window (stats and partials are indexed globally)
  rows: u32,     // LN_BWD_PARTIAL: rows per chunk; PARAM_REDUCE: number of partial rows
  eps: f32,
}

#if VEC4
alias T = vec4<f32>;
#if X_F16
alias XS = vec4<f16>;
#else
alias XS = vec4<f32>;
#endif
#else
alias T = f32;
#if X_F16
alias XS = f16;
#else
alias XS = f32;
#endif
#endif
#if AFFINE_PER_ELEMENT
alias W = T;
#else
alias W = f32;
#endif

fn hsum(v: T) -> f32 {
#if VEC4
  return dot(v, vec4<f32>(1.0));
#else
  return v;
#endif
}

fn sigmoid(v: T) -> T {
  return 1.0 / (1.0 + exp(-v));
}

// Affine parameter index of element e (T units) of group g.
fn affine_index(e: u32, g: u32, cg: u32, S: u32) -> u32 {
#if AFFINE_PER_ELEMENT
  return e;
#else
  return g * cg + e / S;
#endif
}

const WG: u32 = {{WG}}u;
#if SUBGROUP_SUM
// The workgroup is exactly one subgroup (CPU adapters: 8 lanes): the sum is one subgroup
// operation, with no workgroup memory and no barriers (both costly on lavapipe).
fn wg_sum(v: vec2<f32>, lid: u32) -> vec2<f32> {
  return subgroupAdd(v);
}
#else
var<workgroup> red: array<vec2<f32>, {{WG}}>;

fn wg_sum(v: vec2<f32>, lid: u32) -> vec2<f32> {
  red[lid] = v;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s = s / 2u) {
    if (lid < s) { red[lid] += red[lid + s]; }
    workgroupBarrier();
  }
  let r = red[0];
  workgroupBarrier();
  return r;
}
#endif

#if NORM_FWD
@group(0) @binding(0) var<storage, read> x: array<XS>;
@group(0) @binding(1) var<storage, read> weight: array<W>;
@group(0) @binding(2) var<storage, read> bias: array<W>;
@group(0) @binding(3) var<storage, read_write> out: array<XS>;
@group(0) @binding(4) var<storage, read_write> stats: array<vec2<f32>>;
@group(0) @binding(5) var<uniform> p: Params;

@compute @workgroup_size({{WG}})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let grp = wid.y * nwg.x + wid.x;
  if (grp >= p.groups) { return; }
  let g = grp % p.G;
  let count = p.cg * p.S;
  let base = grp * count;
  let n_scalar = f32(count) * f32(sizeof_t());
  var s1 = 0.0;
  for (var e = lid; e < count; e += WG) { s1 += hsum(T(x[base + e])); }
  let mean = wg_sum(vec2<f32>(s1, 0.0), lid).x / n_scalar;
  var s2 = 0.0;
  for (var e = lid; e < count; e += WG) {
    let d = T(x[base + e]) - mean;
    s2 += hsum(d * d);
  }
  let variance = wg_sum(vec2<f32>(s2, 0.0), lid).x / n_scalar;
  let rstd = inverseSqrt(variance + p.eps);
  for (var e = lid; e < count; e += WG) {
    let c = affine_index(e, g, p.cg, p.S);
    var y = (T(x[base + e]) - mean) * rstd * weight[c] + bias[c];
#if SILU
    y = y * sigmoid(y);
#endif
    out[base + e] = XS(y);
  }
  if (lid == 0u) { stats[p.n0 * p.G + grp] = vec2<f32>(mean, rstd); }
}
#endif

fn sizeof_t() -> u32 {
#if VEC4
  return 4u;
#else
  return 1u;
#endif
}

// dL/dy from dL/dout, where out = SiLU(y) when SILU.
fn dy_of(dout: T, y: T) -> T {
#if SILU
  let sg = sigmoid(y);
  return dout * sg * (1.0 + y * (1.0 - sg));
#else
  return dout;
#endif
}

#if NORM_BWD_X
@group(0) @binding(0) var<storage, read> x: array<XS>;
@group(0) @binding(1) var<storage, read> dout: array<XS>;
@group(0) @binding(2) var<storage, read> weight: array<W>;
@group(0) @binding(3) var<storage, read> bias: array<W>;
@group(0) @binding(4) var<storage, read> stats: array<vec2<f32>>;
@group(0) @binding(5) var<storage, read_write> dx: array<XS>;
@group(0) @binding(6) var<uniform> p: Params;

@compute @workgroup_size({{WG}})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let grp = wid.y * nwg.x + wid.x;
  if (grp >= p.groups) { return; }
  let g = grp % p.G;
  let count = p.cg * p.S;
  let base = grp * count;
  let st = stats[p.n0 * p.G + grp];
  let mean = st.x;
  let rstd = st.y;
  // sums of dxhat and dxhat * xhat over the group
  var acc = vec2<f32>(0.0);
  for (var e = lid; e < count; e += WG) {
    let c = affine_index(e, g, p.cg, p.S);
    let xh = (T(x[base + e]) - mean) * rstd;
    let dxh = dy_of(T(dout[base + e]), xh * weight[c] + bias[c]) * weight[c];
    acc += vec2<f32>(hsum(dxh), hsum(dxh * xh));
  }
  let inv_n = 1.0 / (f32(count) * f32(sizeof_t()));
  let sums = wg_sum(acc, lid) * inv_n;
  for (var e = lid; e < count; e += WG) {
    let c = affine_index(e, g, p.cg, p.S);
    let xh = (T(x[base + e]) - mean) * rstd;
    let dxh = dy_of(T(dout[base + e]), xh * weight[c] + bias[c]) * weight[c];
    dx[base + e] = XS(rstd * (dxh - sums.x - xh * sums.y));
  }
}
#endif

#if GN_BWD_PARTIAL
@group(0) @binding(0) var<storage, read> x: array<XS>;
@group(0) @binding(1) var<storage, read> dout: array<XS>;
@group(0) @binding(2) var<storage, read> weight: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read> stats: array<vec2<f32>>;
@group(0) @binding(5) var<storage, read_write> partial: array<vec2<f32>>;
@group(0) @binding(6) var<uniform> p: Params;

// One workgroup per (n, c) of the window; p.groups = samples in window * C.
@compute @workgroup_size({{WG}})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let nc = wid.y * nwg.x + wid.x;
  if (nc >= p.groups) { return; }
  let n = nc / p.C;
  let c = nc % p.C;
  let st = stats[(p.n0 + n) * p.G + c / p.cg];
  let base = nc * p.S;
  var acc = vec2<f32>(0.0);
  for (var s = lid; s < p.S; s += WG) {
    let xh = (T(x[base + s]) - st.x) * st.y;
    let dy = dy_of(T(dout[base + s]), xh * weight[c] + bias[c]);
    acc += vec2<f32>(hsum(dy), hsum(dy * xh));
  }
  let r = wg_sum(acc, lid);
  if (lid == 0u) { partial[p.n0 * p.C + nc] = r; }
}
#endif

#if LN_BWD_PARTIAL
@group(0) @binding(0) var<storage, read> x: array<XS>;
@group(0) @binding(1) var<storage, read> dout: array<XS>;
@group(0) @binding(2) var<storage, read> stats: array<vec2<f32>>;
@group(0) @binding(3) var<storage, read_write> partial: array<vec2<f32>>;
@group(0) @binding(4) var<uniform> p: Params;

// Grid: x = column blocks of WG, y = row chunks of p.rows rows; p.groups = total rows, p.C = D.
@compute @workgroup_size({{WG}})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let c = wid.x * WG + lid;
  if (c >= p.C) { return; }
  let r0 = wid.y * p.rows;
  let r1 = min(r0 + p.rows, p.groups);
  var acc = vec2<f32>(0.0);
  for (var r = r0; r < r1; r++) {
    let st = stats[r];
    let i = r * p.C + c;
    let xh = (T(x[i]) - st.x) * st.y;
    acc += vec2<f32>(T(dout[i]), T(dout[i]) * xh);
  }
  partial[wid.y * p.C + c] = acc;
}
#endif

#if PARAM_REDUCE
@group(0) @binding(0) var<storage, read> partial: array<vec2<f32>>;
@group(0) @binding(1) var<storage, read_write> dweight: array<f32>;
@group(0) @binding(2) var<storage, read_write> dbias: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;

@compute @workgroup_size({{WG}})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let c = (wid.y * nwg.x + wid.x) * WG + lid;
  if (c >= p.C) { return; }
  var acc = vec2<f32>(0.0);
  for (var k = 0u; k < p.rows; k++) { acc += partial[k * p.C + c]; }
  dbias[c] = acc.x;
  dweight[c] = acc.y;
}
#endif
