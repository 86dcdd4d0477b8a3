// Source preparation for the register-blocked conv kernel: NCHW planes -> a zero-padded,
// optionally zero-dilated NHWC copy with the channels padded to a multiple of 8, so that the
// conv kernel reads every tap without bounds checks and 4 channels per vec4 load.
//
//   out[n, py, px, ch] = src[n, ch, (py - off_y) / dil_y, (px - off_x) / dil_x]
//                        where ch < c, both divisions are exact and land inside the plane; else 0.
//
// The forward uses dil = 1 and off = the top/left padding; the input gradient (DILATED) uses
// dil = stride and off = k - 1 - pad (the transposed convolution as a stride-1 conv with the
// rotated kernel). Invocation (x = px, y = py, z = n * cp4 + channel group) writes 4 channels:
// the grid carries the coordinates, so only DILATED divides (integer division is slow per lane).
// SRC_F16: f16 activations (needs shader-f16): src and the prepared copy are f16 (an exact copy).
#if SRC_F16
enable f16;
alias S = f16;
#else
alias S = f32;
#endif

struct Params {
  c: u32,            // real channels
  cp4: u32,          // channel groups of 4 in the output
  src_h: u32,
  src_w: u32,
  ph: u32,           // output plane
  pw: u32,
  dil_y: u32,
  dil_x: u32,
  off_y: i32,
  off_x: i32,
  src_off: u32,      // element offset of image 0, channel 0 in the src binding
  src_bstride: u32,  // elements between images in src
  n_first: u32,      // image of this dispatch's z = 0
  _pad0: u32,
  _pad1: u32,
  _pad2: u32,
}

@group(0) @binding(0) var<storage, read> src: array<S>;
@group(0) @binding(1) var<storage, read_write> dst: array<vec4<S>>;
@group(0) @binding(2) var<uniform> p: Params;

// WG: invocations per workgroup along the row (8 to 64, the smallest power of two covering pw, so
// narrow planes do not idle most lanes); px from global_invocation_id (cheaper on lavapipe than
// workgroup_id * WG + local_invocation_index, the same value).
@compute @workgroup_size({{WG}})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(global_invocation_id) gid: vec3<u32>) {
  let px = gid.x;
  if (px >= p.pw) { return; }
  let py = wid.y;
  let n = p.n_first + wid.z / p.cp4;   // uniform per workgroup
  let g = wid.z % p.cp4;
  let u = i32(py) - p.off_y;
  let v = i32(px) - p.off_x;
#if DILATED
  let sy = u32(max(u, 0)) / p.dil_y;
  let sx = u32(max(v, 0)) / p.dil_x;
  let inside = u >= 0 && v >= 0 && sy * p.dil_y == u32(u) && sx * p.dil_x == u32(v) && sy < p.src_h && sx < p.src_w;
#else
  let sy = u32(u);   // negative wraps past src_h
  let sx = u32(v);
  let inside = sy < p.src_h && sx < p.src_w;
#endif
  var r = vec4<S>(0.0);
  if (inside) {
    let plane = p.src_h * p.src_w;
    let base = p.src_off + n * p.src_bstride + sy * p.src_w + sx;
    for (var e = 0u; e < 4u; e++) {
      let ch = 4u * g + e;
      if (ch < p.c) { r[e] = src[base + ch * plane]; }
    }
  }
  dst[((n * p.ph + py) * p.pw + px) * p.cp4 + g] = r;
}
