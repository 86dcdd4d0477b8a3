// What an adapter offers, as `rl4pix doctor` records it: its features (the ones our kernels can use
// marked: shader-f16, subgroups, the experimental subgroup-matrix tiles), the limits that size our
// kernels, the subgroup sizes and subgroup-matrix configurations from `adapter.info`, and the Dawn
// flags (toggles) that were requested. Pure functions of the adapter object, so tests can feed a
// fake adapter such as the H200's (int8-only subgroup-matrix configurations).

/** Features the kernels use when the adapter has them; device creation asks for each one present. */
export const WANTED_FEATURES = [
  "shader-f16",
  "subgroups",
  "timestamp-query",
  "chromium-experimental-subgroup-matrix",
] as const;

/** Maximum limits we request from the device: they decide tile shapes, binding windows and workgroup sizes. */
export const REQUESTED_LIMITS = [
  "maxBufferSize",
  "maxStorageBufferBindingSize",
  "maxComputeWorkgroupStorageSize",
  "maxComputeInvocationsPerWorkgroup",
  "maxComputeWorkgroupSizeX",
  "maxComputeWorkgroupSizeY",
  "maxComputeWorkgroupSizeZ",
  "maxComputeWorkgroupsPerDimension",
  "maxStorageBuffersPerShaderStage",
  "maxUniformBufferBindingSize",
] as const;

/** What doctor reports: the requested limits and the binding-offset alignments. */
export const RELEVANT_LIMITS = [...REQUESTED_LIMITS, "minStorageBufferOffsetAlignment", "minUniformBufferOffsetAlignment"] as const;

/** One subgroup-matrix configuration (Dawn's GPUSubgroupMatrixConfig): C += A (M x K) · B (K x N). */
export interface SubgroupMatrixConfig {
  componentType: string;
  resultComponentType: string;
  M: number;
  N: number;
  K: number;
}

export interface AdapterReport {
  /** Every feature the adapter lists, sorted. */
  features: string[];
  /** Of WANTED_FEATURES, which the adapter has (true) or lacks (false). */
  wanted: Record<string, boolean>;
  limits: Record<string, number>;
  subgroupMinSize: number | null;
  subgroupMaxSize: number | null;
  /** null when the adapter's info has no such list (older Dawn, Deno's wgpu). */
  subgroupMatrixConfigs: SubgroupMatrixConfig[] | null;
  /** Dawn flags passed to `create()` (RL4PIX_DAWN_FLAGS included), e.g. enable-dawn-features=allow_unsafe_apis. */
  dawnFlags: string[];
}

interface AdapterLike {
  features: Iterable<string> | { forEach(cb: (v: string) => void): void };
  limits: object;
  info?: object;
}

function featureList(f: AdapterLike["features"]): string[] {
  const out: string[] = [];
  if (typeof (f as Iterable<string>)[Symbol.iterator] === "function") for (const v of f as Iterable<string>) out.push(String(v));
  else (f as { forEach(cb: (v: string) => void): void }).forEach((v) => out.push(String(v)));
  return out.sort();
}

/** Dawn's enum values and the spec's names differ between builds ("f16" / "F16"): keep them lower-case. */
function componentName(v: unknown): string {
  return String(v).toLowerCase();
}

function readConfigs(info: Record<string, unknown>): SubgroupMatrixConfig[] | null {
  const raw = info.subgroupMatrixConfigs;
  if (raw === undefined || raw === null) return null;
  const list = Array.from(raw as ArrayLike<Record<string, unknown>>);
  return list.map((c) => ({
    componentType: componentName(c.componentType),
    resultComponentType: componentName(c.resultComponentType),
    M: Number(c.M),
    N: Number(c.N),
    K: Number(c.K),
  }));
}

export function describeAdapter(adapter: AdapterLike, dawnFlags: readonly string[]): AdapterReport {
  const features = featureList(adapter.features);
  const wanted: Record<string, boolean> = {};
  for (const f of WANTED_FEATURES) wanted[f] = features.includes(f);
  const al = adapter.limits as Record<string, unknown>;
  const limits: Record<string, number> = {};
  for (const k of RELEVANT_LIMITS) if (typeof al[k] === "number") limits[k] = al[k] as number;
  const info = (adapter.info ?? {}) as Record<string, unknown>;
  const size = (v: unknown) => (typeof v === "number" && v > 0 ? v : null);
  return {
    features,
    wanted,
    limits,
    subgroupMinSize: size(info.subgroupMinSize),
    subgroupMaxSize: size(info.subgroupMaxSize),
    subgroupMatrixConfigs: readConfigs(info),
    dawnFlags: [...dawnFlags],
  };
}

/** "f16 x f16 -> f32 M8 N8 K8" */
export function formatConfig(c: SubgroupMatrixConfig): string {
  return `${c.componentType} x ${c.componentType} -> ${c.resultComponentType} M${c.M} N${c.N} K${c.K}`;
}

/** Half-precision tiles (f16 operands) among the configurations: what tensor-core matmul in f16 needs. */
export function hasF16Tiles(r: AdapterReport): boolean {
  return (r.subgroupMatrixConfigs ?? []).some((c) => c.componentType === "f16");
}

/** The doctor's text lines for the report (key, value), in print order. */
export function adapterLines(r: AdapterReport): [string, string][] {
  const rows: [string, string][] = [];
  rows.push(["dawn flags", r.dawnFlags.length ? r.dawnFlags.join(" ") : "(none; RL4PIX_DAWN_FLAGS adds some)"]);
  rows.push(["features", r.features.join(" ") || "(none)"]);
  rows.push(["wanted", Object.entries(r.wanted).map(([k, v]) => `${k} ${v ? "yes" : "no"}`).join(", ")]);
  if (r.subgroupMinSize !== null || r.subgroupMaxSize !== null) rows.push(["subgroups", `size ${r.subgroupMinSize ?? "?"}..${r.subgroupMaxSize ?? "?"}`]);
  const cfgs = r.subgroupMatrixConfigs;
  if (cfgs === null) rows.push(["sg matrix", "(adapter info has no subgroupMatrixConfigs)"]);
  else if (cfgs.length === 0) rows.push(["sg matrix", "no configurations"]);
  else for (const c of cfgs) rows.push(["sg matrix", formatConfig(c)]);
  for (const [k, v] of Object.entries(r.limits)) rows.push(["adapter lim", `${k} = ${v}`]);
  return rows;
}
