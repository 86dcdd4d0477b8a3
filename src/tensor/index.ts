// Tensor runtime entry: tensors, scopes, autograd and the ops.
export * from "./tensor.ts";
export * from "./scope.ts";
export * from "./autograd.ts";
export * from "./ops/index.ts";
