// Conv2d as an implicit GEMM with workgroup-memory tiles (the shape for real GPUs).
// C[BM x BN] tiles of  C[m, col] = sum_k A[m, k] * B[k, col], staged BK reduction steps at a time.
//
// Forward / BWD_INPUT (the same index maps as conv2d.wgsl):
//   k = tap * C + c;  A = K-major weight panels w[(tap * C + c) * m_pad + m];
//   B[k, q] = src[c, source(q, tap)] (0 in the padding);  C -> dst[m, q] (+ bias).
// MODE_WGRAD (the same sums as conv2d_wgrad.wgsl):
//   k = n * out_hw + pixel;  A[m, k] = dy[n, m, pixel];  B[k, col] = x[n, ci, iy, ix] with
//   col = ci * taps + tap;  C -> dw[m, col].
// Split-K (conv2d_splitk.wgsl sums the chunks): a workgroup sums one chunk of K (a multiple of BK)
// and the host binds f32 partials as dst / dw with no bias and no accumulation; workgroup layer
// wid.z = image * splits + chunk (forward), = chunk (MODE_WGRAD: the partials of chunk s are rows
// s * m + row).
// Invocation (tx, ty) of a (WGX, WGY) workgroup owns rows ty + i * WGY and columns tx + j * WGX.
//   defines: BM, BN, BK, TM, TN, WGX (= BN / TN), WGY (= BM / TM), BIAS_F16 (a dummy bias is bound
//            when `has_bias` is 0),
//            BWD_INPUT, MODE_WGRAD,
//            SRC_F16 (f16 activations, needs shader-f16: src, or dy and x, are f16, widened to f32 on
//            load), DST_F16 (dst is f16: the f32 sum rounded once on store; not with MODE_WGRAD),
//            HALF (any of the f16 defines)
#if HALF
enable f16;
#endif
#if SRC_F16
alias S = f16;
#else
alias S = f32;
#endif

#if MODE_WGRAD
struct Params {
  m: u32, ncols: u32, taps: u32, kw: u32,
  h: u32, w: u32, ho: u32, wo: u32,
  sh: u32, sw: u32, pad_t: u32, pad_l: u32,
  x_off: u32, x_bstride: u32, dy_off: u32, dy_bstride: u32,
  batch: u32, cols: u32, m_first: u32, col_first: u32,
  accumulate: u32, splits: u32, k_chunk: u32, _pad2: u32,
}
@group(0) @binding(0) var<storage, read> dy: array<S>;
@group(0) @binding(1) var<storage, read> x: array<S>;
@group(0) @binding(2) var<storage, read_write> dw: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;
#else
struct Params {
  m: u32, c: u32, taps: u32, kw: u32,
  src_h: u32, src_w: u32, dst_h: u32, dst_w: u32,
  sh: u32, sw: u32, pad_t: u32, pad_l: u32,
  src_off: u32, src_bstride: u32, dst_off: u32, dst_bstride: u32,
  w_base: u32, w_tap_stride: u32, m_pad4: u32, m_first: u32,
  accumulate: u32, has_bias: u32, splits: u32, k_chunk: u32,
}
@group(0) @binding(0) var<storage, read> src: array<S>;
@group(0) @binding(1) var<storage, read> wp: array<f32>;
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
#endif

var<workgroup> tile_a: array<f32, {{BK}} * {{BM}}>;   // [k][m]
var<workgroup> tile_b: array<f32, {{BK}} * {{BN}}>;   // [k][col]

const THREADS: u32 = {{WGX}}u * {{WGY}}u;

#if MODE_WGRAD
fn k_total() -> u32 { return p.batch * p.ho * p.wo; }
fn n_cols() -> u32 { return p.ncols; }

// dy[n, m, pixel] with k = n * out_hw + pixel.
fn load_a(m: u32, k: u32) -> f32 {
  let out_hw = p.ho * p.wo;
  if (m >= p.m || k >= k_total()) { return 0.0; }
  let n = k / out_hw;
  return f32(dy[p.dy_off + n * p.dy_bstride + m * out_hw + (k - n * out_hw)]);
}

fn load_b(k: u32, col: u32) -> f32 {
  if (col >= p.ncols || k >= k_total()) { return 0.0; }
  let out_hw = p.ho * p.wo;
  let n = k / out_hw;
  let pix = k - n * out_hw;
  let oy = pix / p.wo;
  let ox = pix - oy * p.wo;
  let tap = col % p.taps;
  let ci = col / p.taps;
  let iy = u32(i32(oy * p.sh + tap / p.kw) - i32(p.pad_t));
  let ix = u32(i32(ox * p.sw + tap % p.kw) - i32(p.pad_l));
  if (iy >= p.h || ix >= p.w) { return 0.0; }
  return f32(x[p.x_off + n * p.x_bstride + ci * p.h * p.w + iy * p.w + ix]);
}
#else
fn k_total() -> u32 { return p.taps * p.c; }
fn n_cols() -> u32 { return p.dst_h * p.dst_w; }

