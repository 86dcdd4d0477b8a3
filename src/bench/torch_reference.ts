// The PyTorch CPU reference of `rl4pix bench unet`: the module of torch_unet_source.ts, random
// weights, timed in the same run as our forward so the ratio is meaningful on a shared machine. Needs
// /usr/bin/python3 with torch (Debian's python3-torch); returns null when it is missing.
import { spawnSync } from "node:child_process";
import type { UNetConfig } from "../io/diffusers_config.ts";
import { TORCH_UNET_SOURCE, torchUnetArgs } from "./torch_unet_source.ts";

const SCRIPT = TORCH_UNET_SOURCE + String.raw`
torch.set_num_threads(cfg["threads"])
torch.manual_seed(0)
net = UNet().eval()
B, S = cfg["batch"], cfg["latent"]
x = torch.randn(B, cfg["cin"], S, S); t = torch.full((B,), 500); ctx = torch.randn(B, 77, cfg["cross"])
with torch.no_grad():
    t0 = time.perf_counter(); net(x, t, ctx); first = time.perf_counter() - t0
    ts = []
    c0 = time.process_time()
    for _ in range(cfg["reps"]):
        t0 = time.perf_counter(); net(x, t, ctx); ts.append(time.perf_counter() - t0)
    cpu = (time.process_time() - c0) / cfg["reps"]
ts.sort()
print(json.dumps({"first_ms": first * 1e3, "ms": ts[len(ts) // 2] * 1e3, "cpu_ms": cpu * 1e3, "all_ms": [v * 1e3 for v in ts], "threads": torch.get_num_threads(), "torch": torch.__version__}))
`;

export interface TorchTiming {
  firstMs: number;
  ms: number;
  /** CPU milliseconds per call (all threads). */
  cpuMs: number;
  threads: number;
  version: string;
}

/** Time the torch UNet forward of this config (no-grad, f32) with `threads` threads; null when torch is missing. */
export function torchUnetForward(c: UNetConfig, latent: number, batch: number, reps: number, threads = 2): TorchTiming | null {
  const arg = { ...torchUnetArgs(c), threads, batch, latent, reps };
  const r = spawnSync("/usr/bin/python3", ["-c", SCRIPT, JSON.stringify(arg)], { encoding: "utf8", timeout: 30 * 60_000 });
  if (r.status !== 0) {
    if (/No module named 'torch'/.test(r.stderr ?? "")) return null;
    if (r.error && (r.error as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw new Error(`bench: the torch reference failed: ${(r.stderr ?? "").trim().split("\n").slice(-3).join(" / ")}`);
  }
  const o = JSON.parse(r.stdout.trim().split("\n").pop()!) as { first_ms: number; ms: number; cpu_ms: number; threads: number; torch: string };
  return { firstMs: o.first_ms, ms: o.ms, cpuMs: o.cpu_ms, threads: o.threads, version: o.torch };
}
