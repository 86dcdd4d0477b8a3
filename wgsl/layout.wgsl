// Strided copy: the one kernel behind permute, transpose, slice, concat and the slice gradient.
// Element i (of p.n) has coordinates c over p.dims (row-major); it is read from
// src[src_base + sum(c * src_strides)] and written to dst[dst_base + sum(c * dst_strides)].
// Elements are copied as bits: T is u32 for f32 and i32 data, f16 for half tensors (F16).
#if F16
enable f16;
#endif

struct Params {
  n: u32,
  rank: u32,
  src_base: u32,
  dst_base: u32,
  dims: array<vec4<u32>, 2>,
  src_strides: array<vec4<u32>, 2>,
  dst_strides: array<vec4<u32>, 2>,
}

@group(0) @binding(0) var<storage, read> src: array<{{T}}>;
@group(0) @binding(1) var<storage, read_write> dst: array<{{T}}>;
@group(0) @binding(2) var<uniform> p: Params;

fn dim_at(v: array<vec4<u32>, 2>, d: u32) -> u32 {
  return v[d / 4u][d % 4u];
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let i = (wid.y * nwg.x + wid.x) * 256u + lid;
  if (i >= p.n) { return; }
  var rem = i;
  var si = p.src_base;
  var di = p.dst_base;
  for (var d = i32(p.rank) - 1; d >= 0; d--) {
    let size = dim_at(p.dims, u32(d));
    let c = rem % size;
    rem = rem / size;
    si += c * dim_at(p.src_strides, u32(d));
    di += c * dim_at(p.dst_strides, u32(d));
  }
  dst[di] = src[si];
}
