// Binary map with broadcasting, for the common case where the collapsed output shape is
// [Z, Y, X] with X a multiple of 4 (e.g. a [B, C, H, W] activation plus a [B, C, 1, 1] or [C, 1, 1]
// bias, or [N, C] plus [C]). Each input either runs along X with the output (A_ROW / B_ROW: read as
// vec4s) or is constant along it (one value per row, splatted). The grid carries the coordinates:
// x = vec4 within the row (global_invocation_id.x), y and z = the row (workgroup ids), so no
// invocation divides (the general kernel in elementwise.wgsl unravels every index with % and /,
// 4x slower on lavapipe) and the per-row input offsets are uniform over the workgroup.
//
//   out[z, y, x4] = EXPR(a, b),  a = in_a[z * sa_z + y * sa_y + 4 x4 ...] (A_ROW) or in_a[z * sa_z + y * sa_y]
//
// EXPR: a WGSL expression of `a`, `b` (vec4<f32>) and the uniforms `p.s0`, `p.s1` (as elementwise.wgsl).

alias T = vec4<f32>;

struct Params {
  x4: u32,    // vec4s per output row
  sa_y: u32,  // element strides of in_a along y and z (0 where broadcast)
  sa_z: u32,
  sb_y: u32,
  sb_z: u32,
  s0: f32,
  s1: f32,
  _pad: u32,
}

#if A_ROW
@group(0) @binding(0) var<storage, read> in_a: array<vec4<f32>>;
#else
@group(0) @binding(0) var<storage, read> in_a: array<f32>;
#endif
#if B_ROW
@group(0) @binding(1) var<storage, read> in_b: array<vec4<f32>>;
#else
@group(0) @binding(1) var<storage, read> in_b: array<f32>;
#endif
@group(0) @binding(2) var<storage, read_write> out: array<vec4<f32>>;
@group(0) @binding(3) var<uniform> p: Params;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
  let x = gid.x;
  if (x >= p.x4) { return; }
  let oa = wid.z * p.sa_z + wid.y * p.sa_y;
  let ob = wid.z * p.sb_z + wid.y * p.sb_y;
#if A_ROW
  let a = in_a[oa / 4u + x];
#else
  let a = T(in_a[oa]);
#endif
#if B_ROW
  let b = in_b[ob / 4u + x];
#else
  let b = T(in_b[ob]);
#endif
  out[(wid.z * nwg.y + wid.y) * p.x4 + x] = {{EXPR}};
}
