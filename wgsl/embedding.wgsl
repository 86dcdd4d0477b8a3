// Embedding kernels, by define:
//   GATHER    out[t, d] = weight[ids[t], d] for the ids inside this window of table rows
//             (tables over the binding limit are bound window by window); ids outside [0, vocab)
//             give zeros (written by the first window). W_F16: the table is f16 (read as
//             packed u32 words), out is f32.
//   GRAD      the table gradient, deterministically: the thread of (t, d) whose t is the first
//             occurrence of its id sums g[t', d] over every t' with the same id, in order, and writes
//             the row; no atomics. The caller zero-fills the gradient first. Cost O(N^2 D) for N ids,
//             meant for token sequences (N in the hundreds).
//   TIMESTEP  diffusers' sinusoidal timestep embedding: out[n, j] = sin or cos(scale * t[n] * freq[k]),
//             [sin | cos] halves, swapped with FLIP; a zero last column for odd dims. TS_I32: integer
//             timesteps. sin/cos use a Cody-Waite reduction by pi/2 and Taylor polynomials, accurate to
//             about an ulp for arguments in the thousands.
struct Params {
  n: u32,
  dim: u32,
  row0: u32,
  rows: u32,
  vocab: u32,
  count: u32,
  flip: u32,
  half_dim: u32,
  scale: f32,
}

#if GATHER
#if W_F16
@group(0) @binding(0) var<storage, read> weight: array<u32>;  // two halves per word (no shader-f16 needed)
#else
@group(0) @binding(0) var<storage, read> weight: array<f32>;
#endif
@group(0) @binding(1) var<storage, read> ids: array<i32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;
#endif

#if GRAD
@group(0) @binding(0) var<storage, read> ids: array<i32>;
@group(0) @binding(1) var<storage, read> grad_out: array<f32>;
@group(0) @binding(2) var<storage, read_write> grad_w: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;
#endif

#if TIMESTEP
#if TS_I32
@group(0) @binding(0) var<storage, read> timesteps: array<i32>;
#else
@group(0) @binding(0) var<storage, read> timesteps: array<f32>;
#endif
@group(0) @binding(1) var<storage, read> freqs: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;

/** (cos x, sin x): x = q pi/2 + r with pi/2 split in three parts (the first two multiply exactly). */
fn cos_sin(x: f32) -> vec2<f32> {
  let q = round(x * 0.636619772);
  let r = ((x - q * 1.5703125) - q * 0.0004837512969970703) - q * 7.549790126404332e-08;
  let r2 = r * r;
  let s = r * (1.0 + r2 * (-0.166666667 + r2 * (0.00833333333 + r2 * (-0.000198412698 + r2 * 2.75573192e-6))));
  let c = 1.0 + r2 * (-0.5 + r2 * (0.0416666667 + r2 * (-0.00138888889 + r2 * (2.48015873e-5 + r2 * -2.75573192e-7))));
  let quadrant = ((i32(q) % 4) + 4) % 4;
  if (quadrant == 0) { return vec2<f32>(c, s); }
  if (quadrant == 1) { return vec2<f32>(-s, c); }
  if (quadrant == 2) { return vec2<f32>(-c, -s); }
  return vec2<f32>(s, -c);
}
#endif

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let i = (wid.y * nwg.x + wid.x) * 256u + lid;
  if (i >= p.n) { return; }
  let t = i / p.dim;
  let d = i % p.dim;
#if GATHER
  let id = ids[t];
  if (id < 0 || u32(id) >= p.vocab) {
    if (p.row0 == 0u) { out[i] = 0.0; }
    return;
  }
  let r = u32(id) - p.row0; // wraps to a huge value below the window
  if (r >= p.rows) { return; }
#if W_F16
  let e = r * p.dim + d;
  out[i] = unpack2x16float(weight[e >> 1u])[e & 1u];
#else
  out[i] = weight[r * p.dim + d];
#endif
#endif
#if GRAD
  let id = ids[t];
  if (id < 0 || u32(id) >= p.vocab) { return; }
  let r = u32(id) - p.row0;
  if (r >= p.rows) { return; }
  for (var k = 0u; k < t; k++) {
    if (ids[k] == id) { return; } // an earlier position owns this row
  }
  var acc = 0.0;
  for (var k = t; k < p.count; k++) {
    if (ids[k] == id) { acc += grad_out[k * p.dim + d]; }
  }
  grad_w[r * p.dim + d] = acc;
#endif
#if TIMESTEP
  if (d >= 2u * p.half_dim) {
    out[i] = 0.0;
    return;
  }
  let second = d >= p.half_dim;
  let k = select(d, d - p.half_dim, second);
  let arg = p.scale * (f32(timesteps[t]) * freqs[k]);
  let cs = cos_sin(arg);
  // Unflipped rows are [sin | cos]; flipped rows [cos | sin].
  let want_cos = second != (p.flip != 0u);
  out[i] = select(cs.y, cs.x, want_cos);
#endif
}
