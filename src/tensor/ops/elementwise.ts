// Elementwise ops (forward and backward side by side): fills, unary maps, binary maps with numpy
// broadcasting. Same-shape ops on tensors larger than the storage-binding limit run in windows.
import src from "../../../wgsl/elementwise.wgsl" with { type: "text" };
import rowsSrc from "../../../wgsl/broadcast_rows.wgsl" with { type: "text" };
import { gpu, type Uniforms } from "../../gpu/device.ts";
import { record } from "../autograd.ts";
import { Tensor, numel, shapeStr } from "../tensor.ts";
import { broadcastShapes, broadcastStrides, collapseDims, pad8, sameShape } from "./shape.ts";
import { sumTo } from "./reduce.ts";
import { castRaw } from "./cast.ts";

const WG = 256;

function params(n: number, s0 = 0, s1 = 0, rank = 0, dims: number[] = [], sa: number[] = [], sb: number[] = []): Uniforms {
  return ["uuff" + "u".repeat(24), n, rank, s0, s1, ...pad8(dims), ...pad8(sa, 0), ...pad8(sb, 0)];
}

function checkF32(op: string, ...ts: Tensor[]): void {
  for (const t of ts) if (t.dtype !== "f32") throw new Error(`${op}: expects f32, got ${t.dtype} ${shapeStr(t.shape)}`);
}

type FloatDType = "f32" | "f16";

/**
 * The common dtype of an op's inputs: all f32, or all f16 (f16 activations: stored as f16, computed
 * in f32, rounded once; needs shader-f16). Mixed inputs are refused, naming both.
 */
function floatDtype(op: string, ...ts: Tensor[]): FloatDType {
  const d = ts[0].dtype;
  for (const t of ts) {
    if (t.dtype !== "f32" && t.dtype !== "f16") throw new Error(`${op}: expects f32 or f16, got ${t.dtype} ${shapeStr(t.shape)}`);
    if (t.dtype !== d) throw new Error(`${op}: inputs mix ${d} and ${t.dtype} (${ts.map((x) => shapeStr(x.shape)).join(", ")}); cast one first`);
  }
  if (d === "f16" && !gpu().hasF16) throw new Error(`${op}: f16 activations need the adapter's shader-f16 feature`);
  return d as FloatDType;
}

/** Kernel defines for the storage type `dtype` computed in T (f32 or vec4<f32>). */
function typeDefines(dtype: FloatDType, vec: boolean): Record<string, string | boolean> {
  const T = vec ? "vec4<f32>" : "f32";
  return { T, S: dtype === "f16" ? (vec ? "vec4<f16>" : "f16") : T, HALF: dtype === "f16" };
}

/**
 * Run a same-shape elementwise kernel over every element of `out`, split into windows of at most the
 * binding limit (offsets aligned to 256 bytes). Sizes that are a multiple of 4 run on vec4s.
 */
function runWindowed(kernelName: string, defines: Record<string, string | number | boolean>, inputs: Tensor[], out: Tensor, s0 = 0, s1 = 0): void {
  const g = gpu();
  const n = out.size;
  const vec = n % 4 === 0;
  const dtype = out.dtype as FloatDType;
  const k = g.kernel(kernelName + (vec ? "_v4" : ""), src, { ...defines, ...typeDefines(dtype, vec) });
  const maxElems = Math.floor(g.maxBinding / 1024) * 256;
  const bytes = dtype === "f16" ? 2 : 4;
  for (let start = 0; start < n; start += maxElems) {
    const count = Math.min(maxElems, n - start);
    // Binding sizes are whole words: an odd count of halves binds one more (never read).
    const bind = (t: Tensor) => ({ buffer: t.buffer, offset: start * bytes, size: Math.ceil((count * bytes) / 4) * 4 });
    const items = vec ? count / 4 : count;
    g.dispatch(k, [...inputs.map(bind), bind(out)], params(items, s0, s1), g.grid(Math.ceil(items / WG)));
  }
}

