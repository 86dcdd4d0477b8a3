// Split-K reduction of the matmul family (appended to matmul_common.wgsl, with neither K4 nor
// A_F16): the product kernels wrote each chunk's f32 partial sums without an epilogue into a
// scratch buffer [products * splits][m][n], which is bound here as A. One invocation per output
// element sums its `splits` partials in chunk order (f32) and applies the same epilogue as an
// unsplit product: alpha, bias, addend, activation, C's strides and, with C_F16, the one rounding.
// Grid: x (and y past 65535 workgroups) over the m * n elements of a product, z over products.

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let mn = p.m * p.n;
  let i = gid.y * nwg.x * 256u + gid.x;
  if (i >= mn) { return; }
  let z = p.z0 + gid.z;
  var at = z * p.splits * mn + i;
  var acc = 0.0;
  for (var s = 0u; s < p.splits; s++) {
    acc += A[at];
    at += mn;
  }
  epilogue(acc, p.c_off + z * p.scz, i / p.n, i % p.n);
}
