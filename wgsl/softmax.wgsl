// Softmax over the last axis, one workgroup per row, f32 accumulation.
//   SOFTMAX_FWD  y = exp(x - max) / sum(exp(x - max))
//   SOFTMAX_BWD  dx = y * (dy - sum(dy * y))

struct Params {
  rows: u32,
  len: u32,
  _pad0: u32,
  _pad1: u32,
}

const WG: u32 = 64u;
var<workgroup> red: array<f32, 64>;

fn wg_max(v: f32, lid: u32) -> f32 {
  red[lid] = v;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s = s / 2u) {
    if (lid < s) { red[lid] = max(red[lid], red[lid + s]); }
    workgroupBarrier();
  }
  let r = red[0];
  workgroupBarrier();
  return r;
}

fn wg_sum(v: f32, lid: u32) -> f32 {
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

#if SOFTMAX_FWD
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<uniform> p: Params;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let row = wid.y * nwg.x + wid.x;
  if (row >= p.rows) { return; }
  let base = row * p.len;
  var m = -3.402823e38;
  for (var i = lid; i < p.len; i += WG) { m = max(m, x[base + i]); }
  m = wg_max(m, lid);
  var s = 0.0;
  for (var i = lid; i < p.len; i += WG) { s += exp(x[base + i] - m); }
  let inv = 1.0 / wg_sum(s, lid);
  for (var i = lid; i < p.len; i += WG) { y[base + i] = exp(x[base + i] - m) * inv; }
}
#endif

#if SOFTMAX_BWD
@group(0) @binding(0) var<storage, read> y: array<f32>;
@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read_write> dx: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let row = wid.y * nwg.x + wid.x;
  if (row >= p.rows) { return; }
  let base = row * p.len;
  var s = 0.0;
  for (var i = lid; i < p.len; i += WG) { s += dy[base + i] * y[base + i]; }
  let dot_dy_y = wg_sum(s, lid);
  for (var i = lid; i < p.len; i += WG) { dx[base + i] = y[base + i] * (dy[base + i] - dot_dy_y); }
}
#endif
