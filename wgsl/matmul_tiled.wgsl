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
//   DEPTH   K step (TILE * DEPTH a multiple of 256)
//   STAGE   TILE * DEPTH / 256, the elements of each operand one invocation stages per step

const PER = {{PER}}u;
const PV = PER / 4u;               // vec4 groups per invocation along each side
const TILE = 16u * PER;
const TILE4 = TILE / 4u;           // vec4s per tile row
const DEPTH = {{DEPTH}}u;
const STAGE = {{STAGE}}u;          // elements of each operand one invocation stages per K step: TILE * DEPTH / 256

var<workgroup> tile_a: array<vec4<f32>, TILE4 * DEPTH>;  // [k][m / 4]
var<workgroup> tile_b: array<vec4<f32>, TILE4 * DEPTH>;  // [k][n / 4]

/// Tile coordinates (row or column within the tile, k within the step) of staged element e: consecutive
/// invocations walk the operand's contiguous dimension in global memory.
fn stage_coords(e: u32, tile_fast: bool) -> vec2<u32> {
  if (tile_fast) { return vec2<u32>(e % TILE, e / TILE); }
  return vec2<u32>(e / DEPTH, e % DEPTH);
}

fn fetch_a(e: u32, k0: u32, m0: u32, base: u32) -> f32 {
  let c = stage_coords(e, p.sam == 1u);
  let m = m0 + c.x;
  let k = k0 + c.y;
  if (m < p.m && k < p.k) { return f32(A[base + m * p.sam + k * p.sak]); }
  return 0.0;
}

fn fetch_b(e: u32, k0: u32, n0: u32, base: u32) -> f32 {
  let c = stage_coords(e, p.sbn == 1u);
  let n = n0 + c.x;
  let k = k0 + c.y;
  if (n < p.n && k < p.k) { return load_b(base + k * p.sbk + n * p.sbn); }
  return 0.0;
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let zz = p.z0 + wid.z;
  let sl = k_slice(zz);   // product, and this layer's K range (a multiple of DEPTH from its start)
  let offs = batch_offsets(sl.x);
  let m0 = wid.y * TILE;
  let n0 = wid.x * TILE;
  let tx = lid % 16u;
  let ty = lid / 16u;
  let a_fast = p.sam == 1u;
  let b_fast = p.sbn == 1u;

  var acc: array<vec4<f32>, PER * PV>;  // [row i][vec4 column group v]
  // The next K step's elements are fetched into registers while this step is computed, so global
  // memory latency overlaps the arithmetic.
  var next_a: array<f32, STAGE>;
  var next_b: array<f32, STAGE>;
#unroll S STAGE
  next_a[$S] = fetch_a(lid + $S * 256u, sl.y, m0, offs.x);
  next_b[$S] = fetch_b(lid + $S * 256u, sl.y, n0, offs.y);
#endunroll
  for (var k0 = sl.y; k0 < sl.z; k0 += DEPTH) {
#unroll S STAGE
    {
      let ca = stage_coords(lid + $S * 256u, a_fast);
      tile_a[ca.y * TILE4 + ca.x / 4u][ca.x % 4u] = next_a[$S];
      let cb = stage_coords(lid + $S * 256u, b_fast);
      tile_b[cb.y * TILE4 + cb.x / 4u][cb.x % 4u] = next_b[$S];
    }
#endunroll
    workgroupBarrier();
    let k1 = k0 + DEPTH;
    if (k1 < sl.z) {
#unroll S STAGE
      next_a[$S] = fetch_a(lid + $S * 256u, k1, m0, offs.x);
      next_b[$S] = fetch_b(lid + $S * 256u, k1, n0, offs.y);
#endunroll
    }
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

  let c_base = p.c_off + zz * p.scz;
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
