// Shared prologue of the matmul kernels (matmul.wgsl, matmul_tiled.wgsl are appended to it):
// parameters, bindings, operand loads with strides, and the fused epilogue.
//
//   C[z, m, n] = act(alpha * sum_k A[z, m, k] * B[z, k, n] + bias[n] + addend[z, m, n])
//
// Split-K (matmul_splitk.wgsl): each workgroup layer sums one chunk of K; the host then binds an
// f32 scratch buffer as C with no epilogue (alpha 1, flags 0) and the reduction applies it.
// The bias, the addend and the activation are switched by `p.flags` at run time (one pipeline
// serves every epilogue: pipelines are slow to compile on lavapipe); absent ones bind a dummy.
// A and B are read through element strides, so either operand may be transposed in memory, and a
// batch index z is split into up to four batch dims with per-operand batch strides (0 broadcasts).
// defines:
//   SUBGROUPS   the kernel uses subgroup operations
//   B_F16       B holds f16 values, two per u32 word (converted to f32 on load)
//   K4          A and B are read as 4 consecutive k values per load (matmul_k4.wgsl): A as vec4s,
//               B as vec4s (f32) or vec2<u32>s (f16, 4 halves)
//   A_F16       A holds f16 activations (array<f16>, needs shader-f16), widened to f32 on load
//   C_F16       C and the addend are f16 (the f32 result is rounded once, in the epilogue)
//   HALF        A_F16 or C_F16: the shader enables f16
// Accumulation is always f32.
#if SUBGROUPS
enable subgroups;
#endif
#if HALF
enable f16;
#endif

struct Params {
  m: u32,
  n: u32,
  k: u32,
  z0: u32,            // batch index of this dispatch's wid.z == 0
  sam: u32,           // element strides of A along m and k
  sak: u32,
  sbk: u32,           // element strides of B along k and n
  sbn: u32,
  bdims: vec4<u32>,   // batch dims, innermost in .w (unused dims are 1)
  bsa: vec4<u32>,     // A's batch strides per batch dim (0: broadcast)
  bsb: vec4<u32>,     // B's batch strides per batch dim (0: broadcast)
  alpha: f32,
  flags: u32,         // FLAG_BIAS | FLAG_ADDEND | FLAG_BIAS_ROWS | activation << 3 (0 none, 1 silu, 2 gelu)
  scm: u32,           // element strides of C along m and n (n, 1; or 1, m for a transposed product)
  scn: u32,
  scz: u32,           // element stride of C between batches (m * n unless C is a strided view)
  c_off: u32,         // element offset of batch 0's element (0, 0) in the C binding
  splits: u32,        // split-K: chunks of K per product (1: none); layer zz = z0 + wid.z is product zz / splits, chunk zz % splits
  k_chunk: u32,       // K elements per chunk (k when splits is 1; else a multiple of the kernel's K step)
}

#if K4
#if A_F16
@group(0) @binding(0) var<storage, read> A: array<vec4<f16>>;
#else
@group(0) @binding(0) var<storage, read> A: array<vec4<f32>>;
#endif
#if B_F16
@group(0) @binding(1) var<storage, read> B: array<vec2<u32>>;
#else
@group(0) @binding(1) var<storage, read> B: array<vec4<f32>>;
#endif
#else
#if A_F16
@group(0) @binding(0) var<storage, read> A: array<f16>;
#else
@group(0) @binding(0) var<storage, read> A: array<f32>;
#endif
#if B_F16
@group(0) @binding(1) var<storage, read> B: array<u32>;
#else
@group(0) @binding(1) var<storage, read> B: array<f32>;
#endif
#endif
@group(0) @binding(2) var<storage, read> bias: array<f32>;
#if C_F16
@group(0) @binding(3) var<storage, read> addend: array<f16>;
@group(0) @binding(4) var<storage, read_write> C: array<f16>;
#else
@group(0) @binding(3) var<storage, read> addend: array<f32>;
@group(0) @binding(4) var<storage, read_write> C: array<f32>;
#endif
@group(0) @binding(5) var<uniform> p: Params;

#if !K4
fn load_b(i: u32) -> f32 {
#if B_F16
  let pair = unpack2x16float(B[i >> 1u]);
  return select(pair.x, pair.y, (i & 1u) == 1u);
#else
  return B[i];
#endif
}
#endif

/// Element offsets of batch z's A and B matrices.
fn batch_offsets(z: u32) -> vec2<u32> {
  var rem = z;
  var off = vec2<u32>(0u, 0u);
  for (var d = 3; d >= 0; d--) {
    let c = rem % p.bdims[d];
    rem = rem / p.bdims[d];
    off += c * vec2<u32>(p.bsa[d], p.bsb[d]);
  }
  return off;
}

/// Split-K: the product (batch index) of dispatch layer `zz` in .x and its K range [.y, .z).
/// Without a split (splits 1, k_chunk k) that is (zz, 0, k).
fn k_slice(zz: u32) -> vec3<u32> {
  let k0 = (zz % p.splits) * p.k_chunk;
  return vec3<u32>(zz / p.splits, k0, min(p.k, k0 + p.k_chunk));
}

// erf with |error| < 1.2e-7 (Abramowitz & Stegun 7.1.26 is coarser): Numerical Recipes' erfc
// Chebyshev fit, evaluated in Horner form.
fn matmul_erf(x: f32) -> f32 {
  let z = abs(x);
  let t = 1.0 / (1.0 + 0.5 * z);
  let poly = -1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (-0.18628806 +
             t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277))))))));
  let erfc_z = t * exp(-z * z + poly);
  return sign(x) * (1.0 - erfc_z);
}

const FLAG_BIAS = 1u;
const FLAG_ADDEND = 2u;
const FLAG_BIAS_ROWS = 4u;  // the bias runs along m (the product was computed transposed)
const ACT_SILU = 1u;
const ACT_GELU = 2u;

/// Write one output element (callers guard m < p.m and n < p.n). `c_base` is the batch's offset in C
/// (p.c_off + z * p.scz).
/// The bias and the addend are indexed like the output element.
fn epilogue(acc: f32, c_base: u32, m: u32, n: u32) {
  var b = 0.0;
  if ((p.flags & FLAG_BIAS) != 0u) { b = bias[select(n, m, (p.flags & FLAG_BIAS_ROWS) != 0u)]; }
  epilogue_b(acc, c_base, m, n, b);
}

/// `epilogue` with the element's bias already loaded (0 without one): kernels that store many rows
/// of the same columns load each column's bias once (every load is a per-lane loop on lavapipe).
fn epilogue_b(acc: f32, c_base: u32, m: u32, n: u32, b: f32) {
  var v = p.alpha * acc + b;
  let ci = c_base + m * p.scm + n * p.scn;
  if ((p.flags & FLAG_ADDEND) != 0u) { v += f32(addend[ci]); }
  let act = p.flags >> 3u;
  if (act == ACT_SILU) {
    v = v / (1.0 + exp(-v));
  } else if (act == ACT_GELU) {
    v = 0.5 * v * (1.0 + matmul_erf(v * 0.70710678118654752));
  }
#if C_F16
  C[ci] = f16(v);
#else
  C[ci] = v;
#endif
}
