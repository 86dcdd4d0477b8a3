// Scaled dot-product attention, forward and backward, with attention-map capture.
//
// One algorithm for every sequence length (cross-attention's 77 keys as well as 4096x4096
// self-attention): an online-softmax (flash-attention style) forward that keeps only the output and
// the per-query logsumexp, and a backward that recomputes probabilities from that logsumexp, so
// memory is O(L * d) and no [Lq, Lk] matrix is ever built. dk and dv are summed over query chunks
// (partial copies added afterwards) so that few keys still give enough parallel work. The kernels
// and their tiling are described in wgsl/attention_common.wgsl. Two layouts share them through
// (batch, head, row) strides:
//   attention(q, k, v)                  q [B, H, Lq, d], k, v [B, H, Lk, d]  -> [B, H, Lq, d]
//   attentionMergedHeads(q, k, v, H)    q [B, Lq, H*d], k, v [B, Lk, H*d]    -> [B, Lq, H*d]
// The second is what a Linear projection produces, so it needs no permutes around the op.
// f16 activations (needs shader-f16): f16 q, k, v give an f16 output and f16 gradients; scores,
// softmax, logsumexp and every sum stay f32 and each stored value is rounded once (dk/dv summed
// over query chunks go through f32 partial copies). Attention maps are captured in f32 either way.
import fwdSrc from "../../../wgsl/attention.wgsl" with { type: "text" };
import bwdSrc from "../../../wgsl/attention_bwd.wgsl" with { type: "text" };
import reduceSrc from "../../../wgsl/attention_reduce.wgsl" with { type: "text" };
import captureSrc from "../../../wgsl/attention_capture.wgsl" with { type: "text" };
import commonSrc from "../../../wgsl/attention_common.wgsl" with { type: "text" };
import { gpu, type Uniforms } from "../../gpu/device.ts";
import { adapterClass, recordTuning } from "../../gpu/tuning.ts";
import { record } from "../autograd.ts";
import { unrolledSource } from "./unroll.ts";
import { Tensor, shapeStr } from "../tensor.ts";

/**
 * Accumulate head-averaged attention probabilities of some batch rows into `out` (no autograd).
 * With P[b, h, i, c] = softmax_c(scale * q[b,h,i] . k[b,h,c]) (causal mask applied), H heads,
 * b = rows[0] + r for r < rows[1], and C the chosen key columns:
 *   mode "sum" (default): out [rows[1], Lq],     out[r, i]    += weight * (1/H) sum_h sum_{c in C} P[b, h, i, c]
 *   mode "map":           out [rows[1], Lq, Lk], out[r, i, c] += weight * (1/H) sum_h P[b, h, i, c]   for c in C
 *                         (other columns untouched; pass every column for the full map)
 * To average over the chosen columns too, fold 1/|C| into `weight`; to accumulate over layers and
 * sampling steps, pass the same `out` each time. Capture runs in the forward only: do not pass it
 * to attention inside a function that is recomputed during backward (gradient checkpointing).
 */
export interface AttentionCapture {
  /** Batch rows [start, count] to capture (e.g. the text-conditioned third of a guided batch). */
  rows: [start: number, count: number];
  /** Key columns: explicit indices, or a contiguous range. */
  cols: number[] | { start: number; count: number };
  /** f32 accumulator: [count, Lq] for "sum", [count, Lq, Lk] for "map". */
  out: Tensor;
  weight: number;
  mode?: "sum" | "map";
}

export interface AttentionOptions {
  /** Top-left aligned causal mask: query i attends to keys j <= i (CLIP's text encoder). */
  causal?: boolean;
  /** Score scale; default 1 / sqrt(d). */
  scale?: number;
  capture?: AttentionCapture;
}

/** Tile shape of the attention kernels (see wgsl/attention_common.wgsl). */
export interface AttentionTuning {
  /** Rows per tile (1..8): queries in the forward and dq kernels, keys in the dk/dv kernel. */
  rows: number;
  /** Block rows per lane per step of the forward (8 * keys keys per online-softmax step). */
  keys: number;
  /** Query rows per forward tile (8 or 16; default `rows`). */
  fwdRows?: number;
  /** Block rows per lane per step of the backward kernels. */
  bwdKeys: number;
  /** Exchange values between lanes with subgroup operations (default: when the adapter has them). */
  subgroups?: boolean;
}

