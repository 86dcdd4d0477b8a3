// Sum over any set of axes: one workgroup per output element, each thread strides over the reduced
// elements, then a tree reduction in workgroup memory. Accumulates in f32.
// Output element o and reduced element k map to the input offset through the per-dim sizes:
// odims (kept dims, 1 where reduced), rdims (reduced dims, 1 where kept), and the input strides.

struct Params {
  n_out: u32,
  n_red: u32,
  rank: u32,
  scale: f32,
  odims: array<vec4<u32>, 2>,
  rdims: array<vec4<u32>, 2>,
  strides: array<vec4<u32>, 2>,
}

@group(0) @binding(0) var<storage, read> src: array<f32>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<uniform> p: Params;

const WG: u32 = 64u;
var<workgroup> partial: array<f32, 64>;

fn dim_at(v: array<vec4<u32>, 2>, d: u32) -> u32 {
  return v[d / 4u][d % 4u];
}

fn offset_of(lin: u32, dims: array<vec4<u32>, 2>) -> u32 {
  var rem = lin;
  var off = 0u;
  for (var d = i32(p.rank) - 1; d >= 0; d--) {
    let n = dim_at(dims, u32(d));
    off += (rem % n) * dim_at(p.strides, u32(d));
    rem = rem / n;
  }
  return off;
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let o = wid.y * nwg.x + wid.x;
  if (o >= p.n_out) { return; }
  let base = offset_of(o, p.odims);
  var acc = 0.0;
  for (var k = lid; k < p.n_red; k += WG) {
    acc += src[base + offset_of(k, p.rdims)];
  }
  partial[lid] = acc;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s = s / 2u) {
    if (lid < s) { partial[lid] += partial[lid + s]; }
    workgroupBarrier();
  }
  if (lid == 0u) { out[o] = partial[0] * p.scale; }
}
