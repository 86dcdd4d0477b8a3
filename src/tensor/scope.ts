// Tensor lifetimes: `scope(fn)` disposes every tensor created inside `fn` except what `fn` returns
// (which moves to the enclosing scope) and what was `keep()`-ed. Outside any scope nothing is tracked.

export interface Disposable {
  dispose(): void;
  readonly disposed: boolean;
}

const stack: Set<Disposable>[] = [];

export function track(t: Disposable): void {
  stack[stack.length - 1]?.add(t);
}

/** Remove `t` from automatic disposal (it lives until disposed by hand). Returns `t`. */
export function keep<T extends Disposable>(t: T): T {
  for (const s of stack) s.delete(t);
  return t;
}

function collect(value: unknown, into: Set<Disposable>, depth = 0): void {
  if (value === null || typeof value !== "object" || depth > 4) return;
  if (typeof (value as Disposable).dispose === "function" && "disposed" in (value as object)) {
    into.add(value as Disposable);
    return;
  }
  if (Array.isArray(value)) for (const v of value) collect(v, into, depth + 1);
  else if (value instanceof Map) for (const v of value.values()) collect(v, into, depth + 1);
  else if (Object.getPrototypeOf(value) === Object.prototype) for (const v of Object.values(value)) collect(v, into, depth + 1);
}

function close(created: Set<Disposable>, result: unknown): void {
  stack.pop();
  const returned = new Set<Disposable>();
  collect(result, returned);
  const parent = stack[stack.length - 1];
  for (const t of created) {
    if (returned.has(t)) parent?.add(t);
    else if (!t.disposed) t.dispose();
  }
}

export function scope<T>(fn: () => T): T {
  const created = new Set<Disposable>();
  stack.push(created);
  let result: T;
  try {
    result = fn();
  } catch (e) {
    close(created, undefined);
    throw e;
  }
  if (result instanceof Promise) throw new Error("scope(fn): fn returned a Promise; use scopeAsync");
  close(created, result);
  return result;
}

/** Like `scope` for async functions. Do not run two of these concurrently. */
export async function scopeAsync<T>(fn: () => Promise<T>): Promise<T> {
  const created = new Set<Disposable>();
  stack.push(created);
  let result: T;
  try {
    result = await fn();
  } catch (e) {
    close(created, undefined);
    throw e;
  }
  close(created, result);
  return result;
}

export function scopeDepth(): number {
  return stack.length;
}
