// Runtime-level behaviour: no leaks over training steps, scopes, gradient checkpointing, frozen
// tensors, noGrad and gradient accumulation.
import { describe, expect, test } from "bun:test";
import * as ops from "../src/tensor/ops/index.ts";
import { Tensor, backward, checkpoint, clearTape, keep, noGrad, scope, tapeLength } from "../src/tensor/index.ts";
import { gpu } from "../src/gpu/device.ts";
import { bucketBytes } from "../src/gpu/pool.ts";
import { expectClose, randn, toGpu, useGpu } from "./helpers.ts";

useGpu();

const live = () => gpu().pool.snapshot().liveBytes;

/** x [B, I] times w [I, O] -> [B, O], from broadcasting ops (x as [B, I, 1] times w, summed over I). */
function linear(x: Tensor, w: Tensor, b?: Tensor): Tensor {
  const [batch, inDim] = x.shape;
  const prod = ops.mul(ops.reshape(x, [batch, inDim, 1]), w); // [B, I, O]
  const y = ops.sum(prod, 1); // [B, O]
  return b ? ops.add(y, b) : y;
}

interface Model {
  table: Tensor; // [V, I] token embedding
  w1: Tensor; // [2I, H]
  b1: Tensor; // [H]
  w2: Tensor; // [H, O]
  params: Tensor[];
}

const [V, I, H, O, N] = [13, 6, 8, 3, 5];

function makeModel(seed: number): Model {
  const t = (shape: number[], k: number, std: number) => toGpu(randn(shape.reduce((a, b) => a * b, 1), seed + k, std), shape).requireGrad().keep();
  const m = { table: t([V, I], 0, 1), w1: t([2 * I, H], 1, 0.3), b1: t([H], 2, 0.1), w2: t([H, O], 3, 0.3) };
  return { ...m, params: [m.table, m.w1, m.b1, m.w2] };
}

/** A small network touching the op families: embedding, layout, elementwise, reduce, random, cast. */
function forward(m: Model, ids: Tensor, step: number): Tensor {
  const tokens = ops.embedding(m.table, ids); // [N, I]
  const [front, back] = ops.chunk(tokens, 2, 0);
  const swapped = ops.concat([back, front], 0); // [N, I], rows rotated
  const both = ops.concat([tokens, ops.transpose(ops.transpose(swapped, 0, 1), 0, 1)], 1); // [N, 2I]
  const time = noGrad(() => ops.timestepEmbedding([step, 2 * step, 3, 4, 5], 2 * I, { flipSinToCos: true, downscaleFreqShift: 0 })); // [N, 2I]
  const h = ops.silu(linear(ops.add(both, time), m.w1, m.b1)); // [N, H]
  const viaHalf = ops.cast(ops.cast(h, "f16"), "f32");
  const y = linear(ops.slice(viaHalf, 1, 0, H), m.w2); // [N, O]
  const target = ops.randn([N, O], 7, step * N * O);
  return ops.mean(ops.square(ops.sub(y, target)));
}

describe("no leaks over training steps", () => {
  test("forward, backward, clip and AdamW leave live bytes unchanged", async () => {
    const m = makeModel(1);
    const ids = Tensor.from([3, 0, 12, 3, 7], [N], "i32").keep();
    const state = ops.createAdamWState();
    const step = (k: number) => {
      scope(() => {
        const loss = forward(m, ids, k);
        backward(loss);
        ops.clipGradNorm(m.params, 0.5);
        ops.adamW(m.params, state, { lr: 1e-2 });
      });
      for (const p of m.params) {
        p.grad?.dispose();
        p.grad = null;
      }
      expect(tapeLength()).toBe(0);
    };
    step(1); // creates the optimiser state
    await gpu().sync();
    const before = live();
    const losses: number[] = [];
    for (let k = 2; k <= 8; k++) {
      step(k);
      const loss = scope(() => noGrad(() => forward(m, ids, 1)));
      losses.push(await loss.item());
      loss.dispose();
      expect(live()).toBe(before);
    }
    // The same batch (step 1's target) is fitted better and better.
    expect(losses[losses.length - 1]).toBeLessThan(losses[0]);
    for (const p of m.params) p.dispose();
    ids.dispose();
    ops.disposeAdamWState(state);
  });
});

describe("scopes", () => {
  test("free what they created except returned and kept tensors, also on throw and when nested", async () => {
    const before = live();
    let kept: Tensor | null = null;
    const { a, list } = scope(() => {
      const tmp = ops.full([100], 1);
      const inner = scope(() => {
        const x = ops.scale(tmp, 2); // freed by the inner scope
        return ops.add(x, tmp); // moves to the outer scope
      });
      kept = keep(ops.full([3], 4));
      return { a: ops.add(inner, tmp), list: [ops.zeros([7])] };
    });
    expect(a.disposed).toBe(false);
    expect(list[0].disposed).toBe(false);
    expect(Array.from((await a.read()).slice(0, 2))).toEqual([4, 4]);
    a.dispose();
    list[0].dispose();
    kept!.dispose();
    expect(live()).toBe(before);
    let escaped: Tensor | null = null;
    expect(() =>
      scope(() => {
        escaped = ops.full([10], 1);
        throw new Error("boom");
      }),
    ).toThrow("boom");
    expect(escaped!.disposed).toBe(true);
    expect(live()).toBe(before);
  });
});

