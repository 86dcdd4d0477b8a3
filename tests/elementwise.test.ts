import { describe, expect, test } from "bun:test";
import * as ops from "../src/tensor/ops/index.ts";
import { gradCheck, randn, uniform, prod, useGpu, expectClose, toGpu } from "./helpers.ts";
import { UNARY_REF, broadcast2 } from "./ref/elementwise.ts";
import { hostRandom } from "../src/tensor/philox.ts";
import { gpu } from "../src/gpu/device.ts";
import { Tensor, backward } from "../src/tensor/index.ts";

useGpu();

describe("unary ops", () => {
  const positive = new Set(["log", "sqrt"]);
  for (const name of Object.keys(UNARY_REF)) {
    test(`${name} forward and backward`, async () => {
      const shape = [3, 7, 5];
      const n = prod(shape);
      const data = positive.has(name) ? uniform(n, 1, 0.5, 3) : randn(n, 1, 1.5);
      if (name === "abs" || name === "relu") for (let i = 0; i < n; i++) if (Math.abs(data[i]) < 0.01) data[i] = 0.5;
      const f = UNARY_REF[name];
      await gradCheck({
        label: name,
        inputs: [{ data, shape }],
        gpuFn: ([x]) => (ops as unknown as Record<string, (t: Tensor) => Tensor>)[name](x),
        refFn: ([x]) => x.map(f),
        fwd: { atol: 2e-6, rtol: 2e-6 },
        bwd: { atol: 5e-4, rtol: 1e-3 },
      });
    });
  }
  test("clamp", async () => {
    const data = randn(40, 9, 2);
    for (let i = 0; i < data.length; i++) if (Math.abs(Math.abs(data[i]) - 1) < 0.01) data[i] = 0;
    await gradCheck({
      label: "clamp",
      inputs: [{ data, shape: [5, 8] }],
      gpuFn: ([x]) => ops.clamp(x, -1, 1),
      refFn: ([x]) => x.map((v) => Math.min(Math.max(v, -1), 1)),
    });
  });
  test("affine", async () => {
    const shape = [1, 17];
    await gradCheck({
      label: "affine",
      inputs: [{ data: randn(17, 2), shape }],
      gpuFn: ([x]) => ops.affine(x, -2.5, 0.75),
      refFn: ([x]) => x.map((v) => v * -2.5 + 0.75),
    });
  });
});

describe("binary ops with broadcasting", () => {
  const cases: [number[], number[]][] = [
    [[4, 5], [4, 5]],
    [[2, 3, 4, 5], [1, 3, 1, 1]],
    [[2, 3, 4], [4]],
    [[1], [3, 1, 2]],
    [[6, 1], [1, 7]],
    [[1, 1, 1], [1, 1, 1]],
    // Shapes of the row-broadcast kernel (collapsed [Z, Y, X], X % 4 == 0): a per-row constant,
    // rows along y and z with different strides, several workgroups along X, a scalar.
    [[2, 3, 8], [2, 3, 1]],
    [[3, 1, 8], [1, 5, 8]],
    [[1, 4], [5, 1]],
    [[1, 2, 264], [1, 2, 1]],
    [[12], [1]],
  ];
  const fns: Record<string, (x: number, y: number) => number> = {
    add: (x, y) => x + y,
    sub: (x, y) => x - y,
    mul: (x, y) => x * y,
    div: (x, y) => x / y,
    maximum: (x, y) => Math.max(x, y),
  };
  for (const [name, f] of Object.entries(fns)) {
    for (const [as, bs] of cases) {
      test(`${name} ${JSON.stringify(as)} ${JSON.stringify(bs)}`, async () => {
        const a = randn(prod(as), 3);
        const b = name === "div" ? uniform(prod(bs), 4, 0.5, 2) : randn(prod(bs), 4);
        await gradCheck({
          label: name,
          inputs: [{ data: a, shape: as }, { data: b, shape: bs }],
          gpuFn: ([x, y]) => (ops as unknown as Record<string, (a: Tensor, b: Tensor) => Tensor>)[name](x, y),
          refFn: ([x, y]) => broadcast2(x, as, y, bs, f).data,
        });
      });
    }
  }
});

