// Workgroup-memory tiled matmul for real GPUs: a workgroup of 16 x 16 invocations owns a
// TILE x TILE tile of C (TILE = 16 * PER) and walks K in steps of DEPTH, staging a TILE x DEPTH
// slice of A and a DEPTH x TILE slice of B in workgroup memory as vec4s; each invocation keeps
// PER x PER accumulators. Its rows and columns are interleaved in groups of 4 (group v of
// invocation (tx, ty) is vec4 column tx + 16 v, vec4 row ty + 16 v), so the 16 lanes of a row read
// 16 consecutive vec4s from workgroup memory (no bank conflicts) and loads are 128-bit.
// Out-of-range elements are staged as zeros, so any M, N, K works.
// (Appended to matmul_common.wgsl; expanded by unrolledSource.)
// defines:
//   PER     accumulators per invocation along each side: 4 (64 x 64 tiles) or 8 (128 x 128)
//   DEPTH   K step: TILE * DEPTH must be a multiple of 1024 (each invocation stages whole vec4 rows)

const PER = {{PER}}u;
const PV = PER / 4u;               // vec4 groups per invocation along each side
const TILE = 16u * PER;
const TILE4 = TILE / 4u;           // vec4s per tile row
const DEPTH = {{DEPTH}}u;
const STAGE = TILE * DEPTH / 256u; // elements of each operand one invocation stages per K step

var<workgroup> tile_a: array<vec4<f32>, TILE4 * DEPTH>;  // [k][m / 4]
var<workgroup> tile_b: array<vec4<f32>, TILE4 * DEPTH>;  // [k][n / 4]

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let z = p.z0 + wid.z;
  let offs = batch_offsets(z);
  let m0 = wid.y * TILE;
  let n0 = wid.x * TILE;
  let tx = lid % 16u;
  let ty = lid / 16u;
  // Staging order: consecutive invocations walk the operand's contiguous dimension in global memory.
  let a_m_fast = p.sam == 1u;
  let b_n_fast = p.sbn == 1u;

  var acc: array<vec4<f32>, PER * PV>;  // [row i][vec4 column group v]
  for (var k0 = 0u; k0 < p.k; k0 += DEPTH) {
    for (var s = 0u; s < STAGE; s++) {
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
      tile_a[ka * TILE4 + mm / 4u][mm % 4u] = va;

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
      tile_b[kb * TILE4 + nn / 4u][nn % 4u] = vb;
    }
    workgroupBarrier();
    for (var kk = 0u; kk < DEPTH; kk++) {
      // Unrolled in the source (#unroll): every private-array index is a constant, so the
      // accumulators stay in registers (a PER = 8 loop left to the driver ran 10x slower).
      var a: array<vec4<f32>, PV>;
      var b: array<vec4<f32>, PV>;
#unroll V PV
      a[$V] = tile_a[kk * TILE4 + ty + 16u * $V];
      b[$V] = tile_b[kk * TILE4 + tx + 16u * $V];
#endunroll
#unroll I PER
#unroll V PV
      acc[$I * PV + $V] = fma(vec4<f32>(a[$I / 4][$I % 4]), b[$V], acc[$I * PV + $V]);
#endunroll
#endunroll
    }
    workgroupBarrier();
  }

  let c_base = p.c_off + z * p.scz;
#unroll I PER
  {
    let m = m0 + 4u * (ty + 16u * ($I / 4)) + $I % 4;
    if (m < p.m) {
#unroll V PV
      {
        let nb = n0 + 4u * (tx + 16u * $V);
        let c4 = acc[$I * PV + $V];
        for (var j = 0u; j < 4u; j++) {
          if (nb + j < p.n) { epilogue(c4[j], c_base, m, nb + j); }
        }
      }
#endunroll
    }
  }
#endunroll
}