// Measured on lavapipe (2 cores): 8 rows and 2 keys per lane per step beat 4 rows and 1, 3 or 4
// keys in the forward; 1 key per step is best in the backward at d 40 and 80. Real GPUs have not
// been measured yet and use the same shape.
const TUNING: Record<"cpu" | "gpu", AttentionTuning> = {
  cpu: { rows: 8, keys: 2, bwdKeys: 1, fwdRows: 16 },
  gpu: { rows: 8, keys: 2, bwdKeys: 1 },
};
/** Per-lane accumulator budget in vec4s: wide heads get fewer rows per tile. */
const ACC_BUDGET = 32;
/** Forward tiles may hold more accumulators (vec4s per lane): measured faster on lavapipe. */
const FWD_ACC_BUDGET = 48;
let override: AttentionTuning | null = null;

/** Force a tile shape (benchmarks, tests); null restores the per-adapter default. */
export function setAttentionTuning(t: AttentionTuning | null): void {
  override = t;
}

function tuning(): AttentionTuning {
  if (override) return override;
  const cls = adapterClass(gpu());
  const t = TUNING[cls];
  recordTuning("attention", `${cls}: tiles of ${t.rows} rows, ${8 * t.keys}-key steps, ${useSubgroups() ? "subgroup" : "workgroup-memory"} lane exchange`);
  return t;
}

function useSubgroups(): boolean {
  const g = gpu();
  const minSize = (g.adapter.info as unknown as { subgroupMinSize?: number }).subgroupMinSize ?? 8;
  return g.hasSubgroups && minSize >= 8 && (override?.subgroups ?? true);
}

/**
 * Query rows per forward tile: up to `fwdRows` (tiles above 8 rows load 8 rows per lane group)
 * within the accumulator budget, and not more than the queries there are (rounded up to 8).
 */
function fwdRows(d: number, t: AttentionTuning, lq: number): number {
  const T = cdiv(cdiv(d, 4), 8);
  const want = Math.min(t.fwdRows ?? t.rows, Math.max(t.rows, 8 * cdiv(lq, 8)));
  const fit = Math.max(1, Math.floor(FWD_ACC_BUDGET / T));
  return want <= 8 ? Math.min(want, 8, fit) : Math.max(8, Math.min(want, 8 * Math.floor(fit / 8)));
}

/** Rows per tile for head dim d with `accumulators` accumulator rows per tile row. */
function tileRows(d: number, rows: number, accumulators: number): number {
  const T = cdiv(cdiv(d, 4), 8);
  return Math.max(1, Math.min(rows, 8, Math.floor(ACC_BUDGET / (T * accumulators))));
}

/** Where the rows of one (batch, head) live: element strides of batch, head and row. */
interface Geometry {
  B: number;
  H: number;
  Lq: number;
  Lk: number;
  d: number;
  qs: [number, number, number];
  ks: [number, number, number];
  os: [number, number, number];
}

const cdiv = (a: number, b: number) => Math.ceil(a / b);

function validate(op: string, q: Tensor, k: Tensor, v: Tensor): void {
  for (const [name, t] of [["q", q], ["k", k], ["v", v]] as const) {
    if (t.dtype !== "f32" && t.dtype !== "f16") throw new Error(`${op}: ${name} must be f32 or f16, got ${t.dtype} ${shapeStr(t.shape)}`);
    if (t.dtype !== q.dtype) throw new Error(`${op}: q ${shapeStr(q.shape)} ${q.dtype} and ${name} ${shapeStr(t.shape)} ${t.dtype} mix dtypes; cast one first`);
    if (t.byteLength > gpu().maxBinding) throw new Error(`${op}: ${name} ${shapeStr(t.shape)} exceeds the storage binding limit`);
  }
  if (q.dtype === "f16" && !gpu().hasF16) throw new Error(`${op}: f16 activations (q ${shapeStr(q.shape)}) need the adapter's shader-f16 feature`);
  if (shapeStr(k.shape) !== shapeStr(v.shape)) throw new Error(`${op}: k ${shapeStr(k.shape)} and v ${shapeStr(v.shape)} differ`);
}

