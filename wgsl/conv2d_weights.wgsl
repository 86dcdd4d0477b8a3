// Conv weight re-layout for the implicit-GEMM kernels. From torch's [Cout, Cin, kh, kw] (f32 or
// f16) to f32 panels indexed by (tap, m, c) with arbitrary output strides, zero-filled where
// m >= m or c >= c (the padding up to the kernels' tile sizes). One layout call serves the
// forward (m = Cout, c = Cin) and the input gradient (m = Cin, c = Cout, FLIP: taps reversed,
// i.e. the kernel rotated by 180 degrees) through the source strides.
//   F16: the source weights are f16.
//   C_CONTIGUOUS: the output's channel stride is 1 (one vec4 store per invocation).
// A workgroup of WX x WY invocations covers WX channel groups of 4 and WY * ROWS rows; invocation
// (x, y) writes channels 4x .. 4x + 3 of rows y, y + WY, ... for every tap. The taps are the
// source's contiguous axis, so each source line is read once; the coordinates come from the ids
// (integer division is per lane and slow on CPU rasterisers).
#if F16
enable f16;
#endif

struct Params {
  m: u32,          // real rows
  c: u32,          // real channels
  taps: u32,       // kh * kw
  c4: u32,         // channel groups of 4 in the output (c_pad / 4)
  stride_m: u32,   // source element strides of m and c
  stride_c: u32,
  out_tap: u32,    // output element strides of tap, m and c
  out_m: u32,
  out_c: u32,
  m_pad: u32,      // rows in the output
  _pad1: u32,
  _pad2: u32,
}

#if F16
@group(0) @binding(0) var<storage, read> w_src: array<f16>;
#else
@group(0) @binding(0) var<storage, read> w_src: array<f32>;
#endif
#if C_CONTIGUOUS
@group(0) @binding(1) var<storage, read_write> w_out: array<vec4<f32>>;
#else
@group(0) @binding(1) var<storage, read_write> w_out: array<f32>;
#endif
@group(0) @binding(2) var<uniform> p: Params;

@compute @workgroup_size({{WX}}, {{WY}})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let c4 = wid.x * {{WX}}u + lid.x;
  if (c4 >= p.c4) { return; }
  let m0 = wid.y * ({{WY}}u * {{ROWS}}u) + lid.y;
  for (var i = 0u; i < {{ROWS}}u; i++) {
    let m = m0 + i * {{WY}}u;
    if (m < p.m_pad) {
      for (var tap = 0u; tap < p.taps; tap++) { write(c4, m, tap); }
    }
  }
}

fn write(c4: u32, m: u32, tap: u32) {
#if FLIP
  let src_tap = p.taps - 1u - tap;
#else
  let src_tap = tap;
#endif
  var v = vec4<f32>(0.0);
  if (m < p.m) {
    let row = m * p.stride_m + src_tap;
    for (var e = 0u; e < 4u; e++) {
      let c = 4u * c4 + e;
      if (c < p.c) { v[e] = f32(w_src[row + c * p.stride_c]); }
    }
  }
  let o = tap * p.out_tap + m * p.out_m + 4u * c4 * p.out_c;
#if C_CONTIGUOUS
  w_out[o / 4u] = v;
#else
  for (var e = 0u; e < 4u; e++) { w_out[o + e * p.out_c] = v[e]; }
#endif
}
