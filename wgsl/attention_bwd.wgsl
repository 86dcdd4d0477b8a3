// Scaled dot-product attention, backward (appended to attention_common.wgsl), recomputing the
// probabilities P = e^(scale q.k - lse) from the forward's logsumexp; delta = dO . O per query
// (attention_reduce.wgsl). Same tiles as the forward:
//   ATT_DQ   tile = R queries, lanes own keys:    ds = P (dO . v - delta);
//            dq[r][chunk lane + 8t] += ds * k_key[chunk]; dq *= scale at the end
//   ATT_DKV  tile = R keys, lanes own the queries of chunk wid.y:  P, ds as above;
//            dv[r][chunk] += P * dO_query[chunk], dk[r][chunk] += ds * q_query[chunk] (dk *= scale),
//            written to that chunk's partial copy (the copies are summed afterwards)
// Loops over per-lane arrays are `#unroll`ed (src/tensor/ops/unroll.ts) so every index is constant.
// F16: q, k, v, dO and dq are f16 (E), as are dk and dv unless the query chunks write f32 partial
// copies (G_F32, summed and rounded once by attention_reduce.wgsl); lse, delta and all sums are f32.

@group(0) @binding(0) var<storage, read> q: Buf;
@group(0) @binding(1) var<storage, read> k: Buf;
@group(0) @binding(2) var<storage, read> v: Buf;
@group(0) @binding(3) var<storage, read> dout: Buf;
@group(0) @binding(4) var<storage, read> lse: array<f32>;
@group(0) @binding(5) var<storage, read> delta: array<f32>;
#if ATT_DQ
@group(0) @binding(6) var<storage, read_write> dq: Buf;
@group(0) @binding(7) var<uniform> p: Params;
#else
// dk and dv: in the inputs' type (E), or f32 partial copies to be summed and rounded once (G_F32)
#if G_F32
alias G = f32;
#else
alias G = E;
#endif
#if VEC4
alias GBuf = array<vec4<G>>;
#else
alias GBuf = array<G>;
#endif
@group(0) @binding(6) var<storage, read_write> dk: GBuf;
@group(0) @binding(7) var<storage, read_write> dv: GBuf;
@group(0) @binding(8) var<uniform> p: Params;
#endif

