// 2-D convolution as an implicit GEMM with register blocking and no workgroup memory: the fast
// shape on CPU rasterisers (lavapipe), where an invocation is one SIMD lane, every storage load is
// a per-lane loop, and every value carried around a loop costs a masked store. So: few loads,
// each a vec4, weights shared across a subgroup by shuffles, and accumulators updated once per
// block of 8 channels.
//
//   dst[n, m, q] = bias[m] + sum over taps (ky, kx), channels c of
//                  w[tap, m, c] * src[n, qy * sh + ky, qx * sw + kx, c]
//
// `src` is prepared by conv2d_prep.wgsl (zero-padded, NHWC, channels padded to a multiple of 8)
// so no tap needs a bounds check; `w` by conv2d_weights.wgsl ([tap][m_pad][c_pad], zero-padded).
// The forward passes x; the input gradient passes dy dilated and padded, with the rotated kernel.
//
// A workgroup owns TM rows and WG * TN pixels; an invocation keeps TM x TN accumulators.
// SUBGROUPS: lane l of each subgroup (SG lanes) loads rows k * SG + l, and the subgroup trades
// them with shuffles, so each lane loads TM / SG rows instead of TM.
//   defines: WG, TM, TN, SUBGROUPS, SG (TM % SG == 0), BIAS_F16. Without a bias the host binds a
//   dummy and clears `has_bias` (one pipeline fewer to compile).
//   f16 activations (needs shader-f16): SRC_F16, the prepared source is f16 (widened to f32 on load);
//   DST_F16, dst is f16 (the f32 sum rounded once on store). HALF: any of the f16 defines.
#if SUBGROUPS
enable subgroups;
#endif
#if HALF
enable f16;
#endif

struct Params {
  m: u32,             // rows in this pass (stores are guarded)
  cb: u32,            // channel blocks of 8 in the prepared source
  kh: u32,
  kw: u32,
  pw: u32,            // prepared plane width
  dst_h: u32,
  dst_w: u32,
  sh: u32,
  sw: u32,
  src_bstride4: u32,  // vec4s per image in the prepared source
  dst_off: u32,       // element offset of this pass's image 0, row 0 in the dst binding
  dst_bstride: u32,   // elements between images in dst
  w_off4: u32,        // vec4 index in w of (tap 0, this pass's row 0, this pass's channel 0)
  w_tap4: u32,        // vec4 stride of one tap in w
  w_row4: u32,        // vec4 stride of one row in w
  m_first: u32,       // global row of this pass's row 0 (for the bias)
  accumulate: u32,    // 1: add into dst (a later chunk of channels; no bias then)
  has_bias: u32,
  _pad1: u32,
  _pad2: u32,
}

#if SRC_F16
@group(0) @binding(0) var<storage, read> src: array<vec4<f16>>;
#else
@group(0) @binding(0) var<storage, read> src: array<vec4<f32>>;
#endif
@group(0) @binding(1) var<storage, read> w: array<vec4<f32>>;
#if BIAS_F16
@group(0) @binding(2) var<storage, read> bias: array<f16>;
#else
@group(0) @binding(2) var<storage, read> bias: array<f32>;
#endif
#if DST_F16
@group(0) @binding(3) var<storage, read_write> dst: array<f16>;
#else
@group(0) @binding(3) var<storage, read_write> dst: array<f32>;
#endif
@group(0) @binding(4) var<uniform> p: Params;

// acc + <(wa, wb), (xa, xb)> over 8 channels. (Two dot products were faster on lavapipe than a
// chain of eight fma calls in our noisy measurements, never slower.)
fn dot8(acc: f32, wa: vec4<f32>, wb: vec4<f32>, xa: vec4<f32>, xb: vec4<f32>) -> f32 {
  return acc + (dot(wa, xa) + dot(wb, xb));
}

@compute @workgroup_size({{WG}})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32
#if SUBGROUPS
        , @builtin(subgroup_invocation_id) lane: u32