fn load_a(m: u32, k: u32) -> f32 {
  if (k >= k_total()) { return 0.0; }
  let tap = k / p.c;
  let c = k - tap * p.c;
  let mm = min(m, p.m - 1u); // rows past m are never stored
  return wp[4u * p.w_base + tap * 4u * p.w_tap_stride + c * 4u * p.m_pad4 + mm];
}

fn load_b(k: u32, q: u32) -> f32 {
  let dst_hw = p.dst_h * p.dst_w;
  if (k >= k_total() || q >= dst_hw) { return 0.0; }
  let tap = k / p.c;
  let c = k - tap * p.c;
  let ky = i32(tap / p.kw);
  let kx = i32(tap % p.kw);
  let qy = i32(q / p.dst_w);
  let qx = i32(q % p.dst_w);
#if BWD_INPUT
  let ny = qy + i32(p.pad_t) - ky;
  let nx = qx + i32(p.pad_l) - kx;
  if (ny < 0 || nx < 0) { return 0.0; }
  let sy = u32(ny) / p.sh;
  let sx = u32(nx) / p.sw;
  if (sy * p.sh != u32(ny) || sx * p.sw != u32(nx) || sy >= p.src_h || sx >= p.src_w) { return 0.0; }
#else
  let sy = u32(qy * i32(p.sh) + ky - i32(p.pad_t));
  let sx = u32(qx * i32(p.sw) + kx - i32(p.pad_l));
  if (sy >= p.src_h || sx >= p.src_w) { return 0.0; }
#endif
  return f32(src[p.src_off + wid_n * p.src_bstride + c * p.src_h * p.src_w + sy * p.src_w + sx]);
}
#endif

var<private> wid_n: u32;

@compute @workgroup_size({{WGX}}, {{WGY}})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid3: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  // Split-K: workgroup layer wid.z is image wid.z / splits (always 0 for MODE_WGRAD, whose images
  // lie along K) summing K chunk wid.z % splits; without a split, splits 1 and k_chunk the whole K.
  wid_n = wid.z / p.splits;
  let k_begin = (wid.z % p.splits) * p.k_chunk;
  let row0 = wid.y * {{BM}}u;
  let col0 = wid.x * {{BN}}u;
  let tx = lid3.x;
  let ty = lid3.y;
  let k_end = min(k_total(), k_begin + p.k_chunk);

  var acc: array<f32, {{TM}} * {{TN}}>;
  for (var a = 0u; a < {{TM}}u * {{TN}}u; a++) { acc[a] = 0.0; }

  for (var k0 = k_begin; k0 < k_end; k0 += {{BK}}u) {
    for (var e = lid; e < {{BK}}u * {{BM}}u; e += THREADS) {
#if MODE_WGRAD
      let mm = e / {{BK}}u;     // consecutive invocations walk k (contiguous pixels of dy)
      let kk = e % {{BK}}u;
#else
      let kk = e / {{BM}}u;     // consecutive invocations walk m (contiguous in the panels)
      let mm = e % {{BM}}u;
#endif
      tile_a[kk * {{BM}}u + mm] = load_a(row0 + mm, k0 + kk);
    }
    for (var e = lid; e < {{BK}}u * {{BN}}u; e += THREADS) {
      let kk = e / {{BN}}u;
      let nn = e % {{BN}}u;
      tile_b[e] = load_b(k0 + kk, col0 + nn);
    }
    workgroupBarrier();
    for (var kk = 0u; kk < {{BK}}u; kk++) {
      var a: array<f32, {{TM}}>;
      var b: array<f32, {{TN}}>;
      for (var i = 0u; i < {{TM}}u; i++) { a[i] = tile_a[kk * {{BM}}u + ty + i * {{WGY}}u]; }
      for (var j = 0u; j < {{TN}}u; j++) { b[j] = tile_b[kk * {{BN}}u + tx + j * {{WGX}}u]; }
      for (var i = 0u; i < {{TM}}u; i++) {
        for (var j = 0u; j < {{TN}}u; j++) {
          acc[i * {{TN}}u + j] = fma(a[i], b[j], acc[i * {{TN}}u + j]);
        }
      }
    }
    workgroupBarrier();
  }

  for (var i = 0u; i < {{TM}}u; i++) {
    let m = row0 + ty + i * {{WGY}}u;
    if (m >= p.m) { continue; }
    for (var j = 0u; j < {{TN}}u; j++) {
      let col = col0 + tx + j * {{WGX}}u;
      if (col >= n_cols()) { continue; }
      var r = acc[i * {{TN}}u + j];
#if MODE_WGRAD
      let di = (wid.z * p.m + p.m_first + m) * p.cols + p.col_first + col;  // wid.z: a split's chunk (0 unsplit)
      if (p.accumulate != 0u) { r += dw[di]; }
      dw[di] = r;
#else
      let di = p.dst_off + wid.z * p.dst_bstride + m * p.dst_h * p.dst_w + col;
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
#endif
    }
  }
}
