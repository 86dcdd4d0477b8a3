// f32 <-> f16 conversions done on the bits (u32 words only), so they need no shader-f16 support and
// match src/tensor/f16.ts exactly: round to nearest even, overflow to infinity, f16 subnormals kept,
// NaN to the canonical quiet NaN 0x7e00 (with the sign).
//   TO_F16  thread i packs elements 2i, 2i+1 into word i of the f16 output
//   TO_F32  thread i widens element i

struct Params {
  n: u32,
}

@group(0) @binding(0) var<storage, read> src: array<u32>;
@group(0) @binding(1) var<storage, read_write> dst: array<u32>;
@group(0) @binding(2) var<uniform> p: Params;

fn f32_to_f16_bits(b: u32) -> u32 {
  let sign = (b >> 16u) & 0x8000u;
  let exp = (b >> 23u) & 0xffu;
  var mant = b & 0x7fffffu;
  if (exp == 0xffu) { return sign | 0x7c00u | select(0u, 0x200u, mant != 0u); }
  let e = i32(exp) - 112; // rebias 127 -> 15
  if (e >= 0x1f) { return sign | 0x7c00u; }
  if (e <= 0) {
    if (e < -10) { return sign; }
    mant = mant | 0x800000u;
    let shift = u32(14 - e);
    var half = mant >> shift;
    let rem = mant & ((1u << shift) - 1u);
    let mid = 1u << (shift - 1u);
    if (rem > mid || (rem == mid && (half & 1u) != 0u)) { half += 1u; }
    return sign | half;
  }
  var half = (u32(e) << 10u) | (mant >> 13u);
  let rem = mant & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (half & 1u) != 0u)) { half += 1u; } // may carry into the exponent
  return sign | half;
}

fn f16_to_f32_bits(h: u32) -> u32 {
  let sign = (h & 0x8000u) << 16u;
  let exp = (h >> 10u) & 0x1fu;
  let mant = h & 0x3ffu;
  if (exp == 0x1fu) { return sign | 0x7f800000u | (mant << 13u); }
  if (exp == 0u) {
    if (mant == 0u) { return sign; }
    let top = firstLeadingBit(mant); // value = mant * 2^-24 = 2^(top - 24) * 1.xxx
    return sign | ((top + 103u) << 23u) | ((mant << (23u - top)) & 0x7fffffu);
  }
  return sign | ((exp + 112u) << 23u) | (mant << 13u);
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let i = (wid.y * nwg.x + wid.x) * 256u + lid;
#if TO_F16
  if (2u * i >= p.n) { return; }
  let lo = f32_to_f16_bits(src[2u * i]);
  var hi = 0u;
  if (2u * i + 1u < p.n) { hi = f32_to_f16_bits(src[2u * i + 1u]); }
  dst[i] = lo | (hi << 16u);
#endif
#if TO_F32
  if (i >= p.n) { return; }
  let word = src[i / 2u];
  dst[i] = f16_to_f32_bits((word >> (16u * (i & 1u))) & 0xffffu);
#endif
}
