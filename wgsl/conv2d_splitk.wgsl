// Split-K reduction of the tiled conv passes (conv2d_tiled.wgsl): the pass's product kernel wrote
// each K chunk's f32 sums, without bias or accumulation, into partials [images * splits][rows][cols];
// one invocation per output element sums its `splits` partials in chunk order (f32), then does what
// the unsplit kernel's store does: add the value already in dst (a later pass over more reduction
// channels or images) or the bias, and store (rounded once to f16 with DST_F16).
//   forward / input gradient: cols = output pixels, dst[out_off + image * out_bstride + row * out_mstride + col]
//   weight gradient: one image, cols = (ci, tap) columns of this pass, out_mstride = dW's row stride
// Grid: x (and y past 65535 workgroups) over rows * cols, z over the pass's images.
//   defines: DST_F16, BIAS_F16 (a dummy bias is bound when `has_bias` is 0), HALF (either)
#if HALF
enable f16;
#endif

struct Params {
  rows: u32, cols: u32, splits: u32, m_first: u32,
  out_off: u32, out_bstride: u32, out_mstride: u32, accumulate: u32,
  has_bias: u32, _pad0: u32, _pad1: u32, _pad2: u32,
}

@group(0) @binding(0) var<storage, read> part: array<f32>;
#if BIAS_F16
@group(0) @binding(1) var<storage, read> bias: array<f16>;
#else
@group(0) @binding(1) var<storage, read> bias: array<f32>;
#endif
#if DST_F16
@group(0) @binding(2) var<storage, read_write> dst: array<f16>;
#else
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;
#endif
@group(0) @binding(3) var<uniform> p: Params;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let rc = p.rows * p.cols;
  let i = gid.y * nwg.x * 256u + gid.x;
  if (i >= rc) { return; }
  let m = i / p.cols;
  var at = gid.z * p.splits * rc + i;
  var r = 0.0;
  for (var s = 0u; s < p.splits; s++) {
    r += part[at];
    at += rc;
  }
  let di = p.out_off + gid.z * p.out_bstride + m * p.out_mstride + (i - m * p.cols);
  if (p.accumulate != 0u) {
    r += f32(dst[di]);
  } else if (p.has_bias != 0u) {
    r += f32(bias[p.m_first + m]);
  }
#if DST_F16
  dst[di] = f16(r);
#else
  dst[di] = r;
#endif
}
