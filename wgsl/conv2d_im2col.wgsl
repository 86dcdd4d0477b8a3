// im2col for the GEMM form of conv2d on CPU adapters (conv_gemm.ts `convIm2col`): the patches of a
// chunk of output rows, one row of K = C * kh * kw values per output pixel, in torch's weight order
// (channel-major, then ky, kx), so that the product with the weight [Cout, K] reads both operands
// contiguously along K (matmul_k4.wgsl):
//
//   dst[i][q][c * taps + ky * kw + kx] = src[i][c][qy * sh + ky - pt][qx * sw + kx - pl]   (0 outside)
//
// for images i of the chunk and output pixels q = (qy - y0) * wo + qx of rows [y0, y0 + rows).
// Invocation (x = qx, y = qy - y0, z = i * C + c) writes the taps of one (pixel, channel): the grid
// carries the coordinates, so no lane divides (integer division is per lane and slow on lavapipe).
// SRC_F16: f16 activations (needs shader-f16): src and the patches are f16 (an exact copy).
#if SRC_F16
enable f16;
alias S = f16;
#else
alias S = f32;
#endif

struct Params {
  c: u32,
  h: u32,
  w: u32,
  wo: u32,
  kh: u32,
  kw: u32,
  sh: u32,
  sw: u32,
  pt: u32,
  pl: u32,
  src_off: u32,   // element offset of the chunk's image 0 in the src binding
  y0: u32,        // first output row of the chunk
  rows: u32,      // output rows in the chunk
  _pad0: u32,
  _pad1: u32,
  _pad2: u32,
}

@group(0) @binding(0) var<storage, read> src: array<S>;
@group(0) @binding(1) var<storage, read_write> dst: array<S>;
@group(0) @binding(2) var<uniform> p: Params;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let qx = wid.x * 64u + lid;
  if (qx >= p.wo) { return; }
  let i = wid.z / p.c;   // uniform per workgroup
  let c = wid.z % p.c;
  let qy = p.y0 + wid.y;
  let taps = p.kh * p.kw;
  let sbase = p.src_off + (i * p.c + c) * p.h * p.w;
  var o = ((i * p.rows + wid.y) * p.wo + qx) * p.c * taps + c * taps;
  let y0 = i32(qy * p.sh) - i32(p.pt);
  let x0 = i32(qx * p.sw) - i32(p.pl);
  for (var ky = 0u; ky < p.kh; ky++) {
    let y = u32(y0 + i32(ky));   // negative wraps past h
    for (var kx = 0u; kx < p.kw; kx++) {
      let x = u32(x0 + i32(kx));
      var v = S(0.0);
      if (y < p.h && x < p.w) { v = src[sbase + y * p.w + x]; }
      dst[o] = v;
      o++;
    }
  }
}
