// Conv2d weight gradient as a register-blocked GEMM without workgroup memory (CPU rasterisers):
//
//   dw[m, col] = sum over images n, output pixels (oy, ox) of  dy[n, m, oy, ox] * x[n, ci, iy, ix]
//   with col = ci * taps + tap, iy = oy * sh + ky - pad_t, ix = ox * sw + kx - pad_l.
//
// Each workgroup owns TM rows (output channels, 4 * TM4) and WG * TN columns; each invocation keeps
// TM x TN accumulators. Lanes differ only in the column, so the dy reads are uniform (scalar loads
// on lavapipe) and only the x reads gather.
//   defines: WG, TM4, TN, NACC (= TM4 * TN), SRC_F16 (f16 activations, needs shader-f16: dy and x
//   are f16, widened to f32 on load; dw stays f32)
#if SRC_F16
enable f16;
alias S = f16;
#else
alias S = f32;
#endif

struct Params {
  m: u32,            // rows in this pass
  ncols: u32,        // columns in this pass (channels * taps)
  taps: u32,
  kw: u32,
  h: u32,            // input plane
  w: u32,
  ho: u32,           // output plane
  wo: u32,
  sh: u32,
  sw: u32,
  pad_t: u32,
  pad_l: u32,
  x_off: u32,        // element offset of this pass's first image and channel in the x binding
  x_bstride: u32,    // elements between images in x
  dy_off: u32,       // element offset of this pass's first image and row in the dy binding
  dy_bstride: u32,
  batch: u32,        // images summed in this pass
  cols: u32,         // row stride of dw (Cin * taps)
  m_first: u32,      // global row and column of this pass's (0, 0) in dw
  col_first: u32,
  accumulate: u32,   // 1: add into dw (a later chunk of images)
  _pad0: u32,
  _pad1: u32,
  _pad2: u32,
}

@group(0) @binding(0) var<storage, read> dy: array<S>;
@group(0) @binding(1) var<storage, read> x: array<S>;
@group(0) @binding(2) var<storage, read_write> dw: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;

@compute @workgroup_size({{WG}})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let m0 = wid.y * (4u * {{TM4}}u);
  let col0 = wid.x * ({{WG}}u * {{TN}}u) + lid;
  let in_hw = p.h * p.w;
  let out_hw = p.ho * p.wo;

  // This invocation's columns: channel base in x and the tap offset (clamped; stores are guarded).
  var xbase: array<u32, {{TN}}>;
  var ky: array<i32, {{TN}}>;
  var kx: array<i32, {{TN}}>;
  for (var t = 0u; t < {{TN}}u; t++) {
    let col = min(col0 + t * {{WG}}u, p.ncols - 1u);
    let tap = col % p.taps;
    xbase[t] = p.x_off + (col / p.taps) * in_hw;
    ky[t] = i32(tap / p.kw) - i32(p.pad_t);
    kx[t] = i32(tap % p.kw) - i32(p.pad_l);
  }
  // dy row offsets of this workgroup's rows (clamped to the last row).
  var dyrow: array<u32, {{TM4}} * 4>;
  for (var r = 0u; r < 4u * {{TM4}}u; r++) {
    dyrow[r] = p.dy_off + min(m0 + r, p.m - 1u) * out_hw;
  }

  var acc: array<vec4<f32>, {{NACC}}>;
  for (var a = 0u; a < {{NACC}}u; a++) { acc[a] = vec4<f32>(0.0); }

  for (var n = 0u; n < p.batch; n++) {
    let xn = n * p.x_bstride;
    let dyn = n * p.dy_bstride;
    for (var oy = 0u; oy < p.ho; oy++) {
      var rowoff: array<u32, {{TN}}>;
      var rowok: array<bool, {{TN}}>;
      for (var t = 0u; t < {{TN}}u; t++) {
        let iy = u32(i32(oy * p.sh) + ky[t]); // negative wraps past h
        rowok[t] = iy < p.h;
        rowoff[t] = xbase[t] + xn + iy * p.w;
      }
      var pix = dyn + oy * p.wo;
      for (var ox = 0u; ox < p.wo; ox++) {
        var xv: array<f32, {{TN}}>;
        for (var t = 0u; t < {{TN}}u; t++) {
          let ix = u32(i32(ox * p.sw) + kx[t]);
          let ok = rowok[t] && ix < p.w;
          xv[t] = select(0.0, f32(x[select(xbase[t], rowoff[t] + ix, ok)]), ok);
        }
        for (var i = 0u; i < {{TM4}}u; i++) {
          let g = vec4<f32>(f32(dy[dyrow[4u * i] + pix]), f32(dy[dyrow[4u * i + 1u] + pix]),
                            f32(dy[dyrow[4u * i + 2u] + pix]), f32(dy[dyrow[4u * i + 3u] + pix]));
          for (var t = 0u; t < {{TN}}u; t++) {
            acc[i * {{TN}}u + t] = fma(g, vec4<f32>(xv[t]), acc[i * {{TN}}u + t]);
          }
        }
        pix += 1u;
      }
    }
  }

  for (var t = 0u; t < {{TN}}u; t++) {
    let col = col0 + t * {{WG}}u;
    if (col >= p.ncols) { continue; }
    for (var i = 0u; i < {{TM4}}u; i++) {
      let v = acc[i * {{TN}}u + t];
      for (var e = 0u; e < 4u; e++) {
        let m = m0 + 4u * i + e;
        if (m >= p.m) { continue; }
        let di = (p.m_first + m) * p.cols + p.col_first + col;
        var r = v[e];
        if (p.accumulate != 0u) { r += dw[di]; }
        dw[di] = r;
      }
    }
  }
}