// ---------------------------------------------------------------------------------------- fills

/** A tensor of `value`; f16 (an f16 activation's zeros, needs shader-f16) holds `value` rounded. */
export function full(shape: readonly number[], value: number, label = "full", dtype: FloatDType = "f32"): Tensor {
  if (dtype === "f16" && !gpu().hasF16) throw new Error(`full: f16 ${shapeStr(shape)} needs the adapter's shader-f16 feature`);
  const out = Tensor.empty(shape, dtype, label);
  runWindowed("fill", { KIND_FILL: true }, [], out, value);
  return out;
}

export const zeros = (shape: readonly number[], label = "zeros") => full(shape, 0, label);
export const ones = (shape: readonly number[], label = "ones") => full(shape, 1, label);
export const zerosLike = (t: Tensor) => full(t.shape, 0, "zeros");
export const onesLike = (t: Tensor) => full(t.shape, 1, "ones");

// ---------------------------------------------------------------------------------------- unary

/** out = EXPR(a) with a backward `grad * DERIV(a, out)`. */
interface UnaryDef {
  expr: string;
  /** Derivative times `b` (the incoming gradient), in terms of `a` (the input). */
  grad: string;
}

const UNARY: Record<string, UnaryDef> = {
  neg: { expr: "-a", grad: "-b" },
  exp: { expr: "exp(a)", grad: "b * exp(a)" },
  log: { expr: "log(a)", grad: "b / a" },
  sqrt: { expr: "sqrt(a)", grad: "b * 0.5 / sqrt(a)" },
  square: { expr: "a * a", grad: "b * 2.0 * a" },
  abs: { expr: "abs(a)", grad: "b * sign(a)" },
  relu: { expr: "max(a, T(0.0))", grad: "select(T(0.0), b, a > T(0.0))" },
  sigmoid: { expr: "sigmoid(a)", grad: "b * sigmoid(a) * (1.0 - sigmoid(a))" },
  tanh: { expr: "tanh(a)", grad: "b * (1.0 - tanh(a) * tanh(a))" },
  silu: { expr: "a * sigmoid(a)", grad: "b * sigmoid(a) * (1.0 + a * (1.0 - sigmoid(a)))" },
  gelu: { expr: "gelu(a)", grad: "b * gelu_grad(a)" },
  quickGelu: {
    expr: "a * sigmoid(1.702 * a)",
    grad: "b * (sigmoid(1.702 * a) + 1.702 * a * sigmoid(1.702 * a) * (1.0 - sigmoid(1.702 * a)))",
  },
  // scale and shift by uniforms: a * s0 + s1
  affine: { expr: "a * p.s0 + p.s1", grad: "b * p.s0" },
  // clamp to [s0, s1]; the gradient passes where the input is inside
  clamp: { expr: "clamp(a, T(p.s0), T(p.s1))", grad: "select(T(0.0), b, (a >= T(p.s0)) & (a <= T(p.s1)))" },
};

function unary(name: keyof typeof UNARY, a: Tensor, s0 = 0, s1 = 0): Tensor {
  const dtype = floatDtype(name, a);
  const def = UNARY[name];
  const out = Tensor.empty(a.shape, dtype, name);
  runWindowed(`unary_${name}`, { UNARY: true, EXPR: def.expr }, [a], out, s0, s1);
  return record(out, name, [a], [a], (g, [x]) => [binarySameShape(`${name}_grad`, def.grad, x, g, s0, s1)]);
}

