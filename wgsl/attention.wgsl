// Scaled dot-product attention, forward (appended to attention_common.wgsl): online softmax
// (flash-attention style) over key blocks. A tile is R queries; per block of 8 * KPL keys:
//   scores   s[r][u] = scale * q_r . k_(j0 + lane + 8u)                  (lane owns keys)
//   softmax  M = max(m, block max over all lanes); alpha = e^(m - M); p = e^(s - M);
//            l = l * alpha + p (per-lane partial sums), acc *= alpha
//   update   acc[r][t] += sum over the block's keys of p * v_key[chunk lane + 8t]   (lane owns chunks)
// then O = acc / sum_lanes(l) and lse = M + log(sum_lanes(l)) per query.
// Loops over per-lane arrays are `#unroll`ed (src/tensor/ops/unroll.ts) so every index is constant.
// QG = ceil(R / 8) query rows per lane are loaded per head-dim chunk (tiles of up to 8 * QG rows:
// more rows per tile reuse each key and value load for more queries).
// F16: q, k, v and out are f16 (E); everything in between is f32 and `out` is rounded once.

@group(0) @binding(0) var<storage, read> q: Buf;
@group(0) @binding(1) var<storage, read> k: Buf;
@group(0) @binding(2) var<storage, read> v: Buf;
@group(0) @binding(3) var<storage, read_write> out: Buf;
@group(0) @binding(4) var<storage, read_write> lse: array<f32>;
@group(0) @binding(5) var<uniform> p: Params;

fn store_out(base: u32, c: u32, val: vec4<f32>) {
#if VEC4
  out[base / 4u + c] = vec4<E>(val);
#else
  let i = base + c * 4u;
  out[i] = E(val.x);
  if (c * 4u + 1u < D) { out[i + 1u] = E(val.y); }
  if (c * 4u + 2u < D) { out[i + 2u] = E(val.z); }
  if (c * 4u + 3u < D) { out[i + 3u] = E(val.w); }
#endif
}

@compute @workgroup_size(8)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
#if SUBGROUPS
        @builtin(subgroup_invocation_id) lane: u32) {
#else
        @builtin(local_invocation_index) lane: u32) {
#endif
  let wg = wid.y * nwg.x + wid.x;
  let bh = wg / p.blocks;
  if (bh >= p.B * p.H) { return; }
  let b = bh / p.H;
  let h = bh % p.H;
  let q0 = (wg % p.blocks) * R;
  // lane r loads tile row r (and 8 + r, ... for tiles of more than 8 rows) and the lanes exchange
  // them (rows past the tile or sequence are clamped); one load site per 8 rows plus shuffles
  // compiles far faster on lavapipe than R same-address loads
#unroll g QG
  let q_mine$g = b * p.qs.x + h * p.qs.y + min(q0 + min(8u * $g + lane, R - 1u), p.Lq - 1u) * p.qs.z;
#endunroll
  var k_end = p.Lk;
  if (p.causal != 0u) { k_end = min(p.Lk, min(q0 + R - 1u, p.Lq - 1u) + 1u); }
  let k_head = b * p.ks.x + h * p.ks.y;
  let v_head = b * p.vs.x + h * p.vs.y;
  let c_last = D4 - 1u;

  var acc = array<array<vec4<f32>, T>, R>(); // chunks lane + 8t of each row's unnormalised output
  var m = array<f32, R>();                   // running max (the same in every lane)
  var l = array<f32, R>();                   // this lane's part of the running sum
#unroll r R
  m[$r] = NEG;
#endunroll

  for (var j0 = 0u; j0 < k_end; j0 += 8u * KPL) {
    var s = array<array<f32, KPL>, R>();
    var kbase = array<u32, KPL>();
#unroll u KPL
    kbase[$u] = k_head + min(j0 + lane + $u * 8u, p.Lk - 1u) * p.ks.z;
#endunroll
    for (var c = 0u; c < D4; c++) {
      let qm = array<vec4<f32>, {{QG}}>(
#unroll g QG
        load_q(q_mine$g, c),
#endunroll
      );
      var kc = array<vec4<f32>, KPL>();
#unroll u KPL
      kc[$u] = load_k(kbase[$u], c);
#endunroll
#unroll r R
      {
        let qr = lane_get4(qm[$r / 8], $r % 8, lane);
#unroll u KPL
        s[$r][$u] += dot(qr, kc[$u]);
#endunroll
      }
#endunroll
    }
#unroll r R
    {
      var mx = NEG;
#unroll u KPL
      {
        let kj = j0 + lane + $u * 8u;
        s[$r][$u] = select(NEG, s[$r][$u] * p.scale, kj < k_end && (p.causal == 0u || kj <= q0 + $r));
        mx = max(mx, s[$r][$u]);
      }
#endunroll
      let mb = max(m[$r], lanes_max(mx, lane));
      let alpha = exp(m[$r] - mb);
      m[$r] = mb;
      l[$r] *= alpha;
#unroll t T
      acc[$r][$t] *= alpha;
#endunroll
#unroll u KPL
      s[$r][$u] = select(0.0, exp(s[$r][$u] - mb), s[$r][$u] > 0.5 * NEG);
      l[$r] += s[$r][$u];
#endunroll
    }
#endunroll
    for (var src = 0u; src < 8u; src++) {
#unroll u KPL
      {
        let vbase = v_head + min(j0 + src + $u * 8u, p.Lk - 1u) * p.vs.z;
        var vc = array<vec4<f32>, T>();
#unroll t T
        vc[$t] = load_v(vbase, min(lane + $t * 8u, c_last));
#endunroll
#unroll r R
        {
          let pr = lane_get(s[$r][$u], src, lane);
#unroll t T
          acc[$r][$t] += pr * vc[$t];
#endunroll
        }
#endunroll
      }
#endunroll
    }
  }

  for (var r = 0u; r < R; r++) {
    // the row's values are picked out of the unrolled arrays by a short search (a run-time loop
    // keeps a single copy of the stores)
    var lr = 0.0;
    var mr = 0.0;
#unroll rr R
    if (r == $rr) { lr = l[$rr]; mr = m[$rr]; }
#endunroll
    let lt = lanes_sum(lr, lane);
    let qi = q0 + r;
    if (qi < p.Lq) {
      let obase = b * p.os.x + h * p.os.y + qi * p.os.z;
#unroll t T
      {
        var o = vec4<f32>(0.0);
#unroll rr R
        if (r == $rr) { o = acc[$rr][$t]; }
#endunroll
        let c = lane + $t * 8u;
        if (c < D4) { store_out(obase, c, o / lt); }
      }
#endunroll
      if (lane == 0u) { lse[bh * p.Lq + qi] = mr + log(lt); }
    }
  }
}
