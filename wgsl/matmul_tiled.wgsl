// Workgroup-memory tiled matmul for real GPUs: a workgroup of 16 x 16 invocations owns a 64 x 64
// tile of C and walks K in steps of 16, staging a 64 x 16 slice of A and a 16 x 64 slice of B in
// workgroup memory; each invocation keeps 4 x 4 accumulators (rows 4 ty + i, columns 4 tx + j).
// Out-of-range elements are staged as zeros, so any M, N, K works.
// (Appended to matmul_common.wgsl; no extra defines.)

const TILE = 64u;
const DEPTH = 16u;

var<workgroup> tile_a: array<f32, 1024>;  // [k][m], DEPTH x TILE
var<workgroup> tile_b: array<f32, 1024>;  // [k][n], DEPTH x TILE

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let z = p.z0 + wid.z;
  let offs = batch_offsets(z);
  let m0 = wid.y * TILE;
  let n0 = wid.x * TILE;
  let tx = lid % 16u;
  let ty = lid / 16u;
  // Staging order: consecutive invocations walk the operand's contiguous dimension.
  let a_m_fast = p.sam == 1u;
  let b_n_fast = p.sbn == 1u;

  var acc: array<f32, 16>;
  for (var k0 = 0u; k0 < p.k; k0 += DEPTH) {
    for (var s = 0u; s < 4u; s++) {
      let e = lid + s * 256u;
      var mm = e / DEPTH;
      var ka = e % DEPTH;
      if (a_m_fast) {
        mm = e % TILE;
        ka = e / TILE;
      }
      let m = m0 + mm;
      let k = k0 + ka;
      var va = 0.0;
      if (m < p.m && k < p.k) { va = A[offs.x + m * p.sam + k * p.sak]; }
      tile_a[ka * TILE + mm] = va;

      var nn = e % TILE;
      var kb = e / TILE;
      if (!b_n_fast) {
        nn = e / DEPTH;
        kb = e % DEPTH;
      }
      let n = n0 + nn;
      let kk = k0 + kb;
      var vb = 0.0;
      if (n < p.n && kk < p.k) { vb = load_b(offs.y + kk * p.sbk + n * p.sbn); }
      tile_b[kb * TILE + nn] = vb;
    }
    workgroupBarrier();
    for (var kk = 0u; kk < DEPTH; kk++) {
      let a = vec4<f32>(tile_a[kk * TILE + 4u * ty], tile_a[kk * TILE + 4u * ty + 1u],
                        tile_a[kk * TILE + 4u * ty + 2u], tile_a[kk * TILE + 4u * ty + 3u]);
      let b = vec4<f32>(tile_b[kk * TILE + 4u * tx], tile_b[kk * TILE + 4u * tx + 1u],
                        tile_b[kk * TILE + 4u * tx + 2u], tile_b[kk * TILE + 4u * tx + 3u]);
      for (var i = 0u; i < 4u; i++) {
        for (var j = 0u; j < 4u; j++) {
          acc[i * 4u + j] = fma(a[i], b[j], acc[i * 4u + j]);
        }
      }
    }
    workgroupBarrier();
  }

  let c_base = p.c_off + z * p.scz;
  for (var i = 0u; i < 4u; i++) {
    let m = m0 + 4u * ty + i;
    for (var j = 0u; j < 4u; j++) {
      let n = n0 + 4u * tx + j;
      if (m < p.m && n < p.n) { epilogue(acc[i * 4u + j], c_base, m, n); }
    }
  }
}
