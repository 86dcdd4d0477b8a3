// f16 activations through the layout ops the UNet uses (permute/transpose around its transformers,
// concat of skip connections, slice/split/chunk, stack, reshape views): the copies move f16 bits
// exactly and every gradient comes back in f16, on both copy paths (buffer copies for contiguous
// runs, the strided-copy kernel) and with halves native (shader-f16) or packed in u32 words.
// Forward against the float64 references on f16-rounded inputs, backward against central finite
// differences.
import { afterEach, describe, expect, test } from "bun:test";
import * as ops from "../src/tensor/ops/index.ts";
import { forcePackedF16Copies } from "../src/tensor/ops/layout.ts";
import { gpu } from "../src/gpu/device.ts";
import { gradCheck, prod, randn, useGpu } from "./helpers.ts";
import { concatRef, permuteRef, sliceRef } from "./ref/layout.ts";

useGpu();
afterEach(() => forcePackedF16Copies(false));

// Copies are exact: the output must equal the f16-rounded input bit for bit (atol 0). A gradient is
// the (f16) upstream gradient copied or scattered into zeros, also exact; central differences of the
// float64 reference reproduce it to ~1e-13 (x + h and x - h round in float64), hence atol 1e-9.
const EXACT = { atol: 0 };
const GRAD = { atol: 1e-9 };

test("this adapter reads and writes f16 activations (every test below needs shader-f16)", () => {
  expect(gpu().hasF16).toBe(true);
});

for (const packed of [false, true]) {
  describe(`layout ops on f16 activations (${packed ? "halves packed in u32 words" : "native f16 copies"})`, () => {
    const f16In = (shape: number[], seed: number) => ({ data: randn(prod(shape), seed), shape, dtype: "f16" as const });

    test("permute [B, C, H, W] -> [B, H, W, C] and back (the transformer's layout), odd sizes", async () => {
      forcePackedF16Copies(packed);
      for (const [shape, perm] of [[[2, 3, 5, 7], [0, 2, 3, 1]], [[2, 5, 7, 3], [0, 3, 1, 2]], [[3, 1, 4], [2, 0, 1]]] as [number[], number[]][]) {
        await gradCheck({
          label: `permute f16 ${JSON.stringify(shape)} ${JSON.stringify(perm)}`,
          inputs: [f16In(shape, 11)],
          gpuFn: ([x]) => {
            const y = ops.permute(x, perm);
            expect(y.dtype).toBe("f16");
            return y;
          },
          refFn: ([x]) => permuteRef(x, shape, perm),
          fwd: EXACT,
          bwd: GRAD,
        });
      }
    });

    test("transpose of the last two axes", async () => {
      forcePackedF16Copies(packed);
      const shape = [2, 3, 6];
      await gradCheck({
        label: "transpose f16",
        inputs: [f16In(shape, 12)],
        gpuFn: ([x]) => ops.transpose(x, -1, -2),
        refFn: ([x]) => permuteRef(x, shape, [0, 2, 1]),
        fwd: EXACT,
        bwd: GRAD,
      });
    });

    // [shape, axis, start, end]: a leading-axis slice of even rows (buffer copies), odd offsets and
    // lengths (not 4-byte aligned: the kernel), an inner-axis slice (strided), negative bounds.
    const slices: [number[], number, number, number][] = [[[4, 6], 0, 2, 4], [[3, 5], 1, 1, 4], [[5, 3], 0, 1, 4], [[2, 3, 4, 5], 1, 1, 3], [[2, 7], 1, -3, 7]];
    for (const [shape, axis, start, end] of slices) {
      test(`slice ${JSON.stringify(shape)} axis ${axis} [${start}, ${end}): its gradient scatters into f16 zeros`, async () => {
        forcePackedF16Copies(packed);
        const s = start < 0 ? start + shape[axis] : start;
        await gradCheck({
          label: `slice f16 ${JSON.stringify(shape)}`,
          inputs: [f16In(shape, 13)],
          gpuFn: ([x]) => ops.slice(x, axis, start, end),
          refFn: ([x]) => sliceRef(x, shape, axis, s, end),
          fwd: EXACT,
          bwd: GRAD,
        });
      });
    }

    test("concat of skip connections along channels (odd channel counts), and along the batch", async () => {
      forcePackedF16Copies(packed);
      for (const [a, b, axis] of [[[2, 3, 3, 5], [2, 5, 3, 5], 1], [[1, 4, 2], [3, 4, 2], 0]] as [number[], number[], number][]) {
        await gradCheck({
          label: `concat f16 axis ${axis}`,
          inputs: [f16In(a, 14), f16In(b, 15)],
          gpuFn: ([x, y]) => ops.concat([x, y], axis),
          refFn: ([x, y]) => concatRef([x, y], [a, b], axis),
          fwd: EXACT,
          bwd: GRAD,
        });
      }
    });

    test("split and chunk pieces, and stack, with f16 gradients", async () => {
      forcePackedF16Copies(packed);
      const shape = [3, 7];
      // pieces of 3, 3, 1 columns, reassembled in another order: every gradient path is a slice's
      await gradCheck({
        label: "split f16",
        inputs: [f16In(shape, 16)],
        gpuFn: ([x]) => {
          const [p0, p1, p2] = ops.split(x, 3, 1);
          return ops.concat([p2, p0, p1], 1);
        },
        refFn: ([x]) => concatRef([sliceRef(x, shape, 1, 6, 7), sliceRef(x, shape, 1, 0, 3), sliceRef(x, shape, 1, 3, 6)], [[3, 1], [3, 3], [3, 3]], 1),
        fwd: EXACT,
        bwd: GRAD,
      });
      await gradCheck({
        label: "chunk + stack f16",
        inputs: [f16In(shape, 17)],
        gpuFn: ([x]) => {
          const [a, b] = ops.chunk(x, 2, 0); // [2, 7], [1, 7]
          return ops.stack([ops.reshape(b, [7]), ops.reshape(ops.slice(a, 0, 0, 1), [7])], 0); // [2, 7]
        },
        refFn: ([x]) => concatRef([sliceRef(x, shape, 0, 2, 3), sliceRef(x, shape, 0, 0, 1)], [[1, 7], [1, 7]], 0),
        fwd: EXACT,
        bwd: GRAD,
      });
    });
  });
}