function geometry4d(q: Tensor, k: Tensor, v: Tensor): Geometry {
  const op = "attention";
  validate(op, q, k, v);
  if (q.rank !== 4 || k.rank !== 4) throw new Error(`attention: expects q [B,H,Lq,d] and k, v [B,H,Lk,d], got q ${shapeStr(q.shape)}, k ${shapeStr(k.shape)}`);
  const [B, H, Lq, d] = q.shape;
  const [kb, kh, Lk, kd] = k.shape;
  if (kb !== B || kh !== H || kd !== d) throw new Error(`attention: q ${shapeStr(q.shape)} and k ${shapeStr(k.shape)} disagree on batch, heads or head dim`);
  return { B, H, Lq, Lk, d, qs: [H * Lq * d, Lq * d, d], ks: [H * Lk * d, Lk * d, d], os: [H * Lq * d, Lq * d, d] };
}

function geometryMerged(q: Tensor, k: Tensor, v: Tensor, H: number): Geometry {
  const op = "attentionMergedHeads";
  validate(op, q, k, v);
  if (q.rank !== 3 || k.rank !== 3) throw new Error(`${op}: expects q [B,Lq,H*d] and k, v [B,Lk,H*d], got q ${shapeStr(q.shape)}, k ${shapeStr(k.shape)}`);
  const [B, Lq, C] = q.shape;
  const [kb, Lk, kc] = k.shape;
  if (kb !== B || kc !== C) throw new Error(`${op}: q ${shapeStr(q.shape)} and k ${shapeStr(k.shape)} disagree on batch or width`);
  if (!Number.isInteger(H) || H < 1 || C % H !== 0) throw new Error(`${op}: width ${C} of q ${shapeStr(q.shape)} does not split into ${H} heads`);
  const d = C / H;
  return { B, H, Lq, Lk, d, qs: [Lq * C, d, C], ks: [Lk * C, d, C], os: [Lq * C, d, C] };
}

/** Attention over q [B, H, Lq, d], k, v [B, H, Lk, d]; returns [B, H, Lq, d]. */
export function attention(q: Tensor, k: Tensor, v: Tensor, opts: AttentionOptions = {}): Tensor {
  return sdpa("attention", geometry4d(q, k, v), q, k, v, opts);
}

/**
 * Attention with heads merged into the channel dim: q [B, Lq, H*d], k, v [B, Lk, H*d] (head h owns
 * channels [h*d, (h+1)*d)); returns [B, Lq, H*d], the layout the output projection consumes.
 */
export function attentionMergedHeads(q: Tensor, k: Tensor, v: Tensor, heads: number, opts: AttentionOptions = {}): Tensor {
  return sdpa("attentionMergedHeads", geometryMerged(q, k, v, heads), q, k, v, opts);
}

/** A compiled kernel from a source with #unroll blocks. */
function kernel(name: string, source: string, defs: Record<string, number | boolean>) {
  return gpu().kernel(name, unrolledSource(name, source, defs), defs);
}

function tileDefines(geo: Geometry, f16: boolean, rows: number, kpl: number, extra: Record<string, number | boolean>): Record<string, number | boolean> {
  const D4 = cdiv(geo.d, 4);
  return { D: geo.d, D4, R: rows, KPL: kpl, T: cdiv(D4, 8), VEC4: geo.d % 4 === 0, SUBGROUPS: useSubgroups(), F16: f16, ...extra };
}

function strides4(s: readonly number[], w = 0): number[] {
  return [s[0], s[1], s[2], w];
}

function sdpa(op: string, geo: Geometry, q: Tensor, k: Tensor, v: Tensor, opts: AttentionOptions): Tensor {
  const { B, H, Lq, Lk, d } = geo;
  if (Lk === 0 || d === 0) throw new Error(`${op}: needs at least one key and a non-empty head dim (q ${shapeStr(q.shape)}, k ${shapeStr(k.shape)})`);
  const causal = opts.causal === true;
  const scale = opts.scale ?? 1 / Math.sqrt(d);
  const g = gpu();
  const t = tuning();
  const f16 = q.dtype === "f16";
  const out = Tensor.empty(q.shape, q.dtype, op);
  const lse = Tensor.empty([B, H, Lq], "f32", `${op}.lse`); // per-query logsumexp of the scaled scores
  if (B * H * Lq > 0) {
    const rows = fwdRows(d, t, Lq);
    const tiles = cdiv(Lq, rows);
    const kern = kernel("attention_fwd", commonSrc + fwdSrc, tileDefines(geo, f16, rows, t.keys, { QG: cdiv(rows, 8) }));
    g.dispatch(kern, [q.binding(), k.binding(), v.binding(), out.binding(), lse.binding()], attnParams(geo, causal, tiles, scale, 0, 0, 0, 0), g.grid(B * H * tiles));
    if (opts.capture) captureMaps(op, geo, q, k, lse, causal, scale, opts.capture);
  }
  const res = record(out, op, [q, k, v], [q, k, v, out, lse], (dout, [sq, sk, sv, so, slse], needs) => {
    if (dout.dtype !== so.dtype) throw new Error(`${op} backward: an ${dout.dtype} gradient ${shapeStr(dout.shape)} for an ${so.dtype} output ${shapeStr(so.shape)}`);
    return attentionBackward(geo, sq, sk, sv, so, slse, dout, causal, scale, needs);
  });
  lse.dispose();
  return res;
}

