// Attention-map capture (no autograd): head-averaged probabilities of chosen batch rows and key
// columns, recomputed from q, k and the forward's per-query logsumexp:
//   P[b, h, i, c] = exp(scale * q[b,h,i] . k[b,h,c] - lse[b,h,i])   (0 where the causal mask hides c)
// One thread per (captured row r, query i), b = row0 + r. Columns come from `cols` (u32 indices).
// OWN_LSE: no forward ran (captureAttention); each thread recomputes its rows' logsumexp (the lse
// binding is then a dummy).
//   default  out[r, i]    += weight / H * sum_h sum_{c in cols} P[b, h, i, c]      out [count, Lq]
//   MAP      out[r, i, c] += weight / H * sum_h P[b, h, i, c]  for c in cols      out [count, Lq, Lk]
// Same layout conventions as attention.wgsl (strides per (batch, head, row); scalar loads only:
// capture touches few columns). F16: q and k are f16 activations (needs shader-f16), widened on
// load; scores, lse and the accumulator `out` are f32 either way.
#if F16
enable f16;
alias E = f16;
#else
alias E = f32;
#endif

struct Params {
  B: u32,
  H: u32,
  Lq: u32,
  Lk: u32,
  causal: u32,
  row0: u32,
  count: u32,
  ncols: u32,
  qs: vec4<u32>,
  ks: vec4<u32>,
  scale: f32,
  weight: f32,
  _pad0: u32,
  _pad1: u32,
}

const D: u32 = {{D}}u;
const WG: u32 = 64u;

@group(0) @binding(0) var<storage, read> q: array<E>;
@group(0) @binding(1) var<storage, read> k: array<E>;
@group(0) @binding(2) var<storage, read> lse: array<f32>;
@group(0) @binding(3) var<storage, read> cols: array<u32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;
@group(0) @binding(5) var<uniform> p: Params;

fn score(b: u32, h: u32, i: u32, c: u32) -> f32 {
  let qbase = b * p.qs.x + h * p.qs.y + i * p.qs.z;
  let kbase = b * p.ks.x + h * p.ks.y + c * p.ks.z;
  var s = 0.0;
  for (var e = 0u; e < D; e++) { s += f32(q[qbase + e]) * f32(k[kbase + e]); }
  return s * p.scale;
}

// logsumexp of query i's scores in head h: from the forward, or (OWN_LSE) recomputed here
fn row_lse(b: u32, h: u32, i: u32) -> f32 {
#if OWN_LSE
  var k_end = p.Lk;
  if (p.causal != 0u) { k_end = min(i + 1u, p.Lk); }
  var m = -1e30;
  var l = 0.0;
  for (var c = 0u; c < k_end; c++) {
    let s = score(b, h, i, c);
    let mn = max(m, s);
    l = l * exp(m - mn) + exp(s - mn);
    m = mn;
  }
  return m + log(l);
#else
  return lse[(b * p.H + h) * p.Lq + i];
#endif
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let t = (wid.y * nwg.x + wid.x) * WG + lid;
  if (t >= p.count * p.Lq) { return; }
  let r = t / p.Lq;
  let i = t % p.Lq;
  let b = p.row0 + r;
  let w = p.weight / f32(p.H);
  var acc = 0.0;
  for (var h = 0u; h < p.H; h++) {
    let lse_h = row_lse(b, h, i);
    for (var n = 0u; n < p.ncols; n++) {
      let c = cols[n];
      let pr = select(exp(score(b, h, i, c) - lse_h), 0.0, p.causal != 0u && c > i);
#if MAP
      out[t * p.Lk + c] += w * pr;
#else
      acc += pr;
#endif
    }
  }
#if !MAP
  out[t] += w * acc;
#endif
}
