// Shared prologue of the attention kernels (attention.wgsl, attention_bwd.wgsl are appended to it):
// parameters, row loaders, and the exchanges between the 8 lanes of a tile.
//
// Work decomposition (every kernel): a workgroup is 8 lanes that own a tile of R rows (R <= 8) of
// one (batch, head) and stream the other sequence in blocks of 8 * KPL rows. Like a register-blocked
// matmul, each product is split in two phases:
//   scores  lane j owns block rows j + 8u (u < KPL); the tile's rows reach every lane by broadcast
//           (lane r loads tile row r chunk by chunk), so s[r][u] = tile_row_r . block_row_(j+8u)
//   update  lane j owns head-dim chunks j + 8t (t < T = ceil(D4 / 8)) of the tile's accumulators;
//           each block row's coefficient s[r][u] is broadcast from the lane that owns it
// so per-lane state is R * (KPL + T) values, independent of the sequence lengths, and loops over the
// head dim are run-time loops: compile time stays small on CPU rasterisers (lavapipe, where an
// invocation is a SIMD lane, loads are per-lane loops, and large unrolled states take minutes to
// compile), and any head dim works (d = 512 in the VAE). Memory is O(L * d): probabilities are
// never stored, the backward recomputes them from the forward's logsumexp.
//
// Tensors are addressed by (batch, head, row) element strides, so [B, H, L, d] and [B, L, H*d]
// layouts both work without permutes; the head dim is contiguous. Causal masking (p.causal != 0)
// is top-left aligned: query i sees keys j <= i.
// defines: D (head dim), D4 = ceil(D / 4), R, KPL, T, VEC4 (D % 4 == 0: rows read as vec4),
//          SUBGROUPS (lane exchanges by subgroup operations, lane = subgroup_invocation_id: a workgroup
//          of 8 is one subgroup when subgroups have at least 8 lanes; otherwise through workgroup
//          memory, lane = local_invocation_index),
//          HAS_DO (the kernel binds dout),
//          F16 (f16 activations, needs shader-f16: q, k, v, O, dO are stored as f16 (E) and widened to
//          f32 on load; scores, softmax, accumulators and lse stay f32, stores round once)
#if SUBGROUPS
enable subgroups;
#endif
#if F16
enable f16;
#endif

struct Params {
  B: u32,
  H: u32,
  Lq: u32,
  Lk: u32,
  causal: u32,
  blocks: u32,      // tiles per (batch, head)
  scale: f32,
  chunk_len: u32,   // dk/dv kernel: queries per chunk (grid y); sum kernel: number of chunks
  qs: vec4<u32>,    // strides (batch, head, row) of q / dq; w: element count (sum kernel: n)
  ks: vec4<u32>,    // of k / dk; w = element count of k (chunk stride of the dk partials)
  vs: vec4<u32>,    // of v / dv; w = element count of v
  os: vec4<u32>,    // of O / dO
}

const D: u32 = {{D}}u;
const D4: u32 = {{D4}}u;
const R: u32 = {{R}}u;
const KPL: u32 = {{KPL}}u;
const T: u32 = {{T}}u;
const NEG: f32 = -1e30;

#if F16
alias E = f16;
#else
alias E = f32;
#endif
#if VEC4
alias Buf = array<vec4<E>>;
#else
alias Buf = array<E>;
#endif

// ---- lane exchanges (all lanes must call them together, in uniform control flow)
#if SUBGROUPS
fn lane_get(x: f32, src_lane: u32, lane: u32) -> f32 { return subgroupShuffle(x, src_lane); }
fn lane_get4(x: vec4<f32>, src_lane: u32, lane: u32) -> vec4<f32> { return subgroupShuffle(x, src_lane); }
fn lanes_max(x: f32, lane: u32) -> f32 { return subgroupMax(x); }
fn lanes_sum(x: f32, lane: u32) -> f32 { return subgroupAdd(x); }
#else
var<workgroup> xch: array<vec4<f32>, 8>;
fn lane_get4(x: vec4<f32>, src_lane: u32, lane: u32) -> vec4<f32> {
  workgroupBarrier();
  xch[lane] = x;
  workgroupBarrier();
  return xch[src_lane];
}
fn lane_get(x: f32, src_lane: u32, lane: u32) -> f32 { return lane_get4(vec4<f32>(x), src_lane, lane).x; }
fn lanes_max(x: f32, lane: u32) -> f32 {
  workgroupBarrier();
  xch[lane] = vec4<f32>(x);
  workgroupBarrier();
  var m = xch[0].x;
  for (var i = 1u; i < 8u; i++) { m = max(m, xch[i].x); }
  return m;
}
fn lanes_sum(x: f32, lane: u32) -> f32 {
  workgroupBarrier();
  xch[lane] = vec4<f32>(x);
  workgroupBarrier();
  var s = 0.0;
  for (var i = 0u; i < 8u; i++) { s += xch[i].x; }
  return s;
}
#endif

// ---- chunk c (4 values of the head dim, zero past D) of the row starting at element `base`
#if VEC4
fn load_q(base: u32, c: u32) -> vec4<f32> { return vec4<f32>(q[base / 4u + c]); }
fn load_k(base: u32, c: u32) -> vec4<f32> { return vec4<f32>(k[base / 4u + c]); }
fn load_v(base: u32, c: u32) -> vec4<f32> { return vec4<f32>(v[base / 4u + c]); }
#if HAS_DO
fn load_do(base: u32, c: u32) -> vec4<f32> { return vec4<f32>(dout[base / 4u + c]); }
#endif
#else
fn in_row(c: u32, j: u32) -> bool { return c * 4u + j < D; }
fn load_q(base: u32, c: u32) -> vec4<f32> {
  let i = base + c * 4u;
  return vec4<f32>(f32(q[i]), select(0.0, f32(q[i + 1u]), in_row(c, 1u)), select(0.0, f32(q[i + 2u]), in_row(c, 2u)), select(0.0, f32(q[i + 3u]), in_row(c, 3u)));
}
fn load_k(base: u32, c: u32) -> vec4<f32> {
  let i = base + c * 4u;
  return vec4<f32>(f32(k[i]), select(0.0, f32(k[i + 1u]), in_row(c, 1u)), select(0.0, f32(k[i + 2u]), in_row(c, 2u)), select(0.0, f32(k[i + 3u]), in_row(c, 3u)));
}
fn load_v(base: u32, c: u32) -> vec4<f32> {
  let i = base + c * 4u;
  return vec4<f32>(f32(v[i]), select(0.0, f32(v[i + 1u]), in_row(c, 1u)), select(0.0, f32(v[i + 2u]), in_row(c, 2u)), select(0.0, f32(v[i + 3u]), in_row(c, 3u)));
}
#if HAS_DO
fn load_do(base: u32, c: u32) -> vec4<f32> {
  let i = base + c * 4u;
  return vec4<f32>(f32(dout[i]), select(0.0, f32(dout[i + 1u]), in_row(c, 1u)), select(0.0, f32(dout[i + 2u]), in_row(c, 2u)), select(0.0, f32(dout[i + 3u]), in_row(c, 3u)));
}
#endif
#endif