export const neg = (a: Tensor) => unary("neg", a);
export const exp = (a: Tensor) => unary("exp", a);
export const log = (a: Tensor) => unary("log", a);
export const sqrt = (a: Tensor) => unary("sqrt", a);
export const square = (a: Tensor) => unary("square", a);
export const abs = (a: Tensor) => unary("abs", a);
export const relu = (a: Tensor) => unary("relu", a);
export const sigmoid = (a: Tensor) => unary("sigmoid", a);
export const tanh = (a: Tensor) => unary("tanh", a);
export const silu = (a: Tensor) => unary("silu", a);
/** GELU with the exact erf form (as torch's default and diffusers' GEGLU). */
export const gelu = (a: Tensor) => unary("gelu", a);
/** x * sigmoid(1.702 x), CLIP's activation. */
export const quickGelu = (a: Tensor) => unary("quickGelu", a);
/** a * scale + shift. */
export const affine = (a: Tensor, scale: number, shift = 0) => unary("affine", a, scale, shift);
export const scale = (a: Tensor, s: number) => unary("affine", a, s, 0);
export const addScalar = (a: Tensor, s: number) => unary("affine", a, 1, s);
/** Clamp to [lo, hi] (torch.clamp; the gradient is zero outside). */
export const clamp = (a: Tensor, lo: number, hi: number) => unary("clamp", a, lo, hi);

// ---------------------------------------------------------------------------------------- binary

/** Same-shape binary map without autograd (used by backward formulas). */
export function binarySameShape(name: string, expr: string, a: Tensor, b: Tensor, s0 = 0, s1 = 0): Tensor {
  const dtype = floatDtype(name, a, b);
  if (!sameShape(a.shape, b.shape)) throw new Error(`${name}: shapes ${shapeStr(a.shape)} and ${shapeStr(b.shape)} differ`);
  const out = Tensor.empty(a.shape, dtype, name);
  runWindowed(`binary_${name}`, { EXPR: expr }, [a, b], out, s0, s1);
  return out;
}

/** Binary map with broadcasting, no autograd. */
export function binaryMap(name: string, expr: string, a: Tensor, b: Tensor, s0 = 0, s1 = 0): Tensor {
  if (sameShape(a.shape, b.shape)) return binarySameShape(name, expr, a, b, s0, s1);
  const dtype = floatDtype(name, a, b);
  const shape = broadcastShapes(a.shape, b.shape, name);
  const out = Tensor.empty(shape, dtype, name);
  const g = gpu();
  const c = collapseDims(shape, [broadcastStrides(a.shape, shape), broadcastStrides(b.shape, shape)]);
  // The row kernel is f32 only: f16 takes the general one.
  if (dtype === "f32" && broadcastRows(name, expr, c, a, b, out, s0, s1)) return out;
  const k = g.kernel(`bcast_${name}`, src, { BROADCAST: true, EXPR: expr, RANK: c.dims.length, ...typeDefines(dtype, false) });
  const p = params(out.size, s0, s1, c.dims.length, c.dims, c.strides[0], c.strides[1]);
  g.dispatch(k, [a.binding(), b.binding(), out.binding()], p, g.grid(Math.ceil(out.size / WG)));
  return out;
}

const ROWS_WG = 64;

/**
 * The fast broadcast (wgsl/broadcast_rows.wgsl) when the collapsed output shape is [Z, Y, X] (or
 * shorter) with X % 4 == 0 and each input either runs along X (stride 1) or is constant along it
 * (stride 0). Returns false, dispatching nothing, when the shape needs the general kernel.
 */
