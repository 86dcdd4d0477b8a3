// Elementwise kernels, specialised by defines:
//   T          element type computed in: f32, or vec4<f32> for same-shape maps over a multiple of 4
//              values (each storage access moves 4 values; on CPU adapters loads dominate).
//   S          element type stored: T, or its f16 counterpart (f16 / vec4<f16>, HALF set: needs
//              shader-f16); loads widen to T, the result is rounded once to S.
//   UNARY      out = EXPR(a); binary otherwise: out = EXPR(a, b)
//   BROADCAST  numpy broadcasting of the inputs to the output shape (T = f32; RANK dims)
//   KIND_FILL  out = p.s0
//   GEGLU / GEGLU_BWD  diffusers' gated GELU over rows of 2I values and its backward
//   EXPR       a WGSL expression of `a` (and `b`, and the uniforms `p.s0`, `p.s1`) of type T; wrap
//              scalars passed to builtins in T(…) so one expression serves both element types.
// One thread per element (per vec4 for T = vec4<f32>); the grid may be 2-D when a dispatch exceeds
// the per-dimension limit.

#if HALF
enable f16;
#endif
alias T = {{T}};
alias S = {{S}};

struct Params {
  // Elements (vec4s when T = vec4<f32>) to process.
  n: u32,
  rank: u32,
  s0: f32,
  s1: f32,
  // Broadcasting: output dims and the input strides (0 where broadcast), 8 dims max.
  dims: array<vec4<u32>, 2>,
  stride_a: array<vec4<u32>, 2>,
  stride_b: array<vec4<u32>, 2>,
}

#if KIND_FILL
@group(0) @binding(0) var<storage, read_write> out: array<S>;
@group(0) @binding(1) var<uniform> p: Params;
#else
#if GEGLU
// GEGLU over rows of 2I values: out[r, i] = x[r, i] * gelu(x[r, I + i]); p.rank holds I.
@group(0) @binding(0) var<storage, read> in_a: array<S>;
@group(0) @binding(1) var<storage, read_write> out: array<S>;
@group(0) @binding(2) var<uniform> p: Params;
#else
#if GEGLU_BWD
// in_a = x [R, 2I], in_b = grad of out [R, I]; out = grad of x [R, 2I]. p.n counts out-grad elements.
@group(0) @binding(0) var<storage, read> in_a: array<S>;
@group(0) @binding(1) var<storage, read> in_b: array<S>;
@group(0) @binding(2) var<storage, read_write> out: array<S>;
@group(0) @binding(3) var<uniform> p: Params;
#else
@group(0) @binding(0) var<storage, read> in_a: array<S>;
#if UNARY
@group(0) @binding(1) var<storage, read_write> out: array<S>;
@group(0) @binding(2) var<uniform> p: Params;
#else
@group(0) @binding(1) var<storage, read> in_b: array<S>;
@group(0) @binding(2) var<storage, read_write> out: array<S>;
@group(0) @binding(3) var<uniform> p: Params;
#endif
#endif
#endif
#endif

fn dim_at(v: array<vec4<u32>, 2>, d: u32) -> u32 {
  return v[d / 4u][d % 4u];
}

// erf via the complementary error function's rational approximation (Numerical Recipes' erfcc,
// fractional error < 1.2e-7).
fn erf_approx(x: T) -> T {
  let ax = abs(x);
  let t = 1.0 / (1.0 + 0.5 * ax);
  let y = t * exp(-ax * ax - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 +
          t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 +
          t * (-0.82215223 + t * 0.17087277)))))))));
  return select(y - 1.0, 1.0 - y, x >= T(0.0));
}

fn gelu(x: T) -> T {
  return 0.5 * x * (1.0 + erf_approx(x * 0.7071067811865476));
}

fn gelu_grad(x: T) -> T {
  let cdf = 0.5 * (1.0 + erf_approx(x * 0.7071067811865476));
  let pdf = 0.3989422804014327 * exp(-0.5 * x * x);
  return cdf + x * pdf;
}

fn sigmoid(x: T) -> T {
  return 1.0 / (1.0 + exp(-x));
}

// The index comes from global_invocation_id (the same value as (wid.y * nwg.x + wid.x) * 256 + lid
// for this 1-D workgroup): lavapipe runs the add 25-35% faster written this way.
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid.y * nwg.x * 256u + gid.x;
  if (i >= p.n) { return; }
#if KIND_FILL
  out[i] = S(T(p.s0));
#else
#if GEGLU
  let half = p.rank;
  let r = i / half;
  let c = i % half;
  out[i] = S(T(in_a[r * 2u * half + c]) * gelu(T(in_a[r * 2u * half + half + c])));
#else
#if GEGLU_BWD
  let half = p.rank;
  let r = i / half;
  let c = i % half;
  let h = T(in_a[r * 2u * half + c]);
  let gate = T(in_a[r * 2u * half + half + c]);
  let g = T(in_b[i]);
  out[r * 2u * half + c] = S(g * gelu(gate));
  out[r * 2u * half + half + c] = S(g * h * gelu_grad(gate));
#else
#if UNARY
#if BROADCAST
  var rem = i;
  var ia = 0u;
  for (var d = {{RANK}} - 1; d >= 0; d--) {
    let dim = dim_at(p.dims, u32(d));
    ia += (rem % dim) * dim_at(p.stride_a, u32(d));
    rem = rem / dim;
  }
  let a = T(in_a[ia]);
#else
  let a = T(in_a[i]);
#endif
  out[i] = S({{EXPR}});
#else
#if BROADCAST
  var rem = i;
  var ia = 0u;
  var ib = 0u;
  for (var d = {{RANK}} - 1; d >= 0; d--) {
    let dim = dim_at(p.dims, u32(d));
    let c = rem % dim;
    rem = rem / dim;
    ia += c * dim_at(p.stride_a, u32(d));
    ib += c * dim_at(p.stride_b, u32(d));
  }
  let a = T(in_a[ia]);
  let b = T(in_b[ib]);
#else
  let a = T(in_a[i]);
  let b = T(in_b[i]);
#endif
  out[i] = S({{EXPR}});
#endif
#endif
#endif
#endif
}
