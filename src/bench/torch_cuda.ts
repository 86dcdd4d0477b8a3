// PyTorch rows on the same GPU for `rl4pix bench matmul` and `bench unet`: when a python3 with torch
// sees a CUDA device, the same products (fp32 with TF32 off, fp16) and the same UNet (fp32 with TF32
// off, fp16, fp16 + scaled_dot_product_attention) are timed in the same run and printed next to ours
// with the ratio. Without one (no python3, no torch, no CUDA) the answer is a single row saying so.
// The script is generated here, the rows are built from its JSON output here: both testable without
// CUDA (tests/torch_cuda.test.ts).
import { spawnSync } from "node:child_process";
import type { UNetConfig } from "../io/diffusers_config.ts";
import type { BenchRow } from "./types.ts";
import { TORCH_UNET_SOURCE, torchUnetArgs } from "./torch_unet_source.ts";

/** Interpreters tried in order: the one on PATH (a GPU machine's CUDA torch), then Debian's. */
export const PYTHON_CANDIDATES = ["python3", "/usr/bin/python3"];

export type TorchVariant = "fp32" | "fp16" | "fp16+sdpa";
export const MATMUL_VARIANTS: TorchVariant[] = ["fp32", "fp16"];
export const UNET_VARIANTS: TorchVariant[] = ["fp32", "fp16", "fp16+sdpa"];

/** How each variant is named in the rows. */
export const VARIANT_LABEL: Record<TorchVariant, string> = {
  fp32: "fp32, TF32 off",
  fp16: "fp16",
  "fp16+sdpa": "fp16 + SDPA",
};

// Shared prologue: picks the device, or prints {"absent": why} and stops. `cfg["device"]` is "cuda"
// in use; the tests run the script on "cpu" (fp32 only) to prove it works where torch is.
const PROLOGUE = String.raw`
import json, sys, time
import torch
cfg = json.loads(sys.argv[1])
dev = cfg.get("device", "cuda")
if dev == "cuda" and not torch.cuda.is_available():
    print(json.dumps({"absent": "torch " + torch.__version__ + " sees no CUDA device"}))
    sys.exit(0)
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
torch.manual_seed(0)
DT = {"fp32": torch.float32, "fp16": torch.float16, "fp16+sdpa": torch.float16}
def sync():
    if dev == "cuda": torch.cuda.synchronize()
def median_ms(fn, reps, inner):
    fn(); sync()
    ts = []
    for _ in range(reps):
        sync(); t0 = time.perf_counter()
        for _ in range(inner): fn()
        sync(); ts.append((time.perf_counter() - t0) * 1e3 / inner)
    ts.sort()
    return ts[len(ts) // 2]
name = torch.cuda.get_device_name(0) if dev == "cuda" else "cpu"
rows = []
`;

const MATMUL_BODY = String.raw`
for m, k, n in cfg["shapes"]:
    for v in cfg["variants"]:
        a = torch.randn(m, k, device=dev, dtype=DT[v]); b = torch.randn(k, n, device=dev, dtype=DT[v])
        ms = median_ms(lambda: a @ b, cfg["reps"], cfg["inner"])
        rows.append({"shape": [m, k, n], "variant": v, "ms": ms})
print(json.dumps({"device": name, "torch": torch.__version__, "rows": rows}))
`;

const UNET_BODY = String.raw`
# Built once on the device (torch >= 2 initialises there; older torch builds on the CPU and moves it),
# converted in place between variants (their order: fp32 first).
try:
    with torch.device(dev): net = UNet().eval()
except (AttributeError, TypeError):
    net = UNet().to(dev).eval()
B, S = cfg["batch"], cfg["latent"]
for v in cfg["variants"]:
    SDPA = v == "fp16+sdpa"
    net = net.to(DT[v])
    with torch.no_grad():
        x = torch.randn(B, cfg["cin"], S, S, device=dev, dtype=DT[v])
        t = torch.full((B,), 500, device=dev)
        ctx = torch.randn(B, cfg["tokens"], cfg["cross"], device=dev, dtype=DT[v])
        ms = median_ms(lambda: net(x, t, ctx), cfg["reps"], 1)
    rows.append({"variant": v, "ms": ms})
print(json.dumps({"device": name, "torch": torch.__version__, "rows": rows}))
`;

/** The matmul script: times a @ b for every shape and variant. */
export function matmulScript(): string {
  return PROLOGUE + MATMUL_BODY;
}

/**
 * The UNet script: the module of torch_unet_source.ts (which reads the same JSON argument), then the
 * timing of one no-grad forward per variant. SDPA is the module's global, switched per variant.
 */