function broadcastRows(
  name: string,
  expr: string,
  c: { dims: number[]; strides: number[][] },
  a: Tensor,
  b: Tensor,
  out: Tensor,
  s0: number,
  s1: number,
): boolean {
  const g = gpu();
  const rank = c.dims.length;
  const x = c.dims[rank - 1];
  const [sa, sb] = c.strides;
  if (rank > 3 || x % 4 !== 0 || sa[rank - 1] > 1 || sb[rank - 1] > 1) return false;
  const y = rank >= 2 ? c.dims[rank - 2] : 1;
  const z = rank === 3 ? c.dims[0] : 1;
  if (y > g.maxGroupsPerDim || z > g.maxGroupsPerDim) return false;
  const yStride = (s: number[]) => (rank >= 2 ? s[rank - 2] : 0);
  const zStride = (s: number[]) => (rank === 3 ? s[0] : 0);
  const aRow = sa[rank - 1] === 1;
  const bRow = sb[rank - 1] === 1;
  const k = g.kernel(`bcast_rows_${name}_${aRow ? "r" : "c"}${bRow ? "r" : "c"}`, rowsSrc, { EXPR: expr, A_ROW: aRow, B_ROW: bRow });
  const uniforms: Uniforms = ["uuuuuffu", x / 4, yStride(sa), zStride(sa), yStride(sb), zStride(sb), s0, s1, 0];
  g.dispatch(k, [a.binding(), b.binding(), out.binding()], uniforms, [Math.ceil(x / 4 / ROWS_WG), y, z]);
  return true;
}

/**
 * Reduce a gradient of the broadcast shape back to `shape` (sum over broadcast dims). An f16
 * gradient is summed in f32 and rounded once.
 */
function unbroadcast(g: Tensor, shape: readonly number[]): Tensor {
  if (sameShape(g.shape, shape)) return g.detach();
  if (g.dtype !== "f16") return sumTo(g, shape);
  const g32 = castRaw(g, "f32");
  const s = sumTo(g32, shape);
  g32.dispose();
  const r = castRaw(s, "f16");
  s.dispose();
  return r;
}

export function add(a: Tensor, b: Tensor): Tensor {
  const out = binaryMap("add", "a + b", a, b);
  // Only the wanted sides: a broadcast side's gradient is a reduction (a frozen bias or time
  // embedding added to a trained activation would pay for one per call otherwise).
  return record(out, "add", [a, b], [], (g, _s, needs) => [needs[0] ? unbroadcast(g, a.shape) : null, needs[1] ? unbroadcast(g, b.shape) : null]);
}

export function sub(a: Tensor, b: Tensor): Tensor {
  const out = binaryMap("sub", "a - b", a, b);
  return record(out, "sub", [a, b], [], (g, _s, needs) => {
    const gb = needs[1] ? scale(g, -1) : null;
    const r = [needs[0] ? unbroadcast(g, a.shape) : null, gb ? unbroadcast(gb, b.shape) : null];
    gb?.dispose();
    return r;
  });
}

export function mul(a: Tensor, b: Tensor): Tensor {
  const out = binaryMap("mul", "a * b", a, b);
  return record(out, "mul", [a, b], [a, b], (g, [sa, sb], needs) => {
    const res: (Tensor | null)[] = [null, null];
    if (needs[0]) {
      const t = binaryMap("mul", "a * b", g, sb);
      res[0] = unbroadcast(t, a.shape);
      t.dispose();
    }
    if (needs[1]) {
      const t = binaryMap("mul", "a * b", g, sa);
      res[1] = unbroadcast(t, b.shape);
      t.dispose();
    }
    return res;
  });
}

export function div(a: Tensor, b: Tensor): Tensor {
  const out = binaryMap("div", "a / b", a, b);
  return record(out, "div", [a, b], [a, b], (g, [sa, sb], needs) => {
    const res: (Tensor | null)[] = [null, null];
    if (needs[0]) {
      const t = binaryMap("div", "a / b", g, sb);
      res[0] = unbroadcast(t, a.shape);
      t.dispose();
    }
    if (needs[1]) {
      // d(a/b)/db = -a / b^2
      const q = binaryMap("div", "a / b", sa, sb); // a/b
      const q2 = binaryMap("div", "a / b", q, sb); // a/b^2
      const t = binaryMap("negmul", "-a * b", g, q2);
      res[1] = unbroadcast(t, b.shape);
      q.dispose();
      q2.dispose();
      t.dispose();
    }
    return res;
  });
}

// ---------------------------------------------------------------------------------------- views

