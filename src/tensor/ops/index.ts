// The op library: every tensor op, forward and backward, one module per kernel family.
import { registerAutogradPrimitives } from "../autograd.ts";
import { add, onesLike } from "./elementwise.ts";

export * from "./elementwise.ts";
export * from "./reduce.ts";
export * from "./views.ts";

registerAutogradPrimitives(add, onesLike);