export function unetScript(): string {
  return PROLOGUE + TORCH_UNET_SOURCE + UNET_BODY;
}

export interface TorchOutput {
  device: string;
  torch: string;
  rows: { shape?: [number, number, number]; variant: TorchVariant; ms: number }[];
}

/** What running a script gave: its parsed output, or why there are no rows. */
export type TorchResult = { ok: true; out: TorchOutput } | { ok: false; absent: string };

/** Parse the script's last stdout line. */
export function parseTorchOutput(stdout: string): TorchResult {
  const last = stdout.trim().split("\n").pop() ?? "";
  let o: unknown;
  try {
    o = JSON.parse(last);
  } catch {
    return { ok: false, absent: `the PyTorch script printed no result (${last.slice(0, 80) || "nothing"})` };
  }
  const r = o as Partial<TorchOutput> & { absent?: string };
  if (typeof r.absent === "string") return { ok: false, absent: r.absent };
  if (!Array.isArray(r.rows) || typeof r.device !== "string") return { ok: false, absent: "the PyTorch script's output has no rows" };
  return { ok: true, out: r as TorchOutput };
}

/**
 * Run `script` with the first candidate interpreter that has torch and, for "cuda", a CUDA device.
 * The reason of the last candidate is returned when none does.
 */
export function runTorch(script: string, arg: Record<string, unknown>, candidates = PYTHON_CANDIDATES, timeoutMs = 10 * 60_000): TorchResult {
  let why = "no python3";
  for (const py of candidates) {
    const r = spawnSync(py, ["-c", script, JSON.stringify(arg)], { encoding: "utf8", timeout: timeoutMs });
    if (r.error) {
      why = (r.error as NodeJS.ErrnoException).code === "ENOENT" ? `no ${py}` : `${py}: ${r.error.message}`;
      continue;
    }
    if (r.status !== 0) {
      const err = (r.stderr ?? "").trim().split("\n");
      why = /No module named 'torch'/.test(r.stderr ?? "") ? `no torch in ${py}` : `${py} failed: ${err.slice(-1)[0] ?? ""}`;
      continue;
    }
    const p = parseTorchOutput(r.stdout);
    if (p.ok) return p;
    why = `${py}: ${p.absent}`;
  }
  return { ok: false, absent: why };
}

/** The one row printed when there is no PyTorch reference on a GPU. */
export function absentRow(what: string, why: string): BenchRow {
  return { name: `${what} (PyTorch CUDA)`, shape: "-", ms: NaN, note: `absent: ${why}` };
}

const ratio = (ours: number | undefined, theirs: number) =>
  ours !== undefined && Number.isFinite(ours) ? `; ours / torch ${(ours / theirs).toFixed(2)}` : "";

/**
 * Rows for the matmul products: one per shape and variant, GFLOP/s from torch's median, and the
 * ratio of our time for that shape (`ours`: "MxKxN" -> ms) to torch's.
 */
export function matmulTorchRows(out: TorchOutput, ours: ReadonlyMap<string, number>): BenchRow[] {
  return out.rows.map((r) => {
    const [m, k, n] = r.shape!;
    const shape = `${m}x${k}x${n}`;
    return {
      name: `matmul (PyTorch CUDA ${VARIANT_LABEL[r.variant]})`,
      shape,
      ms: r.ms,
      gflops: (2 * m * k * n) / r.ms / 1e6,
      note: `torch ${out.torch} on ${out.device}${ratio(ours.get(shape), r.ms)}`,
    };
  });
}

/** Rows for the UNet forward: one per variant, with the ratio of our forward's time to torch's. */
export function unetTorchRows(out: TorchOutput, shape: string, oursMs: number): BenchRow[] {
  return out.rows.map((r) => ({
    name: `unet forward (PyTorch CUDA ${VARIANT_LABEL[r.variant]})`,
    shape,
    ms: r.ms,
    note: `torch ${out.torch} on ${out.device}${ratio(oursMs, r.ms)}`,
  }));
}

/** The matmul script's argument. */
export function matmulArgs(shapes: readonly (readonly [number, number, number])[], device = "cuda", variants = MATMUL_VARIANTS): Record<string, unknown> {
  return { device, shapes, variants, reps: 5, inner: 20 };
}

/** The UNet script's argument. */
export function unetArgs(c: UNetConfig, latent: number, batch: number, tokens: number, reps: number, device = "cuda", variants = UNET_VARIANTS): Record<string, unknown> {
  return { ...torchUnetArgs(c), device, latent, batch, tokens, reps, variants };
}
