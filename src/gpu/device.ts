// The process-wide GPU context: adapter and device acquisition, error surfacing, command batching,
// uniform staging, uploads and readback. Everything else reaches the GPU through `gpu()`.
import { BufferPool } from "./pool.ts";
import { BufferUsage, MAP_MODE_READ } from "./constants.ts";
import { KernelProfiler } from "./profiler.ts";
import { type Defines, type Kernel, KernelCache } from "./kernels.ts";
import { dawnFlagsInUse, runtimeName, webgpuEntry } from "./runtime.ts";
import { type AdapterReport, REQUESTED_LIMITS, WANTED_FEATURES, describeAdapter } from "./adapter_report.ts";
import { quietly } from "./quiet_wait.ts";
import { quietNativeStderr } from "./native_stderr.ts";

/** A storage or uniform buffer range bound to one kernel binding. */
export interface GpuBinding {
  buffer: GPUBuffer;
  offset?: number;
  size?: number;
}

/** Kernel parameters: a format string of `u` (u32), `i` (i32), `f` (f32) and the values, in struct order. */
export type Uniforms = [fmt: string, ...values: number[]];

export interface AdapterDescription {
  vendor: string;
  architecture: string;
  device: string;
  description: string;
  isFallbackAdapter: boolean;
}

export interface GpuOptions {
  /** Extra Dawn flags (e.g. "backend=vulkan", "adapter=NAME"). */
  dawnFlags?: string[];
  /** Ask for a low-power adapter instead of the default high-performance one. */
  lowPower?: boolean;
}

/** Thrown when no WebGPU adapter is available (the CLI turns this into exit code 2). */
export class NoAdapterError extends Error {}

const ARENA_BYTES = 256 * 1024;
const MAX_BATCH_DISPATCHES = 512;

export class Gpu {
  readonly pool: BufferPool;
  readonly kernels: KernelCache;
  readonly features: ReadonlySet<string>;
  readonly limits: Record<string, number>;
  readonly uniformAlign: number;
  readonly maxBinding: number;
  readonly maxGroupsPerDim: number;
  readonly hasF16: boolean;
  readonly hasSubgroups: boolean;

  private encoder: GPUCommandEncoder | null = null;
  private pass: GPUComputePassEncoder | null = null;
  /** Set by `startProfiling()`: per-dispatch timestamps (needs the timestamp-query feature). */
  profiler: KernelProfiler | null = null;
  private pendingDispatches = 0;
  private arena: GPUBuffer;
  private arenaHost = new ArrayBuffer(ARENA_BYTES);
  private arenaView = new DataView(this.arenaHost);
  private arenaUsed = 0;
  private staging = new Map<number, GPUBuffer[]>();
  private errors: string[] = [];
  private lostMessage: string | null = null;
  private destroyed = false;
  /** Label of the most recent dispatch, for error messages. */
  private lastLabel = "";
  dispatchCount = 0;
  submitCount = 0;

  constructor(
    readonly entry: GPU,
    readonly adapter: GPUAdapter,
    readonly device: GPUDevice,
    readonly info: AdapterDescription,
    readonly requestedLimits: Record<string, number>,
    /** What the adapter offers (features, limits, subgroup-matrix configurations) and the Dawn flags asked for. */
    readonly adapterReport: AdapterReport,
  ) {
    this.features = new Set([...device.features] as string[]);
    const lim: Record<string, number> = {};
    for (const k in device.limits) lim[k] = (device.limits as unknown as Record<string, number>)[k];
    this.limits = lim;
    this.uniformAlign = lim.minUniformBufferOffsetAlignment;
    this.maxBinding = lim.maxStorageBufferBindingSize;
    this.maxGroupsPerDim = lim.maxComputeWorkgroupsPerDimension;
    this.hasF16 = this.features.has("shader-f16");
    this.hasSubgroups = this.features.has("subgroups");
    this.pool = new BufferPool(device, lim.maxBufferSize);
    this.kernels = new KernelCache(device);
    this.arena = device.createBuffer({
      label: "uniform-arena",
      size: ARENA_BYTES,
      usage: BufferUsage.UNIFORM | BufferUsage.COPY_DST,
    });
    device.addEventListener?.("uncapturederror", (ev: Event) => {
      const msg = (ev as GPUUncapturedErrorEvent).error?.message ?? String(ev);
      this.errors.push(msg);
    });
    device.lost.then((info) => {
      if (!this.destroyed) this.lostMessage = `GPU device lost (${info.reason}): ${info.message}`;
    });
  }

