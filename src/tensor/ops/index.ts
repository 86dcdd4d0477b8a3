// The op library: every tensor op, forward and backward, one module per kernel family.
import { registerAutogradPrimitives } from "../autograd.ts";
import { add, onesLike } from "./elementwise.ts";

export * from "./elementwise.ts";
export * from "./reduce.ts";
export * from "./views.ts";
export * from "./matmul.ts";
export * from "./conv.ts";
export * from "./norm.ts";
export * from "./softmax.ts";
export * from "./attention.ts";
export * from "./layout.ts";
export * from "./embedding.ts";
export * from "./random.ts";
export * from "./optim.ts";
export * from "./cast.ts";

registerAutogradPrimitives(add, onesLike);
