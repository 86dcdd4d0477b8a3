// Small helpers of the attention backward (no tiles, no subgroups):
//   ATT_DELTA  one thread per query: delta = dO . O (= sum_j P_ij dP_ij, the softmax backward's row term)
//   ATT_SUM    out[i] = sum_z part[z * n + i]: adds the per-query-chunk partial copies of dk or dv
// Same Params as attention_common.wgsl; rows of O and dO are read through the output's strides.
// F16 (needs shader-f16): O and dO (ATT_DELTA) or the summed output (ATT_SUM) are f16 (E); sums are
// f32, delta and the partial copies stay f32, and an f16 sum is rounded once.
#if F16
enable f16;
alias E = f16;
#else
alias E = f32;
#endif

struct Params {
  B: u32,
  H: u32,
  Lq: u32,
  Lk: u32,
  causal: u32,
  blocks: u32,
  scale: f32,
  chunk_len: u32,   // ATT_SUM: number of partial copies
  qs: vec4<u32>,    // ATT_SUM: w = elements per copy
  ks: vec4<u32>,
  vs: vec4<u32>,
  os: vec4<u32>,    // strides (batch, head, row) of O and dO
}

const D: u32 = {{D}}u;

#if ATT_DELTA
@group(0) @binding(0) var<storage, read> o: array<E>;
@group(0) @binding(1) var<storage, read> dout: array<E>;
@group(0) @binding(2) var<storage, read_write> delta: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let t = (wid.y * nwg.x + wid.x) * 64u + lid; // (b, h, i) flattened
  if (t >= p.B * p.H * p.Lq) { return; }
  let i = t % p.Lq;
  let bh = t / p.Lq;
  let base = (bh / p.H) * p.os.x + (bh % p.H) * p.os.y + i * p.os.z;
  var acc = 0.0;
  for (var c = 0u; c < D; c++) { acc += f32(o[base + c]) * f32(dout[base + c]); }
  delta[t] = acc;
}
#endif

#if ATT_SUM
@group(0) @binding(0) var<storage, read> part: array<f32>;
@group(0) @binding(1) var<storage, read_write> sum_out: array<E>;
@group(0) @binding(2) var<uniform> p: Params;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let i = (wid.y * nwg.x + wid.x) * 256u + lid;
  let n = p.qs.w;
  if (i >= n) { return; }
  var acc = 0.0;
  for (var z = 0u; z < p.chunk_len; z++) { acc += part[z * n + i]; }
  sum_out[i] = E(acc);
}
#endif