/** A new handle on the same storage with another shape of equal size; no autograd. */
export function reshapeRaw(t: Tensor, shape: readonly number[]): Tensor {
  if (numel(shape) !== t.size) throw new Error(`reshape: ${shapeStr(t.shape)} has ${t.size} elements, not ${shapeStr(shape)}`);
  t.storage.refs++;
  return new Tensor(t.storage, shape, t.dtype, t.label);
}

/** Broadcast `t` to `shape` (materialised), times `mult`; no autograd. */
export function expand(t: Tensor, shape: readonly number[], mult = 1): Tensor {
  checkF32("expand", t);
  const full = broadcastShapes(t.shape, shape, "expand");
  if (!sameShape(full, shape)) throw new Error(`expand: ${shapeStr(t.shape)} does not broadcast to ${shapeStr(shape)}`);
  const out = Tensor.empty(shape, "f32", "expand");
  const g = gpu();
  const c = collapseDims(shape, [broadcastStrides(t.shape, shape)]);
  const k = g.kernel("expand", src, { UNARY: true, BROADCAST: true, EXPR: "a * p.s0", RANK: c.dims.length, T: "f32", S: "f32" });
  const p = params(out.size, mult, 0, c.dims.length, c.dims, c.strides[0]);
  g.dispatch(k, [t.binding(), out.binding()], p, g.grid(Math.ceil(out.size / WG)));
  return out;
}

// ---------------------------------------------------------------------------------------- GEGLU

/** GEGLU (diffusers' feed-forward gate): x [..., 2I] -> x[..., :I] * gelu(x[..., I:]) [..., I]. */
export function geglu(x: Tensor): Tensor {
  const dtype = floatDtype("geglu", x);
  const two = x.shape[x.rank - 1];
  if (two % 2 !== 0) throw new Error(`geglu: last dim ${two} of ${shapeStr(x.shape)} is odd`);
  const half = two / 2;
  const out = Tensor.empty([...x.shape.slice(0, -1), half], dtype, "geglu");
  const g = gpu();
  const k = g.kernel("geglu", src, { GEGLU: true, ...typeDefines(dtype, false) });
  g.dispatch(k, [x.binding(), out.binding()], params(out.size, 0, 0, half), g.grid(Math.ceil(out.size / WG)));
  return record(out, "geglu", [x], [x], (gradOut, [sx]) => {
    if (gradOut.dtype !== dtype) throw new Error(`geglu backward: an ${gradOut.dtype} gradient for an ${dtype} output`);
    const dx = Tensor.empty(sx.shape, dtype, "geglu-grad"); // [..., 2I]
    const kb = g.kernel("geglu_bwd", src, { GEGLU_BWD: true, ...typeDefines(dtype, false) });
    g.dispatch(kb, [sx.binding(), gradOut.binding(), dx.binding()], params(gradOut.size, 0, 0, half), g.grid(Math.ceil(gradOut.size / WG)));
    return [dx];
  });
}

/** Elementwise maximum with broadcasting; the gradient goes to `a` where a >= b, else to `b`. */
export function maximum(a: Tensor, b: Tensor): Tensor {
  const out = binaryMap("max", "max(a, b)", a, b);
  return record(out, "maximum", [a, b], [a, b], (g, [sa, sb], needs) => {
    const res: (Tensor | null)[] = [null, null];
    if (needs[0]) {
      const ga = binaryMap("max_ga", "select(T(0.0), T(1.0), a >= b)", sa, sb);
      const t = binaryMap("mul", "a * b", g, ga);
      res[0] = unbroadcast(t, a.shape);
      ga.dispose();
      t.dispose();
    }
    if (needs[1]) {
      const gb = binaryMap("max_gb", "select(T(0.0), T(1.0), b > a)", sa, sb);
      const t = binaryMap("mul", "a * b", g, gb);
      res[1] = unbroadcast(t, b.shape);
      gb.dispose();
      t.dispose();
    }
    return res;
  });
}