#endif
        ) {
  let n = wid.z;
  let m0 = wid.y * {{TM}}u;
  let dst_hw = p.dst_h * p.dst_w;
  let q0 = wid.x * ({{WG}}u * {{TN}}u) + lid;
  let cp4 = 2u * p.cb;

  // vec4 index of each pixel's (tap 0, channel 0) in the prepared source (tail pixels clamped).
  var base: array<u32, {{TN}}>;
  for (var t = 0u; t < {{TN}}u; t++) {
    let q = min(q0 + t * {{WG}}u, dst_hw - 1u);
    let qy = q / p.dst_w;
    let qx = q % p.dst_w;
    base[t] = n * p.src_bstride4 + (qy * p.sh * p.pw + qx * p.sw) * cp4;
  }

  var acc: array<f32, {{TM}} * {{TN}}>;
  for (var a = 0u; a < {{TM}}u * {{TN}}u; a++) { acc[a] = 0.0; }

  for (var ky = 0u; ky < p.kh; ky++) {
    for (var kx = 0u; kx < p.kw; kx++) {
      let xoff = (ky * p.pw + kx) * cp4;
      let wtap = p.w_off4 + (ky * p.kw + kx) * p.w_tap4 + m0 * p.w_row4;
      for (var cb = 0u; cb < p.cb; cb++) {
        var xa: array<vec4<f32>, {{TN}}>;
        var xb: array<vec4<f32>, {{TN}}>;
        for (var t = 0u; t < {{TN}}u; t++) {
          xa[t] = vec4<f32>(src[base[t] + xoff + 2u * cb]);
          xb[t] = vec4<f32>(src[base[t] + xoff + 2u * cb + 1u]);
        }
#if SUBGROUPS
        var wa: array<vec4<f32>, {{TM}} / {{SG}}>;
        var wb: array<vec4<f32>, {{TM}} / {{SG}}>;
        for (var k = 0u; k < {{TM}}u / {{SG}}u; k++) {
          let wi = wtap + (k * {{SG}}u + lane) * p.w_row4 + 2u * cb;
          wa[k] = w[wi];
          wb[k] = w[wi + 1u];
        }
        for (var l = 0u; l < {{SG}}u; l++) {
          for (var k = 0u; k < {{TM}}u / {{SG}}u; k++) {
            let ra = subgroupShuffle(wa[k], l);
            let rb = subgroupShuffle(wb[k], l);
            let r = k * {{SG}}u + l;
            for (var t = 0u; t < {{TN}}u; t++) {
              acc[r * {{TN}}u + t] = dot8(acc[r * {{TN}}u + t], ra, rb, xa[t], xb[t]);
            }
          }
        }
#else
        for (var r = 0u; r < {{TM}}u; r++) {
          let wi = wtap + r * p.w_row4 + 2u * cb;
          let ra = w[wi];
          let rb = w[wi + 1u];
          for (var t = 0u; t < {{TN}}u; t++) {
            acc[r * {{TN}}u + t] = dot8(acc[r * {{TN}}u + t], ra, rb, xa[t], xb[t]);
          }
        }
#endif
      }
    }
  }

  // Rows outer: each row's bias is loaded once, not once per pixel (loads are per-lane loops).
  let dst_base = p.dst_off + n * p.dst_bstride;
  for (var r = 0u; r < {{TM}}u; r++) {
    let m = m0 + r;
    if (m >= p.m) { break; }
    var b = 0.0;
    if (p.accumulate == 0u && p.has_bias != 0u) { b = f32(bias[p.m_first + m]); }
    for (var t = 0u; t < {{TN}}u; t++) {
      let q = q0 + t * {{WG}}u;
      if (q >= dst_hw) { break; }
      let di = dst_base + m * dst_hw + q;
      var v = acc[r * {{TN}}u + t] + b;
      if (p.accumulate != 0u) { v += f32(dst[di]); }
#if DST_F16
      dst[di] = f16(v);
#else
      dst[di] = v;
#endif
    }
  }
}
