// Register-blocked matmul for CPU rasterisers (lavapipe): no workgroup memory, no barriers.
// There an invocation is one SIMD lane of a subgroup of 8, every storage load is a per-lane loop
// (expensive, whatever the address pattern) and arithmetic is cheap, so the kernel minimises loads
// per multiply-add:
//   - a workgroup is one subgroup of 8 lanes and owns 8 * RG rows and COLS (32 or 64) columns of C;
//   - lane l owns columns n0 + l + 8 j (j < 4, a vec4 of accumulators per row; with CG2 a second
//     vec4 for j = 4..7) for every row;
//   - per k, lane l loads A for row 8 g + l of each row group g (RG loads) and the subgroup shares
//     them with broadcasts, and loads its 4 B values: RG + 4 loads for 8 * RG vec4 multiply-adds.
// The accumulators sit in one array that the epilogue indexes dynamically: that keeps a single copy
// of the (per-lane, code-heavy) stores; measured no slower than registers, which spill anyway.
// Measured alternatives that lost: unrolling k by 2 (slower), 64 columns per workgroup (no gain).
// Rows and columns past the edge are clamped for loading and skipped for storing.
// defines (besides matmul_common.wgsl's): RG2, RG3, RG4 (row groups 2..4 present), ROWS (8 * row
// groups), CG2 (64 columns), COLS (32 or 64)

// Row group g's 8 rows: acc[8 g + i] += broadcast(a from lane i) * b.
fn fma_rows(a: f32, b: vec4<f32>, acc: ptr<function, array<vec4<f32>, {{ROWS}}>>, g: u32) {
  (*acc)[g + 0u] = fma(vec4<f32>(subgroupBroadcast(a, 0u)), b, (*acc)[g + 0u]);
  (*acc)[g + 1u] = fma(vec4<f32>(subgroupBroadcast(a, 1u)), b, (*acc)[g + 1u]);
  (*acc)[g + 2u] = fma(vec4<f32>(subgroupBroadcast(a, 2u)), b, (*acc)[g + 2u]);
  (*acc)[g + 3u] = fma(vec4<f32>(subgroupBroadcast(a, 3u)), b, (*acc)[g + 3u]);
  (*acc)[g + 4u] = fma(vec4<f32>(subgroupBroadcast(a, 4u)), b, (*acc)[g + 4u]);
  (*acc)[g + 5u] = fma(vec4<f32>(subgroupBroadcast(a, 5u)), b, (*acc)[g + 5u]);
  (*acc)[g + 6u] = fma(vec4<f32>(subgroupBroadcast(a, 6u)), b, (*acc)[g + 6u]);
  (*acc)[g + 7u] = fma(vec4<f32>(subgroupBroadcast(a, 7u)), b, (*acc)[g + 7u]);
}

@compute @workgroup_size(8)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(subgroup_invocation_id) lane: u32) {
  let zz = p.z0 + wid.z;
  let sl = k_slice(zz);
  let offs = batch_offsets(sl.x);
  let m0 = wid.y * {{ROWS}}u;
  let nl = wid.x * {{COLS}}u + lane;
  let last_m = p.m - 1u;
  let last_n = p.n - 1u;
  // This lane's A row in each row group, and its four B columns (clamped at the edges).
  let a0 = offs.x + min(m0 + lane, last_m) * p.sam;
#if RG2
  let a1 = offs.x + min(m0 + 8u + lane, last_m) * p.sam;
#endif
#if RG3
  let a2 = offs.x + min(m0 + 16u + lane, last_m) * p.sam;
#endif
#if RG4
  let a3 = offs.x + min(m0 + 24u + lane, last_m) * p.sam;
#endif
  let b0 = offs.y + min(nl, last_n) * p.sbn;
  let b1 = offs.y + min(nl + 8u, last_n) * p.sbn;
  let b2 = offs.y + min(nl + 16u, last_n) * p.sbn;
  let b3 = offs.y + min(nl + 24u, last_n) * p.sbn;
#if CG2
  let b4 = offs.y + min(nl + 32u, last_n) * p.sbn;
  let b5 = offs.y + min(nl + 40u, last_n) * p.sbn;
  let b6 = offs.y + min(nl + 48u, last_n) * p.sbn;
  let b7 = offs.y + min(nl + 56u, last_n) * p.sbn;
  var acc_hi: array<vec4<f32>, {{ROWS}}>;
#endif

  var acc: array<vec4<f32>, {{ROWS}}>;
  for (var k = sl.y; k < sl.z; k++) {
    let bk = k * p.sbk;
    let b = vec4<f32>(load_b(b0 + bk), load_b(b1 + bk), load_b(b2 + bk), load_b(b3 + bk));
#if CG2
    let bh = vec4<f32>(load_b(b4 + bk), load_b(b5 + bk), load_b(b6 + bk), load_b(b7 + bk));
#endif
    let ak = k * p.sak;
    let x0 = f32(A[a0 + ak]);
    fma_rows(x0, b, &acc, 0u);
#if CG2
    fma_rows(x0, bh, &acc_hi, 0u);
#endif
#if RG2
    let x1 = f32(A[a1 + ak]);
    fma_rows(x1, b, &acc, 8u);
#if CG2
    fma_rows(x1, bh, &acc_hi, 8u);
#endif
#endif
#if RG3
    let x2 = f32(A[a2 + ak]);
    fma_rows(x2, b, &acc, 16u);
#if CG2
    fma_rows(x2, bh, &acc_hi, 16u);
#endif
#endif
#if RG4
    let x3 = f32(A[a3 + ak]);
    fma_rows(x3, b, &acc, 24u);
#if CG2
    fma_rows(x3, bh, &acc_hi, 24u);
#endif
#endif
  }

  // The stores run in a loop whose trip count is not a constant, so that the compiler keeps one copy
  // of them (each store is a per-lane loop; unrolled, they dominate the pipeline's compile time).
  let c_base = p.c_off + zz * p.scz;
  let rows = min({{ROWS}}u, p.m - min(m0, p.m));
  for (var i = 0u; i < rows; i++) {
    let v = acc[i];
    let m = m0 + i;
    if (nl < p.n) { epilogue(v.x, c_base, m, nl); }
    if (nl + 8u < p.n) { epilogue(v.y, c_base, m, nl + 8u); }
    if (nl + 16u < p.n) { epilogue(v.z, c_base, m, nl + 16u); }
    if (nl + 24u < p.n) { epilogue(v.w, c_base, m, nl + 24u); }
#if CG2
    let h = acc_hi[i];
    if (nl + 32u < p.n) { epilogue(h.x, c_base, m, nl + 32u); }
    if (nl + 40u < p.n) { epilogue(h.y, c_base, m, nl + 40u); }
    if (nl + 48u < p.n) { epilogue(h.z, c_base, m, nl + 48u); }
    if (nl + 56u < p.n) { epilogue(h.w, c_base, m, nl + 56u); }
#endif
  }
}