  get runtime(): string {
    return runtimeName();
  }

  kernel(name: string, source: string, defines: Defines = {}): Kernel {
    return this.kernels.get(name, source, defines);
  }

  /** Workgroup counts for `n` groups, split over y when x would exceed the per-dimension limit. */
  grid(n: number): [number, number, number] {
    if (n <= this.maxGroupsPerDim) return [Math.max(1, n), 1, 1];
    const y = Math.ceil(n / this.maxGroupsPerDim);
    return [Math.ceil(n / y), y, 1];
  }

  /** Record one dispatch into the open batch; it runs at the next flush (or readback). */
  dispatch(kernel: Kernel, buffers: GpuBinding[], uniforms: Uniforms | null, groups: readonly number[]): void {
    this.check();
    const [gx, gy = 1, gz = 1] = groups;
    if (gx === 0 || gy === 0 || gz === 0) return;
    if (gx > this.maxGroupsPerDim || gy > this.maxGroupsPerDim || gz > this.maxGroupsPerDim) {
      throw new Error(`${kernel.name}: dispatch [${gx},${gy},${gz}] exceeds ${this.maxGroupsPerDim} workgroups per dimension`);
    }
    const nStorage = kernel.bindings.length - (uniforms ? 1 : 0);
    if (buffers.length !== nStorage) {
      throw new Error(`${kernel.name}: ${buffers.length} buffers bound, kernel declares ${nStorage}`);
    }
    const entries: GPUBindGroupEntry[] = buffers.map((b, i) => {
      const size = b.size ?? b.buffer.size - (b.offset ?? 0);
      if (size > this.maxBinding) {
        throw new Error(`${kernel.name}: binding ${i} is ${size} bytes, over the ${this.maxBinding}-byte storage binding limit`);
      }
      return { binding: i, resource: { buffer: b.buffer, offset: b.offset ?? 0, size } };
    });
    if (uniforms) {
      const bytes = Math.max(16, Math.ceil(((uniforms.length - 1) * 4) / 16) * 16);
      if (this.arenaUsed + bytes > ARENA_BYTES) this.flush();
      const off = this.arenaUsed;
      const fmt = uniforms[0];
      for (let i = 1; i < uniforms.length; i++) {
        const v = uniforms[i] as number;
        const c = fmt[i - 1];
        if (c === "u") this.arenaView.setUint32(off + (i - 1) * 4, v >>> 0, true);
        else if (c === "i") this.arenaView.setInt32(off + (i - 1) * 4, v | 0, true);
        else if (c === "f") this.arenaView.setFloat32(off + (i - 1) * 4, v, true);
        else throw new Error(`${kernel.name}: bad uniform format '${fmt}'`);
      }
      if (fmt.length !== uniforms.length - 1) throw new Error(`${kernel.name}: uniform format '${fmt}' has ${fmt.length} fields, got ${uniforms.length - 1} values`);
      entries.push({ binding: nStorage, resource: { buffer: this.arena, offset: off, size: bytes } });
      this.arenaUsed = off + Math.ceil(bytes / this.uniformAlign) * this.uniformAlign;
    }
    const bindGroup = this.device.createBindGroup({ label: kernel.name, layout: kernel.layout, entries });
    if (this.profiler) {
      if (this.profiler.full) this.flush();
      this.endPass();
      this.encoder ??= this.device.createCommandEncoder({ label: "batch" });
      this.pass = this.encoder.beginComputePass(this.profiler.passFor(kernel.name.replace(/\(.*$/, "")));
    } else if (!this.pass) {
      this.encoder ??= this.device.createCommandEncoder({ label: "batch" });
      this.pass = this.encoder.beginComputePass({ label: "batch" });
    }
    this.pass!.setPipeline(kernel.pipeline);
    this.pass!.setBindGroup(0, bindGroup);
    this.pass!.dispatchWorkgroups(gx, gy, gz);
    if (this.profiler) this.endPass();
    this.lastLabel = kernel.name;
    this.pendingDispatches++;
    this.dispatchCount++;
    if (this.pendingDispatches >= MAX_BATCH_DISPATCHES) this.flush();
  }

  /** Copy bytes between buffers inside the current batch (ordered with the dispatches around it). */
  copy(src: GPUBuffer, srcOffset: number, dst: GPUBuffer, dstOffset: number, bytes: number): void {
    this.check();
    this.endPass();
    this.encoder ??= this.device.createCommandEncoder({ label: "batch" });
    this.encoder.copyBufferToBuffer(src, srcOffset, dst, dstOffset, bytes);
    this.pendingDispatches++;
  }

  private endPass(): void {
    if (this.pass) {
      this.pass.end();
      this.pass = null;
    }
  }

  /** Submit everything recorded so far. Does not wait. */
  flush(): void {
    this.check();
    this.endPass();
    if (!this.encoder) return;
    if (this.arenaUsed > 0) {
      this.device.queue.writeBuffer(this.arena, 0, this.arenaHost, 0, this.arenaUsed);
      this.arenaUsed = 0;
    }
    this.profiler?.resolve(this.encoder);
    this.device.queue.submit([this.encoder.finish()]);
    this.encoder = null;
    this.pendingDispatches = 0;
    this.submitCount++;
  }

  /** Submit and wait until the GPU has finished; throws the first GPU error seen. */
  async sync(): Promise<void> {
    this.flush();
    await this.wait(() => this.device.queue.onSubmittedWorkDone());
    this.check();
  }

  /**
   * Upload host bytes. Pending dispatches are submitted first: they may still read a pooled buffer
   * that is about to be overwritten, and queue writes run before any later submit.
   */
  write(buffer: GPUBuffer, offset: number, data: ArrayBufferView): void {
    this.check();
    if (this.encoder) this.flush();
    const bytes = data.byteLength;
    if (bytes % 4 !== 0) {
      // writeBuffer needs a multiple of 4 bytes; pad through a copy.
      const padded = new Uint8Array(Math.ceil(bytes / 4) * 4);
      padded.set(new Uint8Array(data.buffer, data.byteOffset, bytes));
      this.device.queue.writeBuffer(buffer, offset, padded);
      return;
    }
    // A byte view: Bun crashes on typed arrays such as Float16Array here.
    this.device.queue.writeBuffer(buffer, offset, new Uint8Array(data.buffer as ArrayBuffer, data.byteOffset, bytes), 0, bytes);
  }

  /**
   * Read `bytes` bytes of `buffer` from `offset` back to the host. Copies move whole 4-byte words, so
   * an unaligned range (an f16 slice at an odd element) is widened to words and cut on the host.
   */
  async read(buffer: GPUBuffer, offset: number, bytes: number): Promise<ArrayBuffer> {
    this.check();
    const lead = offset % 4;
    offset -= lead;
    const size = Math.max(16, Math.ceil((bytes + lead) / 16) * 16);
    const list = this.staging.get(size);
    const stage = list?.pop() ??
      this.device.createBuffer({ label: `staging-${size}`, size, usage: BufferUsage.MAP_READ | BufferUsage.COPY_DST });
    this.endPass();
    this.encoder ??= this.device.createCommandEncoder({ label: "batch" });
    const copyBytes = Math.ceil((bytes + lead) / 4) * 4;
    this.encoder.copyBufferToBuffer(buffer, offset, stage, 0, copyBytes);
    this.flush();
    try {
      await this.wait(() => stage.mapAsync(MAP_MODE_READ, 0, copyBytes));
    } catch (e) {
      this.check();
      throw new Error(`readback of ${buffer.label} failed after ${this.lastLabel}: ${(e as Error).message}`);
    }
    const out = stage.getMappedRange(0, copyBytes).slice(lead, lead + bytes);
    stage.unmap();
    if (!this.staging.has(size)) this.staging.set(size, []);
    this.staging.get(size)!.push(stage);
    this.check();
    return out;
  }

  /** Await a Dawn promise; on CPU adapters without Dawn's busy polling (see quiet_wait.ts). */
  private wait<T>(start: () => Promise<T>): Promise<T> {
    return this.info.isFallbackAdapter || /llvmpipe|lavapipe|swiftshader/i.test(this.info.description) ? quietly(start) : start();
  }

  /** Throw pending GPU validation errors or device loss, naming the last kernel dispatched. */
  check(): void {
    if (this.destroyed) throw new Error("GPU context already destroyed");
    if (this.lostMessage) throw new Error(this.lostMessage);
    if (this.errors.length) {
      const msgs = this.errors.splice(0);
      throw new Error(`GPU error (last kernel: ${this.lastLabel || "none"}): ${msgs[0]}${msgs.length > 1 ? ` (+${msgs.length - 1} more)` : ""}`);
    }
  }

  /** Start timing every dispatch (false when the adapter has no timestamp queries). */
  startProfiling(): boolean {
    if (!this.features.has("timestamp-query")) return false;
    this.flush();
    this.profiler ??= new KernelProfiler(this.device);
    return true;
  }

  /** Stop timing and return per-kernel totals, most expensive first. */
  async stopProfiling(): Promise<import("./profiler.ts").KernelTime[]> {
    if (!this.profiler) return [];
    await this.sync();
    const r = await this.profiler.collect();
    this.profiler.destroy();
    this.profiler = null;
    return r;
  }

  /** Run `fn` inside a validation error scope and throw its error with `label` (debugging aid). */
  async validate<T>(label: string, fn: () => T): Promise<T> {
    this.device.pushErrorScope("validation");
    const r = fn();
    this.flush();
    const err = await this.device.popErrorScope();
    if (err) throw new Error(`${label}: ${err.message}`);
    return r;
  }

  destroy(): void {
    if (this.destroyed) return;
    try {
      this.endPass();
      this.encoder = null;
    } finally {
      this.destroyed = true;
      this.device.destroy();
    }
  }
}

let current: Gpu | null = null;
let pending: Promise<Gpu> | null = null;

async function create(opts: GpuOptions): Promise<Gpu> {
  // RL4PIX_NO_GPU=1: refuse to start a device, so a command shows whether it checks its inputs first.
  if ((globalThis as { process?: { env?: Record<string, string | undefined> } }).process?.env?.RL4PIX_NO_GPU === "1") {
    throw new NoAdapterError("RL4PIX_NO_GPU=1: no GPU device is started (this command needs one)");
  }
  const entry = webgpuEntry(opts.dawnFlags ?? []);
  if (!entry) throw new NoAdapterError("this runtime has no WebGPU (navigator.gpu is missing)");
  // Dawn prints two irrelevant limit warnings to fd 2 inside this call (see native_stderr.ts).
  const adapter = await quietNativeStderr(() => entry.requestAdapter({ powerPreference: opts.lowPower ? "low-power" : "high-performance" }));
  if (!adapter) throw new NoAdapterError("no WebGPU adapter found (install a Vulkan driver: see README, 'Set-up')");
  // shader-f16, subgroups, timestamp-query and (with allow_unsafe_apis, on some GPUs) the
  // subgroup-matrix tiles: each asked for when the adapter has it.
  const requiredFeatures = WANTED_FEATURES.filter((f) => adapter.features.has(f)) as GPUFeatureName[];
  const al = adapter.limits as unknown as Record<string, number>;
  const requiredLimits: Record<string, number> = {};
  for (const k of REQUESTED_LIMITS) {
    if (typeof al[k] === "number") requiredLimits[k] = al[k];
  }
  // Sizes must stay multiples of 4; lavapipe reports 2^32 - 1.
  for (const k of ["maxBufferSize", "maxStorageBufferBindingSize"]) {
    if (requiredLimits[k] !== undefined) requiredLimits[k] = Math.floor(requiredLimits[k] / 4) * 4;
  }
  const device = await adapter.requestDevice({ label: "rl4pix", requiredFeatures, requiredLimits });
  const ai = (adapter.info ?? {}) as Partial<GPUAdapterInfo> & { isFallbackAdapter?: boolean };
  const info: AdapterDescription = {
    vendor: ai.vendor ?? "",
    architecture: ai.architecture ?? "",
    device: ai.device ?? "",
    description: ai.description ?? "",
    isFallbackAdapter: Boolean(ai.isFallbackAdapter),
  };
  const report = describeAdapter(adapter as unknown as Parameters<typeof describeAdapter>[0], dawnFlagsInUse());
  const g = new Gpu(entry, adapter, device, info, requiredLimits, report);
  // RL4PIX_PROFILE=1: time every dispatch of the whole command; printed when it exits (cli/run.ts).
  const env = (globalThis as { process?: { env?: Record<string, string | undefined> } }).process?.env;
  if (env?.RL4PIX_PROFILE === "1" && !g.startProfiling()) {
    console.error("rl4pix: RL4PIX_PROFILE ignored: the adapter has no timestamp-query feature");
  }
  return g;
}

/** Acquire (once) the process-wide GPU context. */
export function initGpu(opts: GpuOptions = {}): Promise<Gpu> {
  if (current) return Promise.resolve(current);
  pending ??= create(opts).then((g) => (current = g)).finally(() => (pending = null));
  return pending;
}

/** The GPU context; `initGpu()` must have completed. */
export function gpu(): Gpu {
  if (!current) throw new Error("GPU not initialised: await initGpu() first");
  return current;
}

export function hasGpu(): boolean {
  return current !== null;
}

/** Destroy the device (Dawn spins a core until this happens). Safe to call more than once. */
export function destroyGpu(): void {
  current?.destroy();
  current = null;
}
