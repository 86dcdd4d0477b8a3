// Nearest-neighbour resize of NCHW planes from h x w to oh x ow with torch's index rule
// (F.interpolate(size=..., mode="nearest")):  source = min(floor(f32(dst) * scale), size - 1),
// scale = f32(in) / f32(out), computed in f32 exactly as torch does, and its backward.
//   forward:  invocation per output pixel, reads its source pixel
//   BACKWARD: invocation per input pixel, sums the output pixels whose source it is
// A workgroup of WX x WY invocations covers WX columns of one plane (z) and walks its rows WY at a
// time (no per-lane integer division: it is slow on CPU rasterisers).
// F16: f16 activations (needs shader-f16): both planes hold f16 (E); the backward sums in f32 and
// rounds once.
#if F16
enable f16;
alias E = f16;
#else
alias E = f32;
#endif

struct Params {
  h: u32,
  w: u32,
  oh: u32,
  ow: u32,
  scale_y: f32,
  scale_x: f32,
  in_off: u32,   // element offsets of the window starts in the bindings
  out_off: u32,
}

@group(0) @binding(0) var<storage, read> src: array<E>;
@group(0) @binding(1) var<storage, read_write> dst: array<E>;
@group(0) @binding(2) var<uniform> p: Params;

fn source_index(d: u32, scale: f32, size: u32) -> u32 {
  return min(u32(floor(f32(d) * scale)), size - 1u);
}

@compute @workgroup_size({{WX}}, {{WY}})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let x = wid.x * {{WX}}u + lid.x;
  let plane = wid.z;
#if BACKWARD
  if (x >= p.w) { return; }
  // Output columns and rows mapping to (y, x) lie within one step of x / scale.
  let x_lo = u32(max(floor(f32(x) / p.scale_x) - 1.0, 0.0));
  for (var y = lid.y; y < p.h; y += {{WY}}u) {
    let y_lo = u32(max(floor(f32(y) / p.scale_y) - 1.0, 0.0));
    var s = 0.0;
    for (var oy = y_lo; oy < p.oh; oy++) {
      let sy = source_index(oy, p.scale_y, p.h);
      if (sy > y) { break; }
      if (sy < y) { continue; }
      for (var ox = x_lo; ox < p.ow; ox++) {
        let sx = source_index(ox, p.scale_x, p.w);
        if (sx > x) { break; }
        if (sx == x) { s += f32(src[p.in_off + (plane * p.oh + oy) * p.ow + ox]); }
      }
    }
    dst[p.out_off + (plane * p.h + y) * p.w + x] = E(s);
  }
#else
  if (x >= p.ow) { return; }
  let sx = source_index(x, p.scale_x, p.w);
  for (var y = lid.y; y < p.oh; y += {{WY}}u) {
    let sy = source_index(y, p.scale_y, p.h);
    dst[p.out_off + (plane * p.oh + y) * p.ow + x] = src[p.in_off + (plane * p.h + sy) * p.w + sx];
  }
#endif
}