describe("gradient checkpointing", () => {
  /** A block with a parameter used inside it (not passed as an input). */
  const block = (w: Tensor) => (x: Tensor) => ops.tanh(linear(ops.silu(linear(x, w)), ops.transpose(w, 0, 1)));

  async function gradsOf(useCheckpoint: boolean, freezeInput: boolean) {
    const x = toGpu(randn(4 * 5, 1), [4, 5]).requireGrad(!freezeInput);
    const w = toGpu(randn(5 * 6, 2, 0.5), [5, 6]).requireGrad();
    const outer = toGpu(randn(5, 3), [5]).requireGrad();
    const pre = ops.mul(x, outer); // [4, 5]
    const mid = useCheckpoint ? checkpoint(block(w), [pre]) : block(w)(pre);
    const loss = ops.sum(ops.mul(mid, outer));
    backward(loss);
    const read = async (t: Tensor) => (t.grad ? Array.from(await t.grad.read()) : null);
    const out = { loss: await loss.item(), x: await read(x), w: await read(w), outer: await read(outer) };
    for (const t of [x, w, outer, pre, mid, loss]) t.dispose();
    return out;
  }

  for (const freezeInput of [false, true]) {
    test(`same gradients as the plain tape (input ${freezeInput ? "frozen" : "trainable"}), parameters inside included`, async () => {
      const plain = await gradsOf(false, freezeInput);
      const ckpt = await gradsOf(true, freezeInput);
      expect(ckpt.loss).toBe(plain.loss);
      expect(ckpt.w).not.toBeNull();
      expect(ckpt.w).toEqual(plain.w);
      expect(ckpt.outer).toEqual(plain.outer);
      expect(ckpt.x).toEqual(plain.x);
      expect(ckpt.x === null).toBe(freezeInput);
    });
  }
  test("nested checkpoints give the plain tape's gradients", async () => {
    const w = toGpu(randn(25, 4, 0.5), [5, 5]).requireGrad();
    const x = toGpu(randn(10, 5), [2, 5]).requireGrad();
    const inner = (t: Tensor) => ops.tanh(linear(t, w));
    const grads = async (nested: boolean) => {
      const outerFn = (t: Tensor) => ops.silu(nested ? checkpoint(inner, [ops.scale(t, 1.5)]) : inner(ops.scale(t, 1.5)));
      scope(() => backward(ops.sum(nested ? checkpoint(outerFn, [x]) : outerFn(x))));
      const out = [Array.from(await x.grad!.read()), Array.from(await w.grad!.read())];
      for (const t of [x, w]) {
        t.grad!.dispose();
        t.grad = null;
      }
      return out;
    };
    const [gxC, gwC] = await grads(true);
    const [gxP, gwP] = await grads(false);
    expect(gxC).toEqual(gxP);
    expect(gwC).toEqual(gwP);
    x.dispose();
    w.dispose();
  });
  test("the checkpointed block's activations are freed at once, in the forward and in the recomputation", async () => {
    const start = live();
    const w = toGpu(randn(64 * 64, 5, 0.1), [64, 64]).requireGrad();
    const x = toGpu(randn(32 * 64, 6), [32, 64]).requireGrad();
    // Four [32, 64] activations and a [32, 64, 64] product inside; only the output leaves.
    const fn = (t: Tensor) => ops.mul(ops.tanh(linear(ops.silu(t), w)), ops.silu(t));
    const bytes = (t: Tensor) => bucketBytes(t.byteLength);
    const before = live();
    scope(() => {
      const y = checkpoint(fn, [x]);
      expect(live() - before).toBe(bytes(y));
      const loss = ops.sum(y);
      backward(loss);
      expect(live() - before).toBe(bytes(y) + bytes(loss) + bytes(x.grad!) + bytes(w.grad!));
    });
    x.dispose();
    w.dispose();
    expect(live()).toBe(start);
  });
});

describe("autograd bookkeeping", () => {
  test("frozen tensors get no .grad; an op on frozen inputs only records nothing", async () => {
    const wFrozen = toGpu(randn(12, 5), [3, 4]);
    const x = toGpu(randn(6, 6), [2, 3]).requireGrad();
    const y = linear(x, wFrozen);
    const tape = tapeLength();
    const z = ops.mul(wFrozen, wFrozen);
    expect(tapeLength()).toBe(tape);
    expect(z.requiresGrad).toBe(false);
    backward(ops.sum(y));
    expect(wFrozen.grad).toBeNull();
    // d/dx sum(x W) = row sums of W, per batch row.
    const wv = await wFrozen.read();
    const rowSums = [0, 1, 2].map((i) => wv[4 * i] + wv[4 * i + 1] + wv[4 * i + 2] + wv[4 * i + 3]);
    expectClose(await x.grad!.read(), [...rowSums, ...rowSums], { atol: 1e-6 }, "x grad");
    for (const t of [wFrozen, x, y, z]) t.dispose();
  });
  test("noGrad records nothing", () => {
    const x = toGpu(randn(4, 7), [4]).requireGrad();
    const tape = tapeLength();
    const y = noGrad(() => ops.sum(ops.exp(ops.slice(x, 0, 1, 3))));
    expect(tapeLength()).toBe(tape);
    expect(y.requiresGrad).toBe(false);
    expect(y.creator).toBeNull();
    x.dispose();
    y.dispose();
  });
  test("two backward calls accumulate into .grad", async () => {
    const data = randn(6, 8);
    const x = toGpu(data, [6]).requireGrad();
    backward(ops.sum(ops.square(x))); // grad 2x
    backward(ops.sum(ops.scale(x, 3))); // grad 3
    expectClose(await x.grad!.read(), Array.from(data, (v) => 2 * v + 3), { atol: 1e-6, rtol: 1e-6 }, "accumulated");
    x.dispose();
  });
});
