// Optimiser kernels, by define:
//   ADAMW   one decoupled-weight-decay Adam step in place, torch.optim.AdamW's arithmetic:
//           p *= 1 - lr*wd;  m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;
//           p -= step_size * m / (sqrt(v) / sqrt(1 - b2^t) + eps),  step_size = lr / (1 - b1^t)
//   SUMSQ   stage 1 of the global gradient norm: workgroup w of this dispatch writes the sum of
//           squares of its grid-stride share of the elements to partials[base + w]
//   NORM    stage 2: one workgroup sums every partial and writes sqrt(total) to norm[0]
//   SCALE   grads *= min(max_norm / (norm[0] + 1e-6), 1) (torch.nn.utils.clip_grad_norm_)

struct Params {
  n: u32,
  base: u32,
  groups: u32,
  max_norm: f32,
  decay: f32,
  beta1: f32,
  beta2: f32,
  one_minus_beta1: f32,
  one_minus_beta2: f32,
  step_size: f32,
  bc2_sqrt: f32,
  eps: f32,
}

#if ADAMW
@group(0) @binding(0) var<storage, read_write> param: array<f32>;
@group(0) @binding(1) var<storage, read> grad: array<f32>;
@group(0) @binding(2) var<storage, read_write> exp_avg: array<f32>;
@group(0) @binding(3) var<storage, read_write> exp_avg_sq: array<f32>;
@group(0) @binding(4) var<uniform> p: Params;
#endif
#if SUMSQ
@group(0) @binding(0) var<storage, read> grad: array<f32>;
@group(0) @binding(1) var<storage, read_write> partials: array<f32>;
@group(0) @binding(2) var<uniform> p: Params;
#endif
#if NORM
@group(0) @binding(0) var<storage, read> partials: array<f32>;
@group(0) @binding(1) var<storage, read_write> norm: array<f32>;
@group(0) @binding(2) var<uniform> p: Params;
#endif
#if SCALE
@group(0) @binding(0) var<storage, read_write> grad: array<f32>;
@group(0) @binding(1) var<storage, read> norm: array<f32>;
@group(0) @binding(2) var<uniform> p: Params;
#endif

const WG: u32 = 256u;
#if REDUCE
var<workgroup> acc: array<f32, 256>;

fn tree_sum(lid: u32, value: f32) -> f32 {
  acc[lid] = value;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s = s / 2u) {
    if (lid < s) { acc[lid] += acc[lid + s]; }
    workgroupBarrier();
  }
  return acc[0];
}
#endif

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let w = wid.y * nwg.x + wid.x;
#if ADAMW
  let i = w * WG + lid;
  if (i >= p.n) { return; }
  let g = grad[i];
  let m = p.beta1 * exp_avg[i] + p.one_minus_beta1 * g;
  let v = p.beta2 * exp_avg_sq[i] + p.one_minus_beta2 * (g * g);
  exp_avg[i] = m;
  exp_avg_sq[i] = v;
  let denom = sqrt(v) / p.bc2_sqrt + p.eps;
  param[i] = param[i] * p.decay - p.step_size * (m / denom);
#endif
#if SUMSQ
  var s = 0.0;
  for (var i = w * WG + lid; i < p.n; i += p.groups * WG) {
    let g = grad[i];
    s += g * g;
  }
  let total = tree_sum(lid, s);
  if (lid == 0u) { partials[p.base + w] = total; }
#endif
#if NORM
  var s = 0.0;
  for (var i = lid; i < p.n; i += WG) {
    s += partials[i];
  }
  let total = tree_sum(lid, s);
  if (lid == 0u) { norm[0] = sqrt(total); }
#endif
#if SCALE
  let i = w * WG + lid;
  if (i >= p.n) { return; }
  grad[i] = grad[i] * min(p.max_norm / (norm[0] + 1e-6), 1.0);
#endif
}
