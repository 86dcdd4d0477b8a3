// Strided copy: the one kernel behind permute, transpose, slice, concat and the slice gradient.
// The host collapses the copy to dims (outer..., mid, inner) and dispatches a 3-D grid: x runs over
// inner, y over mid, z over the flattened outer dims (each from x0, y0, z0 when a grid is split). An
// element at coordinates c is read from src[src_base + sum(c * src_strides)] and written to
// dst[dst_base + sum(c * dst_strides)]. Only outer dims beyond the first need integer division
// (slow on CPU rasterisers), and only when the copy has more than three collapsed dims.
// Elements are copied as bits: T is u32 for f32 and i32 data, f16 for half tensors (F16).
// F16_PACKED copies halves without the shader-f16 feature: both buffers are read as u32 words holding
// two halves; an invocation clears and sets only its own 16 bits of the destination word with two
// atomics, so the neighbour half, written by another invocation, is never lost.
#if F16
enable f16;
#endif

struct Params {
  inner: u32,
  mid: u32,
  outer: u32,
  n_outer_dims: u32,
  src_base: u32,
  dst_base: u32,
  x0: u32,
  y0: u32,
  z0: u32,
  pad0: u32,
  pad1: u32,
  pad2: u32,
  // strides of inner, mid, then the outer dims innermost first (up to 6)
  src_strides: array<vec4<u32>, 2>,
  dst_strides: array<vec4<u32>, 2>,
  // sizes of the outer dims innermost first (up to 6)
  outer_dims: array<vec4<u32>, 2>,
}

#if F16_PACKED
@group(0) @binding(0) var<storage, read> src: array<u32>;
@group(0) @binding(1) var<storage, read_write> dst: array<atomic<u32>>;
#else
@group(0) @binding(0) var<storage, read> src: array<{{T}}>;
@group(0) @binding(1) var<storage, read_write> dst: array<{{T}}>;
#endif
@group(0) @binding(2) var<uniform> p: Params;

fn at(v: array<vec4<u32>, 2>, d: u32) -> u32 {
  return v[d / 4u][d % 4u];
}

@compute @workgroup_size({{WG_X}}, {{WG_Y}}, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let x = gid.x + p.x0;
  let y = gid.y + p.y0;
  let z = gid.z + p.z0;
  if (x >= p.inner || y >= p.mid || z >= p.outer) { return; }
  var si = p.src_base + x * at(p.src_strides, 0u) + y * at(p.src_strides, 1u);
  var di = p.dst_base + x * at(p.dst_strides, 0u) + y * at(p.dst_strides, 1u);
  if (p.n_outer_dims == 1u) {
    si += z * at(p.src_strides, 2u);
    di += z * at(p.dst_strides, 2u);
  } else {
    var rem = z;
    for (var d = 0u; d < p.n_outer_dims; d++) {
      let size = at(p.outer_dims, d);
      let c = rem % size;
      rem = rem / size;
      si += c * at(p.src_strides, d + 2u);
      di += c * at(p.dst_strides, d + 2u);
    }
  }
#if F16_PACKED
  let half = (src[si >> 1u] >> (16u * (si & 1u))) & 0xffffu;
  let shift = 16u * (di & 1u);
  atomicAnd(&dst[di >> 1u], ~(0xffffu << shift));
  atomicOr(&dst[di >> 1u], half << shift);
#else
  dst[di] = src[si];
#endif
}