#if ATT_DQ
fn store_dq(base: u32, c: u32, val: vec4<f32>) {
#if VEC4
  dq[base / 4u + c] = vec4<E>(val);
#else
  let i = base + c * 4u;
  dq[i] = E(val.x);
  if (c * 4u + 1u < D) { dq[i + 1u] = E(val.y); }
  if (c * 4u + 2u < D) { dq[i + 2u] = E(val.z); }
  if (c * 4u + 3u < D) { dq[i + 3u] = E(val.w); }
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
  var k_end = p.Lk;
  if (p.causal != 0u) { k_end = min(p.Lk, min(q0 + R - 1u, p.Lq - 1u) + 1u); }
  let k_head = b * p.ks.x + h * p.ks.y;
  let v_head = b * p.vs.x + h * p.vs.y;
  let c_last = D4 - 1u;

  // lane r loads tile row r (of q, dO, lse, delta) and the lanes exchange them
  let qi_mine = min(q0 + min(lane, R - 1u), p.Lq - 1u);
  let q_mine = b * p.qs.x + h * p.qs.y + qi_mine * p.qs.z;
  let o_mine = b * p.os.x + h * p.os.y + qi_mine * p.os.z;
  let lse_mine = lse[bh * p.Lq + qi_mine];
  let delta_mine = delta[bh * p.Lq + qi_mine];
  var lse_r = array<f32, R>();
  var delta_r = array<f32, R>();
#unroll r R
  lse_r[$r] = lane_get(lse_mine, $r, lane);
  delta_r[$r] = lane_get(delta_mine, $r, lane);
#endunroll
  var acc = array<array<vec4<f32>, T>, R>(); // chunks lane + 8t of dq / scale

  for (var j0 = 0u; j0 < k_end; j0 += 8u * KPL) {
    var s = array<array<f32, KPL>, R>();   // scores, then ds
    var dp = array<array<f32, KPL>, R>();  // dO . v
    var kbase = array<u32, KPL>();
    var vbase = array<u32, KPL>();
#unroll u KPL
    {
      let kj = min(j0 + lane + $u * 8u, p.Lk - 1u);
      kbase[$u] = k_head + kj * p.ks.z;
      vbase[$u] = v_head + kj * p.vs.z;
    }
#endunroll
    for (var c = 0u; c < D4; c++) {
      let qm = load_q(q_mine, c);
      let dm = load_do(o_mine, c);
      var kc = array<vec4<f32>, KPL>();
      var vc = array<vec4<f32>, KPL>();
#unroll u KPL
      kc[$u] = load_k(kbase[$u], c);
      vc[$u] = load_v(vbase[$u], c);
#endunroll
#unroll r R
      {
        let qr = lane_get4(qm, $r, lane);
        let dr = lane_get4(dm, $r, lane);
#unroll u KPL
        s[$r][$u] += dot(qr, kc[$u]);
        dp[$r][$u] += dot(dr, vc[$u]);
#endunroll
      }
#endunroll
    }
#unroll r R
#unroll u KPL
    {
      let kj = j0 + lane + $u * 8u;
      let visible = kj < k_end && (p.causal == 0u || kj <= q0 + $r);
      s[$r][$u] = select(0.0, exp(s[$r][$u] * p.scale - lse_r[$r]) * (dp[$r][$u] - delta_r[$r]), visible);
    }
#endunroll
#endunroll
    for (var src = 0u; src < 8u; src++) {
#unroll u KPL
      {
        let kb = k_head + min(j0 + src + $u * 8u, p.Lk - 1u) * p.ks.z;
        var kc = array<vec4<f32>, T>();
#unroll t T
        kc[$t] = load_k(kb, min(lane + $t * 8u, c_last));
#endunroll
#unroll r R
        {
          let ds = lane_get(s[$r][$u], src, lane);
#unroll t T
          acc[$r][$t] += ds * kc[$t];
#endunroll
        }
#endunroll
      }
#endunroll
    }
  }

  for (var r = 0u; r < R; r++) {
    let qi = q0 + r;
    if (qi < p.Lq) {
      let base = b * p.qs.x + h * p.qs.y + qi * p.qs.z;
#unroll t T
      {
        var val = vec4<f32>(0.0);
#unroll rr R
        if (r == $rr) { val = acc[$rr][$t]; }
#endunroll
        let c = lane + $t * 8u;
        if (c < D4) { store_dq(base, c, val * p.scale); }
      }
#endunroll
    }
  }
}
#endif

#if ATT_DKV
fn store_dk(base: u32, c: u32, val: vec4<f32>) {
#if VEC4
  dk[base / 4u + c] = vec4<G>(val);
#else
  let i = base + c * 4u;
  dk[i] = G(val.x);
  if (c * 4u + 1u < D) { dk[i + 1u] = G(val.y); }
  if (c * 4u + 2u < D) { dk[i + 2u] = G(val.z); }
  if (c * 4u + 3u < D) { dk[i + 3u] = G(val.w); }
#endif
}
fn store_dv(base: u32, c: u32, val: vec4<f32>) {
#if VEC4
  dv[base / 4u + c] = vec4<G>(val);
#else
  let i = base + c * 4u;
  dv[i] = G(val.x);
  if (c * 4u + 1u < D) { dv[i + 1u] = G(val.y); }
  if (c * 4u + 2u < D) { dv[i + 2u] = G(val.z); }
  if (c * 4u + 3u < D) { dv[i + 3u] = G(val.w); }
#endif
}

