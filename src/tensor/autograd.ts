// Reverse-mode autograd: a tape of nodes in execution (= topological) order.
// Ops call `record` after their forward; `backward(loss)` walks the tape backwards, hands each node the
// gradient of its output, accumulates input gradients, and puts leaf gradients in `.grad`. Saved
// tensors are released as soon as their node has run. Frozen tensors (requiresGrad false) never get a
// gradient computed for them.
import { Tensor, shapeStr } from "./tensor.ts";
import { keep, scope } from "./scope.ts";

/** Computes input gradients from the output gradient; `needs[i]` says whether input i wants one. */
export type BackwardFn = (gradOut: Tensor, saved: Tensor[], needs: boolean[]) => (Tensor | null | undefined)[];

export interface Node {
  name: string;
  outputId: number;
  outputShape: readonly number[];
  inputs: Tensor[];
  saved: Tensor[];
  backward: BackwardFn;
}

let gradEnabled = true;
const tapes: Node[][] = [[]];

export function isGradEnabled(): boolean {
  return gradEnabled;
}

/** Run `fn` without recording anything for autograd. */
export function noGrad<T>(fn: () => T): T {
  const prev = gradEnabled;
  gradEnabled = false;
  try {
    return fn();
  } finally {
    gradEnabled = prev;
  }
}

export async function noGradAsync<T>(fn: () => Promise<T>): Promise<T> {
  const prev = gradEnabled;
  gradEnabled = false;
  try {
    return await fn();
  } finally {
    gradEnabled = prev;
  }
}

function withGrad<T>(fn: () => T): T {
  const prev = gradEnabled;
  gradEnabled = true;
  try {
    return fn();
  } finally {
    gradEnabled = prev;
  }
}

/** True when an op on these inputs must be recorded. */
export function needsRecord(inputs: readonly Tensor[]): boolean {
  return gradEnabled && inputs.some((t) => t.requiresGrad);
}

/**
 * Record `out = op(inputs)`. `saved` are the tensors backward needs (retained until it runs).
 * No-op when grad is disabled or no input requires grad.
 */
export function record(out: Tensor, name: string, inputs: Tensor[], saved: Tensor[], backward: BackwardFn, force = false): Tensor {
  if (!gradEnabled || (!force && !inputs.some((t) => t.requiresGrad))) return out;
  const node: Node = {
    name,
    outputId: out.id,
    outputShape: out.shape,
    inputs,
    saved: saved.map((t) => t.retain()),
    backward,
  };
  tapes[tapes.length - 1].push(node);
  out.requiresGrad = true;
  out.creator = node;
  return out;
}

function freeNode(node: Node): void {
  for (const t of node.saved) t.dispose();
  node.saved = [];
  node.inputs = [];
}

/** Drop everything recorded so far without computing gradients. */
export function clearTape(): void {
  const tape = tapes[tapes.length - 1];
  for (const n of tape) freeNode(n);
  tape.length = 0;
}

export function tapeLength(): number {
  return tapes[tapes.length - 1].length;
}

let addFn: ((a: Tensor, b: Tensor) => Tensor) | null = null;
let onesLikeFn: ((t: Tensor) => Tensor) | null = null;

/** Ops register the two primitives autograd itself needs (avoids an import cycle). */
export function registerAutogradPrimitives(add: (a: Tensor, b: Tensor) => Tensor, onesLike: (t: Tensor) => Tensor): void {
  addFn = add;
  onesLikeFn = onesLike;
}

/**
 * Backpropagate from `loss` (gradient `gradOutput`, default ones) through the current tape, which is
 * consumed. Leaf gradients are accumulated into `.grad` (summed with what is already there).
 */
export function backward(loss: Tensor, gradOutput?: Tensor): void {
  const tape = tapes[tapes.length - 1];
  if (!addFn || !onesLikeFn) throw new Error("autograd primitives not registered (import src/tensor/ops)");
  const add = addFn;
  if (gradOutput && shapeStr(gradOutput.shape) !== shapeStr(loss.shape)) {
    throw new Error(`backward: gradient ${shapeStr(gradOutput.shape)} for output ${shapeStr(loss.shape)}`);
  }
  const grads = new Map<number, Tensor>();
  noGrad(() => {
    const g0 = gradOutput ? gradOutput.detach() : onesLikeFn!(loss);
    keep(g0);
    if (loss.isLeaf) {
      if (loss.requiresGrad) accumulateLeaf(loss, g0, add);
      else g0.dispose();
      return;
    }
    grads.set(loss.id, g0);
    for (let i = tape.length - 1; i >= 0; i--) {
      const node = tape[i];
      const g = grads.get(node.outputId);
      if (!g) {
        freeNode(node);
        continue;
      }
      grads.delete(node.outputId);
      const inputs = node.inputs;
      const needs = inputs.map((t) => t.requiresGrad);
      const inGrads = node.backward(g, node.saved, needs);
      g.dispose();
      freeNode(node);
      for (let j = 0; j < inputs.length; j++) {
        const ig = inGrads[j];
        if (!ig) continue;
        keep(ig);
        const inp = inputs[j];
        if (!needs[j]) {
          ig.dispose();
          continue;
        }
        if (shapeStr(ig.shape) !== shapeStr(inp.shape)) {
          throw new Error(`backward of ${node.name}: gradient ${shapeStr(ig.shape)} for input ${j} of shape ${shapeStr(inp.shape)}`);
        }
        if (inp.isLeaf) {
          accumulateLeaf(inp, ig, add);
        } else {
          const prev = grads.get(inp.id);
          if (prev) {
            const sum = keep(add(prev, ig));
            prev.dispose();
            ig.dispose();
            grads.set(inp.id, sum);
          } else {
            grads.set(inp.id, ig);
          }
        }
      }
    }
  });
  for (const g of grads.values()) g.dispose();
  for (const n of tape) freeNode(n);
  tape.length = 0;
}

function accumulateLeaf(leaf: Tensor, g: Tensor, add: (a: Tensor, b: Tensor) => Tensor): void {
  if (leaf.grad) {
    const sum = keep(add(leaf.grad, g));
    leaf.grad.dispose();
    g.dispose();
    leaf.grad = sum;
  } else {
    leaf.grad = g;
  }
}

/**
 * Gradient checkpointing: run `fn` without keeping its intermediates; during backward, run it again
 * with grad on and backpropagate through that recomputation. Parameters used inside `fn` get their
 * `.grad` as usual. `fn` must be deterministic (no random draws).
 */
export function checkpoint(fn: (...xs: Tensor[]) => Tensor, inputs: Tensor[], name = "checkpoint"): Tensor {
  if (!gradEnabled) return fn(...inputs);
  // Own scopes for the forward and the recomputation: the block's activations are freed as soon as
  // it returns, not when the caller's (step-long) scope closes.
  const out = noGrad(() => scope(() => fn(...inputs)));
  return record(out, name, inputs, inputs, (g, saved, needs) => {
    tapes.push([]);
    try {
      return withGrad(() => scope(() => {
        const xs = saved.map((s, i) => s.detach().requireGrad(needs[i]));
        const y = fn(...xs);
        backward(y, g);
        y.dispose();
        return xs.map((x) => {
          const xg = x.grad;
          x.grad = null;
          x.dispose();
          return xg;
        });
      }));
    } finally {
      tapes.pop();
    }
  }, true);
}
