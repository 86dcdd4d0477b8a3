// Register-blocked matmul for CPU rasterisers (lavapipe) reading 4 consecutive k values per load:
// for C = A Bᵀ-shaped products where both operands are contiguous along k (A [m][k], B stored
// [n][k]: linear layers, convolutions over an im2col copy). On lavapipe every storage load is a
// per-lane loop whose cost grows with the components loaded, and a component is the same price
// whether it is a vec4's or a lone scalar's; vec4 loads amortise the per-lane part, and consuming
// 4 k values per accumulator update quarters the accumulator traffic (updates are masked stores).
//   - a workgroup is one subgroup of 8 lanes and owns ROWS = 8 * RG rows and COLS (32 or 64)
//     columns of C; lane l owns columns n0 + l + 8 j (j < 4, one vec4 of accumulators per row;
//     with CG2 a second vec4 for j = 4..7);
//   - per 4 k: lane l loads A[8 g + l, k..k+3] for each row group g (the subgroup shares them by
//     broadcasts) and B[n, k..k+3] for its 4 (8) columns;
//   - acc[r] += (a_r . b_j)_j: 16 (32) multiply-adds per row per step.
// Requires K % 4 == 0 and 4-aligned row starts (the host checks). Rows and columns past the edge
// are clamped for loading and skipped for storing. Appended to matmul_common.wgsl (K4 defined).
// defines: RG (row groups, 1..4), ROWS (8 * RG), CG2 (64 columns), COLS (32 or 64)

fn b4(i: u32) -> vec4<f32> {
#if B_F16
  let w = B[i];
  return vec4<f32>(unpack2x16float(w.x), unpack2x16float(w.y));
#else
  return B[i];
#endif
}

fn dots(x: vec4<f32>, b0: vec4<f32>, b1: vec4<f32>, b2: vec4<f32>, b3: vec4<f32>) -> vec4<f32> {
  return vec4<f32>(dot(x, b0), dot(x, b1), dot(x, b2), dot(x, b3));
}

@compute @workgroup_size(8)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(subgroup_invocation_id) lane: u32) {
  let zz = p.z0 + wid.z;
  let sl = k_slice(zz);
  let offs = batch_offsets(sl.x) / 4u;
  let m0 = wid.y * {{ROWS}}u;
  let nl = wid.x * {{COLS}}u + lane;
  let last_m = p.m - 1u;
  let last_n = p.n - 1u;
  let sam4 = p.sam / 4u;
  let sbn4 = p.sbn / 4u;
#unroll g RG
  let a$g = offs.x + min(m0 + 8u * $g + lane, last_m) * sam4;
#endunroll
#unroll j 4
  let b$j = offs.y + min(nl + 8u * $j, last_n) * sbn4;
#endunroll
#if CG2
#unroll j 4
  let bh$j = offs.y + min(nl + 32u + 8u * $j, last_n) * sbn4;
#endunroll
#endif
#unroll g RG
#unroll i 8
  var acc$g$i = vec4<f32>(0.0);
#if CG2
  var acch$g$i = vec4<f32>(0.0);
#endif
#endunroll
#endunroll

  for (var k = sl.y / 4u; k < sl.z / 4u; k++) {
    let w0 = b4(b0 + k);
    let w1 = b4(b1 + k);
    let w2 = b4(b2 + k);
    let w3 = b4(b3 + k);
#if CG2
    let wh0 = b4(bh0 + k);
    let wh1 = b4(bh1 + k);
    let wh2 = b4(bh2 + k);
    let wh3 = b4(bh3 + k);
#endif
#unroll g RG
    {
      let av = vec4<f32>(A[a$g + k]);
#unroll i 8
      {
        let x = subgroupBroadcast(av, $i);
        acc$g$i += dots(x, w0, w1, w2, w3);
#if CG2
        acch$g$i += dots(x, wh0, wh1, wh2, wh3);
#endif
      }
#endunroll
    }
#endunroll
  }

  // The stores run in a loop whose trip count is not a constant, so that the compiler keeps one copy
  // of them (each store is a per-lane loop; unrolled, they dominate the compile time); the row's
  // accumulators are picked out by a short search.
  let c_base = p.c_off + zz * p.scz;
  let rows = min({{ROWS}}u, p.m - min(m0, p.m));
  // The bias of this lane's columns, loaded once (per row inside the loop when it runs along m).
  let has_bias = (p.flags & FLAG_BIAS) != 0u;
  let bias_rows = (p.flags & FLAG_BIAS_ROWS) != 0u;
  var bc = vec4<f32>(0.0);
#if CG2
  var bh = vec4<f32>(0.0);
#endif
  if (has_bias && !bias_rows) {
    bc = vec4<f32>(bias[min(nl, last_n)], bias[min(nl + 8u, last_n)], bias[min(nl + 16u, last_n)], bias[min(nl + 24u, last_n)]);
#if CG2
    bh = vec4<f32>(bias[min(nl + 32u, last_n)], bias[min(nl + 40u, last_n)], bias[min(nl + 48u, last_n)], bias[min(nl + 56u, last_n)]);
#endif
  }
  for (var r = 0u; r < rows; r++) {
    var v = vec4<f32>(0.0);
#if CG2
    var h = vec4<f32>(0.0);
#endif
#unroll g RG
#unroll i 8
    if (r == 8u * $g + $i) {
      v = acc$g$i;
#if CG2
      h = acch$g$i;
#endif
    }
#endunroll
#endunroll
    let m = m0 + r;
    var b = bc;
#if CG2
    var b2 = bh;
#endif
    if (has_bias && bias_rows) {
      b = vec4<f32>(bias[m]);
#if CG2
      b2 = b;
#endif
    }
    if (nl < p.n) { epilogue_b(v.x, c_base, m, nl, b.x); }
    if (nl + 8u < p.n) { epilogue_b(v.y, c_base, m, nl + 8u, b.y); }
    if (nl + 16u < p.n) { epilogue_b(v.z, c_base, m, nl + 16u, b.z); }
    if (nl + 24u < p.n) { epilogue_b(v.w, c_base, m, nl + 24u, b.w); }
#if CG2
    if (nl + 32u < p.n) { epilogue_b(h.x, c_base, m, nl + 32u, b2.x); }
    if (nl + 40u < p.n) { epilogue_b(h.y, c_base, m, nl + 40u, b2.y); }
    if (nl + 48u < p.n) { epilogue_b(h.z, c_base, m, nl + 48u, b2.z); }
    if (nl + 56u < p.n) { epilogue_b(h.w, c_base, m, nl + 56u, b2.w); }
#endif
  }
}
