// Nearest-neighbour 2x upsampling of NCHW planes and its backward, one small-plane (h x w) pixel at
// a time. A workgroup of WX x WY invocations covers WX columns of one plane (z) and walks its rows
// WY at a time: the coordinates come from the ids, so no lane divides, and narrow planes keep
// their lanes busy (lavapipe pays per workgroup and per idle lane).
//   forward:  writes out[plane, 2y + dy, 2x .. 2x + 1] = in[plane, y, x] for dy = 0, 1
//   BACKWARD: writes out[plane, y, x] = the sum of in's 2x2 block at (2y, 2x)
// The big plane's rows (2w wide) are read or written as vec2 pairs.
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
  in_off: u32,   // offsets of the window starts in the bindings (elements; vec2s on the big side)
  out_off: u32,
}

#if BACKWARD
@group(0) @binding(0) var<storage, read> src: array<vec2<E>>;
@group(0) @binding(1) var<storage, read_write> dst: array<E>;
#else
@group(0) @binding(0) var<storage, read> src: array<E>;
@group(0) @binding(1) var<storage, read_write> dst: array<vec2<E>>;
#endif
@group(0) @binding(2) var<uniform> p: Params;

@compute @workgroup_size({{WX}}, {{WY}})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let x = wid.x * {{WX}}u + lid.x;
  if (x >= p.w) { return; }
  let plane = wid.z;
  for (var y = lid.y; y < p.h; y += {{WY}}u) {
    copy(plane, y, x);
  }
}

fn copy(plane: u32, y: u32, x: u32) {
  let small = (plane * p.h + y) * p.w + x;
  let big = (plane * 2u * p.h + 2u * y) * p.w + x; // vec2 index of (2y, 2x); the next row is + w
#if BACKWARD
  let top = vec2<f32>(src[p.in_off + big]);
  let bottom = vec2<f32>(src[p.in_off + big + p.w]);
  dst[p.out_off + small] = E((top.x + top.y) + (bottom.x + bottom.y));
#else
  let v = vec2<E>(src[p.in_off + small]);
  dst[p.out_off + big] = v;
  dst[p.out_off + big + p.w] = v;
#endif
}