/**
 * Capture attention maps (see AttentionCapture) without computing the attention output: for a layer
 * whose maps are wanted more than once per call. q [B, H, Lq, d] and k [B, H, Lk, d], or (rank 3)
 * q [B, Lq, heads*d] and k [B, Lk, heads*d]. Recomputes each captured query's logsumexp over all keys.
 */
export function captureAttention(q: Tensor, k: Tensor, heads: number, opts: AttentionOptions & { capture: AttentionCapture }): void {
  const op = "captureAttention";
  const geo = q.rank === 4 ? geometry4d(q, k, k) : geometryMerged(q, k, k, heads);
  if (geo.Lk === 0 || geo.d === 0) throw new Error(`${op}: needs at least one key and a non-empty head dim (q ${shapeStr(q.shape)}, k ${shapeStr(k.shape)})`);
  captureMaps(op, geo, q, k, null, opts.causal === true, opts.scale ?? 1 / Math.sqrt(geo.d), opts.capture);
}

function attnParams(geo: Geometry, causal: boolean, blocks: number, scale: number, chunkLen: number, qw: number, kw: number, vw: number): Uniforms {
  return [
    "uuuuuufu" + "u".repeat(16),
    geo.B, geo.H, geo.Lq, geo.Lk, causal ? 1 : 0, blocks, scale, chunkLen,
    ...strides4(geo.qs, qw), ...strides4(geo.ks, kw), ...strides4(geo.ks, vw), ...strides4(geo.os),
  ];
}