// Grid: x = (batch, head, key tile) flattened, y = query chunk.
@compute @workgroup_size(8)
#if SUBGROUPS
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(subgroup_invocation_id) lane: u32) {
#else
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
#endif
  let bh = wid.x / p.blocks;
  if (bh >= p.B * p.H) { return; }
  let b = bh / p.H;
  let h = bh % p.H;
  let k0 = (wid.x % p.blocks) * R;
  let q_head = b * p.qs.x + h * p.qs.y;
  let o_head = b * p.os.x + h * p.os.y;
  let c_last = D4 - 1u;
  var i_begin = wid.y * p.chunk_len;
  let i_end = min(i_begin + p.chunk_len, p.Lq);
  if (p.causal != 0u) { i_begin = max(i_begin, k0); } // earlier queries see none of the tile's keys

  // lane r loads tile row r of k and v and the lanes exchange them
  let kj_mine = min(k0 + min(lane, R - 1u), p.Lk - 1u);
  let k_mine = b * p.ks.x + h * p.ks.y + kj_mine * p.ks.z;
  let v_mine = b * p.vs.x + h * p.vs.y + kj_mine * p.vs.z;
  var dka = array<array<vec4<f32>, T>, R>(); // chunks lane + 8t of dk / scale
  var dva = array<array<vec4<f32>, T>, R>();

  for (var i0 = i_begin; i0 < i_end; i0 += 8u * KPL) {
    var s = array<array<f32, KPL>, R>();   // scores, then P
    var dp = array<array<f32, KPL>, R>();  // dO . v, then ds
    var qbase = array<u32, KPL>();
    var obase = array<u32, KPL>();
    var lse_u = array<f32, KPL>();
    var delta_u = array<f32, KPL>();
#unroll u KPL
    {
      let qi = min(i0 + lane + $u * 8u, p.Lq - 1u);
      qbase[$u] = q_head + qi * p.qs.z;
      obase[$u] = o_head + qi * p.os.z;
      lse_u[$u] = lse[bh * p.Lq + qi];
      delta_u[$u] = delta[bh * p.Lq + qi];
    }
#endunroll
    for (var c = 0u; c < D4; c++) {
      let km = load_k(k_mine, c);
      let vm = load_v(v_mine, c);
      var qc = array<vec4<f32>, KPL>();
      var dc = array<vec4<f32>, KPL>();
#unroll u KPL
      qc[$u] = load_q(qbase[$u], c);
      dc[$u] = load_do(obase[$u], c);
#endunroll
#unroll r R
      {
        let kr = lane_get4(km, $r, lane);
        let vr = lane_get4(vm, $r, lane);
#unroll u KPL
        s[$r][$u] += dot(kr, qc[$u]);
        dp[$r][$u] += dot(vr, dc[$u]);
#endunroll
      }
#endunroll
    }
#unroll r R
#unroll u KPL
    {
      let qi = i0 + lane + $u * 8u;
      let visible = qi < i_end && (p.causal == 0u || k0 + $r <= qi);
      let pr = select(0.0, exp(s[$r][$u] * p.scale - lse_u[$u]), visible);
      s[$r][$u] = pr;
      dp[$r][$u] = pr * (dp[$r][$u] - delta_u[$u]);
    }
#endunroll
#endunroll
    for (var src = 0u; src < 8u; src++) {
#unroll u KPL
      {
        let qi = min(i0 + src + $u * 8u, p.Lq - 1u);
        let qb = q_head + qi * p.qs.z;
        let ob = o_head + qi * p.os.z;
        var qc = array<vec4<f32>, T>();
        var dc = array<vec4<f32>, T>();
#unroll t T
        qc[$t] = load_q(qb, min(lane + $t * 8u, c_last));
        dc[$t] = load_do(ob, min(lane + $t * 8u, c_last));
#endunroll
#unroll r R
        {
          let pr = lane_get(s[$r][$u], src, lane);
          let ds = lane_get(dp[$r][$u], src, lane);
#unroll t T
          dva[$r][$t] += pr * dc[$t];
          dka[$r][$t] += ds * qc[$t];
#endunroll
        }
#endunroll
      }
#endunroll
    }
  }

  for (var r = 0u; r < R; r++) {
    let kj = k0 + r;
    if (kj < p.Lk) {
      let kb = wid.y * p.ks.w + b * p.ks.x + h * p.ks.y + kj * p.ks.z;
      let vb = wid.y * p.vs.w + b * p.vs.x + h * p.vs.y + kj * p.vs.z;
#unroll t T
      {
        var gk = vec4<f32>(0.0);
        var gv = vec4<f32>(0.0);
#unroll rr R
        if (r == $rr) { gk = dka[$rr][$t]; gv = dva[$rr][$t]; }
#endunroll
        let c = lane + $t * 8u;
        if (c < D4) {
          store_dk(kb, c, gk * p.scale);
          store_dv(vb, c, gv);
        }
      }
#endunroll
    }
  }
}
#endif
