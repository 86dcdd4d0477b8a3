// Tensor: a shape, a dtype and a reference-counted GPU storage. Always contiguous, row-major.
// Views (reshape, detach, the handles autograd saves) share storage; the buffer returns to the pool
// when the last handle is disposed.
import { gpu, hasGpu, type GpuBinding } from "../gpu/device.ts";
import { keep, track } from "./scope.ts";
import { f16ArrayToF32, f32ArrayToF16 } from "./f16.ts";
import type { Node } from "./autograd.ts";

export type DType = "f32" | "f16" | "i32";
export const DTYPE_BYTES: Record<DType, number> = { f32: 4, f16: 2, i32: 4 };

export class Storage {
  refs = 1;
  /**
   * Data derived from this storage's contents and cached by the ops (e.g. a frozen conv weight in
   * the kernel's layout), released together with it. Only for contents never modified in place.
   */
  private derived: Map<string, Storage> | null = null;
  /**
   * Set once a tensor on this storage is trained (`requireGrad`): its contents change in place, so
   * nothing may be derived from them any more. Autograd's saved handles do not require grad
   * themselves, which is why this lives on the storage and not on the tensor.
   */
  mutable = false;
  constructor(readonly buffer: GPUBuffer, readonly bytes: number) {}

  /** Forget everything derived from the contents (call after writing them in place). */
  invalidate(): void {
    if (this.derived) for (const d of this.derived.values()) d.release();
    this.derived = null;
  }
  release(): void {
    // After the device is gone (process exit paths) there is no pool to return the buffer to.
    if (--this.refs === 0) {
      if (hasGpu()) gpu().pool.release(this.buffer);
      if (this.derived) for (const d of this.derived.values()) d.release();
      this.derived = null;
    }
    if (this.refs < 0) throw new Error(`storage ${this.buffer.label} released twice`);
  }

  /** The cached derived storage under `key`, created by `make` on first use (owned by this storage). */
  derive(key: string, make: () => Storage): Storage {
    if (this.mutable) throw new Error(`derive(${key}): the storage of ${this.buffer.label} is trained in place; nothing may be cached from it`);
    this.derived ??= new Map();
    let d = this.derived.get(key);
    if (!d) {
      d = make();
      this.derived.set(key, d);
    }
    return d;
  }
}

export function numel(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

export function shapeStr(shape: readonly number[]): string {
  return `[${shape.join(",")}]`;
}

let nextId = 1;

export class Tensor {
  readonly id = nextId++;
  readonly shape: readonly number[];
  readonly size: number;
  private _storage: Storage | null;
  /** Leaves that require grad receive `.grad` from `backward`. */
  requiresGrad = false;
  grad: Tensor | null = null;
  /** The autograd node that produced this tensor (null for leaves). */
  creator: Node | null = null;
  /** Parameter path (e.g. `down_blocks.0.resnets.0.conv1.weight`) or a debugging label. */
  label: string;

  constructor(storage: Storage, shape: readonly number[], readonly dtype: DType, label = "", tracked = true) {
    this._storage = storage;
    this.shape = Object.freeze([...shape]);
    this.size = numel(shape);
    this.label = label;
    for (const d of shape) {
      if (!Number.isInteger(d) || d < 0) throw new Error(`bad shape ${shapeStr(shape)} for ${label || "tensor"}`);
    }
    if (tracked) track(this);
  }

  get storage(): Storage {
    if (!this._storage) throw new Error(`tensor ${this.label || this.id} ${shapeStr(this.shape)} used after dispose`);
    return this._storage;
  }

  get buffer(): GPUBuffer {
    return this.storage.buffer;
  }

  get disposed(): boolean {
    return this._storage === null;
  }

  get byteLength(): number {
    return this.size * DTYPE_BYTES[this.dtype];
  }

  get rank(): number {
    return this.shape.length;
  }

  get isLeaf(): boolean {
    return this.creator === null;
  }

  /** The whole tensor as one binding (size rounded up to 4 bytes). */
  binding(): GpuBinding {
    return { buffer: this.buffer, offset: 0, size: Math.max(4, Math.ceil(this.byteLength / 4) * 4) };
  }

  dispose(): void {
    if (!this._storage) return;
    this._storage.release();
    this._storage = null;
    if (this.grad) {
      this.grad.dispose();
      this.grad = null;
    }
  }

  /** Another handle on the same storage, not tracked by scopes (autograd's saved tensors). */
  retain(): Tensor {
    this.storage.refs++;
    return new Tensor(this.storage, this.shape, this.dtype, this.label, false);
  }

  /** Same storage, no autograd history. */
  detach(): Tensor {
    this.storage.refs++;
    return new Tensor(this.storage, this.shape, this.dtype, this.label);
  }

  /** Set `requiresGrad` (for parameters and leaves) and return this. */
  requireGrad(on = true): this {
    this.requiresGrad = on;
    if (on) {
      this.storage.mutable = true;
      this.storage.invalidate();
    }
    return this;
  }

  /** Exclude from scope disposal; returns this. */
  keep(): this {
    return keep(this);
  }

  /** Host copy of the data: f32 and f16 come back as Float32Array, i32 as Int32Array. */
  async read(): Promise<Float32Array | Int32Array> {
    const bytes = await gpu().read(this.buffer, 0, this.byteLength);
    if (this.dtype === "f32") return new Float32Array(bytes);
    if (this.dtype === "i32") return new Int32Array(bytes);
    return f16ArrayToF32(new Uint16Array(bytes));
  }

  async readF32(): Promise<Float32Array> {
    const d = await this.read();
    return d instanceof Float32Array ? d : Float32Array.from(d);
  }

  /** Read a one-element tensor. */
  async item(): Promise<number> {
    if (this.size !== 1) throw new Error(`item() on ${shapeStr(this.shape)}`);
    return (await this.read())[0];
  }

  toString(): string {
    return `Tensor(${this.label ? this.label + " " : ""}${shapeStr(this.shape)} ${this.dtype})`;
  }

  /** Uninitialised tensor from the pool. */
  static empty(shape: readonly number[], dtype: DType = "f32", label = "tensor"): Tensor {
    const bytes = Math.max(4, numel(shape) * DTYPE_BYTES[dtype]);
    const buf = gpu().pool.acquire(bytes, label);
    return new Tensor(new Storage(buf, bytes), shape, dtype, label);
  }

  /**
   * Upload host data. `f16` accepts numbers (converted) or a Uint16Array of raw half bits;
   * `i32` accepts integers.
   */
  static from(data: ArrayLike<number> | ArrayBufferView, shape: readonly number[], dtype: DType = "f32", label = "tensor"): Tensor {
    const n = numel(shape);
    let view: ArrayBufferView;
    if (dtype === "f32") view = data instanceof Float32Array ? data : Float32Array.from(data as ArrayLike<number>);
    else if (dtype === "i32") view = data instanceof Int32Array ? data : Int32Array.from(data as ArrayLike<number>);
    else view = data instanceof Uint16Array ? data : f32ArrayToF16(data as ArrayLike<number>);
    const len = view.byteLength / DTYPE_BYTES[dtype];
    if (len !== n) throw new Error(`${label}: ${len} values for shape ${shapeStr(shape)} (${n})`);
    const t = Tensor.empty(shape, dtype, label);
    if (n > 0) gpu().write(t.buffer, 0, view);
    return t;
  }

  static scalar(v: number, dtype: DType = "f32"): Tensor {
    return Tensor.from([v], [1], dtype, "scalar");
  }
}