function attentionBackward(geo: Geometry, q: Tensor, k: Tensor, v: Tensor, o: Tensor, lse: Tensor, dout: Tensor, causal: boolean, scale: number, needs: boolean[]): (Tensor | null)[] {
  const { B, H, Lq, Lk, d } = geo;
  const g = gpu();
  const t = tuning();
  const grads: (Tensor | null)[] = [null, null, null];
  if (B * H * Lq === 0) {
    return needs.map((n, i) => (n ? Tensor.from(new Float32Array([q, k, v][i].size), [q, k, v][i].shape, q.dtype) : null));
  }
  const f16 = q.dtype === "f16";
  const delta = Tensor.empty([B, H, Lq], "f32", "attention.delta"); // dO . O per query
  const kDelta = g.kernel("attention_delta", reduceSrc, { ATT_DELTA: true, D: d, F16: f16 });
  g.dispatch(kDelta, [o.binding(), dout.binding(), delta.binding()], attnParams(geo, causal, 0, scale, 0, 0, 0, 0), g.grid(cdiv(B * H * Lq, 64)));
  const common = [q.binding(), k.binding(), v.binding(), dout.binding(), lse.binding(), delta.binding()];

  if (needs[0]) {
    const dq = Tensor.empty(q.shape, q.dtype, "attention.dq");
    const rows = tileRows(d, t.rows, 1);
    const tiles = cdiv(Lq, rows);
    const kern = kernel("attention_dq", commonSrc + bwdSrc, tileDefines(geo, f16, rows, t.bwdKeys, { ATT_DQ: true, HAS_DO: true }));
    g.dispatch(kern, [...common, dq.binding()], attnParams(geo, causal, tiles, scale, 0, 0, 0, 0), g.grid(B * H * tiles));
    grads[0] = dq;
  }

  if (needs[1] || needs[2]) {
    const rows = tileRows(d, t.rows, 2);
    const tiles = cdiv(Lk, rows);
    const groups = B * H * tiles;
    if (groups > g.maxGroupsPerDim) throw new Error(`attention backward: ${groups} key tiles exceed one dispatch dimension`);
    // Split the queries into chunks so that enough workgroups run when keys are few (cross-attention);
    // each chunk writes its own partial dk, dv, summed afterwards.
    const target = adapterClass(g) === "cpu" ? 16 : 2048;
    let chunks = Math.min(Math.max(1, cdiv(target, groups)), Math.max(1, cdiv(Lq, 64)));
    while (chunks > 1 && chunks * Math.max(k.size, v.size) * 4 > g.maxBinding) chunks = Math.floor(chunks / 2); // f32 partials
    const chunkLen = cdiv(Lq, chunks);
    chunks = cdiv(Lq, chunkLen);
    const dk = Tensor.empty(k.shape, k.dtype, "attention.dk");
    const dv = Tensor.empty(v.shape, v.dtype, "attention.dv");
    // partial copies are f32 (an f16 gradient is rounded once, after the sum)
    const partK = chunks > 1 ? Tensor.empty([chunks, ...k.shape], "f32", "attention.dk.partial") : dk; // [chunks, ...k]
    const partV = chunks > 1 ? Tensor.empty([chunks, ...v.shape], "f32", "attention.dv.partial") : dv;
    const kern = kernel("attention_dkv", commonSrc + bwdSrc, tileDefines(geo, f16, rows, t.bwdKeys, { ATT_DKV: true, HAS_DO: true, G_F32: f16 && chunks > 1 }));
    g.dispatch(kern, [...common, partK.binding(), partV.binding()], attnParams(geo, causal, tiles, scale, chunkLen, 0, k.size, v.size), [groups, chunks, 1]);
    if (chunks > 1) {
      const kSum = g.kernel("attention_sum_chunks", reduceSrc, { ATT_SUM: true, D: 1, F16: f16 });
      for (const [part, dst] of [[partK, dk], [partV, dv]] as const) {
        const p: Uniforms = ["uuuuuufu" + "u".repeat(16), 0, 0, 0, 0, 0, 0, 0, chunks, 0, 0, 0, dst.size, ...new Array(12).fill(0)];
        g.dispatch(kSum, [part.binding(), dst.binding()], p, g.grid(cdiv(dst.size, 256)));
        part.dispose();
      }
    }
    if (needs[1]) grads[1] = dk;
    else dk.dispose();
    if (needs[2]) grads[2] = dv;
    else dv.dispose();
  }
  delta.dispose();
  return grads;
}

function captureMaps(op: string, geo: Geometry, q: Tensor, k: Tensor, lse: Tensor | null, causal: boolean, scale: number, cap: AttentionCapture): void {
  const { B, H, Lq, Lk, d } = geo;
  const [row0, count] = cap.rows;
  const mode = cap.mode ?? "sum";
  const cols = Array.isArray(cap.cols) ? cap.cols : Array.from({ length: cap.cols.count }, (_, i) => (cap.cols as { start: number }).start + i);
  if (!Number.isInteger(row0) || !Number.isInteger(count) || row0 < 0 || count < 0 || row0 + count > B) {
    throw new Error(`${op} capture: rows [${row0}, ${count}] outside batch ${B}`);
  }
  for (const c of cols) if (!Number.isInteger(c) || c < 0 || c >= Lk) throw new Error(`${op} capture: column ${c} outside ${Lk} keys`);
  const want = mode === "map" ? [count, Lq, Lk] : [count, Lq];
  if (cap.out.dtype !== "f32" || cap.out.size !== count * Lq * (mode === "map" ? Lk : 1)) {
    throw new Error(`${op} capture: out ${shapeStr(cap.out.shape)} ${cap.out.dtype} should be f32 ${shapeStr(want)}`);
  }
  if (count === 0 || cols.length === 0) return;
  const g = gpu();
  const colT = Tensor.from(Int32Array.from(cols), [cols.length], "i32", "attention.captureCols");
  const kern = g.kernel("attention_capture", captureSrc, { D: d, MAP: mode === "map", OWN_LSE: lse === null, F16: q.dtype === "f16" });
  const params: Uniforms = [
    "uuuuuuuu" + "uuuu" + "uuuu" + "ffuu",
    B, H, Lq, Lk, causal ? 1 : 0, row0, count, cols.length,
    ...strides4(geo.qs), ...strides4(geo.ks), scale, cap.weight, 0, 0,
  ];
  g.dispatch(kern, [q.binding(), k.binding(), (lse ?? q).binding(), colT.binding(), cap.out.binding()], params, g.grid(cdiv(count * Lq, 64)));
  colT.dispose();
}