describe("add's backward", () => {
  test("skips the reduction for a broadcast side that wants no gradient", async () => {
    // A trained activation plus a frozen per-channel bias, as a UNet's time embedding.
    const x = toGpu(randn(24, 5), [2, 3, 4]).requireGrad();
    const bias = toGpu(randn(3, 6), [1, 3, 1]);
    const y = ops.add(x, bias);
    const loss = ops.sum(ops.mul(y, y));
    const before = gpu().dispatchCount;
    backward(loss);
    const dispatches = gpu().dispatchCount - before;
    // d(sum y²)/dx = 2 y, and nothing for the bias.
    const yv = await y.readF32();
    expectClose(await x.grad!.readF32(), Array.from(yv, (v) => 2 * v), { atol: 1e-5, rtol: 1e-5 });
    expect(bias.grad).toBeNull();
    // The same graph with the bias trained too needs exactly one more kernel: the reduction to [1, 3, 1].
    const x2 = toGpu(randn(24, 5), [2, 3, 4]).requireGrad();
    const bias2 = toGpu(randn(3, 6), [1, 3, 1]).requireGrad();
    const y2 = ops.add(x2, bias2);
    const loss2 = ops.sum(ops.mul(y2, y2));
    const before2 = gpu().dispatchCount;
    backward(loss2);
    expect(gpu().dispatchCount - before2).toBe(dispatches + 1);
    const y2v = await y2.readF32();
    const want = [0, 1, 2].map((c) => [0, 1].reduce((s, b) => s + [0, 1, 2, 3].reduce((t, w) => t + 2 * y2v[(b * 3 + c) * 4 + w], 0), 0));
    expectClose(await bias2.grad!.readF32(), want, { atol: 1e-4, rtol: 1e-5 });
  });
});

describe("reductions", () => {
  test("sum and mean over axes", async () => {
    const shape = [2, 3, 4, 5];
    const data = randn(prod(shape), 5);
    for (const [axes, keep] of [[[1], false], [[0, 2], true], [[3], false], [undefined, false]] as [number[] | undefined, boolean][]) {
      for (const isMean of [false, true]) {
        await gradCheck({
          label: `${isMean ? "mean" : "sum"} ${JSON.stringify(axes)}`,
          inputs: [{ data, shape }],
          gpuFn: ([x]) => (isMean ? ops.mean : ops.sum)(x, axes, keep),
          refFn: ([x]) => {
            const ax = new Set(axes ?? [0, 1, 2, 3]);
            const outShape = shape.map((d, i) => (ax.has(i) ? 1 : d));
            const out = new Float64Array(prod(outShape));
            const cnt = prod(shape) / out.length;
            for (let i = 0; i < x.length; i++) {
              let rem = i, o = 0, mul = 1;
              const coords = [];
              for (let d = 3; d >= 0; d--) { coords[d] = rem % shape[d]; rem = Math.floor(rem / shape[d]); }
              for (let d = 3; d >= 0; d--) { o += (ax.has(d) ? 0 : coords[d]) * mul; mul *= outShape[d]; }
              out[o] += x[i] / (isMean ? cnt : 1);
            }
            return out;
          },
        });
      }
    }
  });
});

describe("fills and big tensors", () => {
  test("full / zeros / ones", async () => {
    expectClose(await ops.full([3, 3], 2.5).read(), new Array(9).fill(2.5), { atol: 0 }, "full");
    expectClose(await ops.zeros([5]).read(), new Array(5).fill(0), { atol: 0 }, "zeros");
  });
  test("same-shape ops on a tensor larger than the storage binding limit run in windows", async () => {
    const g = gpu();
    const n = Math.floor(g.maxBinding / 4) + 1000; // just over the binding limit
    const a = ops.full([n], 1.5);
    const b = ops.scale(a, 2);
    const c = ops.add(a, b);
    const tail = await c.read();
    expect(tail.length).toBe(n);
    expect(tail[0]).toBe(4.5);
    expect(tail[n - 1]).toBe(4.5);
    expect(tail[Math.floor(n / 2)]).toBe(4.5);
    a.dispose(); b.dispose(); c.dispose();
  });
  test("an elementwise op whose grid needs a second dimension (over 65535 workgroups) covers every element once", async () => {
    const g = gpu();
    const n = g.maxGroupsPerDim * 256 + 12345; // odd: the scalar (not vec4) kernel, 2-D grid
    const a = ops.randn([n], 21);
    const c = ops.add(a, a);
    const got = await c.read();
    const want = hostRandom("normal", n, 21);
    let bad = 0;
    for (let i = 0; i < n; i++) if (got[i] !== Math.fround(2 * want[i])) bad++;
    expect(bad).toBe(0);
    a.dispose(); c.dispose();
  });
});


describe("geglu", () => {
  test("forward and backward", async () => {
    const shape = [2, 3, 10];
    const { UNARY_REF } = await import("./ref/elementwise.ts");
    await gradCheck({
      label: "geglu",
      inputs: [{ data: randn(prod(shape), 8, 1.2), shape }],
      gpuFn: ([x]) => ops.geglu(x),
      refFn: ([x]) => {
        const out = new Float64Array(x.length / 2);
        for (let r = 0; r < 6; r++) for (let c = 0; c < 5; c++) out[r * 5 + c] = x[r * 10 + c] * UNARY_REF.gelu(x[r * 10 + 5 + c]);
        return out;
      },
      fwd: { atol: 2e-6, rtol: 2e-6 },
    });
  });
});
