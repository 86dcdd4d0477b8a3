// The in-run CPU reference that benchmark figures are reported against (these machines are shared and
// noisy, so absolute numbers mean little; ratios measured in the same run do). numpy (OpenBLAS) when a
// python3 with numpy exists, otherwise plain JavaScript loops.
import { spawnSync } from "node:child_process";

export interface CpuReference {
  source: string;
  /** fp32 matmul 1024^3 GFLOP/s. */
  matmulGflops: number;
  /** Elementwise add (read 2, write 1) GB/s. */
  addGbps: number;
}

const NUMPY_SCRIPT = `
import time, numpy as np
a = np.random.rand(1024, 1024).astype(np.float32); b = np.random.rand(1024, 1024).astype(np.float32)
a @ b
ts = []
for _ in range(7):
    t = time.perf_counter(); a @ b; ts.append(time.perf_counter() - t)
mm = 2 * 1024**3 / sorted(ts)[3] / 1e9
x = np.random.rand(3 * 320 * 64 * 64).astype(np.float32); y = x.copy(); z = np.empty_like(x)
ts = []
for _ in range(7):
    t = time.perf_counter(); np.add(x, y, out=z); ts.append(time.perf_counter() - t)
bw = 3 * 4 * x.size / sorted(ts)[3] / 1e9
print(mm, bw)
`;

function numpyReference(): CpuReference | null {
  for (const py of ["/usr/bin/python3", "python3"]) {
    const env = { ...process.env };
    // Tuned-down OpenBLAS settings some machines carry slow numpy down; measure it as it can run.
    delete env.OPENBLAS_CORETYPE;
    delete env.OPENBLAS_L2_SIZE;
    const r = spawnSync(py, ["-c", NUMPY_SCRIPT], { encoding: "utf8", timeout: 60_000, env });
    if (r.status === 0) {
      const [mm, bw] = r.stdout.trim().split(/\s+/).map(Number);
      if (Number.isFinite(mm) && Number.isFinite(bw)) return { source: `numpy via ${py}`, matmulGflops: mm, addGbps: bw };
    }
  }
  return null;
}

function jsReference(): CpuReference {
  const n = 256;
  const a = new Float32Array(n * n).map((_, i) => (i % 7) * 0.1);
  const b = new Float32Array(n * n).map((_, i) => (i % 5) * 0.1);
  const c = new Float32Array(n * n);
  const mm = () => {
    c.fill(0);
    for (let i = 0; i < n; i++) for (let k = 0; k < n; k++) {
      const aik = a[i * n + k];
      const bo = k * n, co = i * n;
      for (let j = 0; j < n; j++) c[co + j] += aik * b[bo + j];
    }
  };
  mm();
  const ts: number[] = [];
  for (let r = 0; r < 5; r++) {
    const t0 = performance.now();
    mm();
    ts.push(performance.now() - t0);
  }
  ts.sort((x, y) => x - y);
  const len = 3 * 320 * 64 * 64;
  const x = new Float32Array(len).fill(1), y = new Float32Array(len).fill(2), z = new Float32Array(len);
  const ta: number[] = [];
  for (let r = 0; r < 5; r++) {
    const t0 = performance.now();
    for (let i = 0; i < len; i++) z[i] = x[i] + y[i];
    ta.push(performance.now() - t0);
  }
  ta.sort((p, q) => p - q);
  return { source: "plain JavaScript loops", matmulGflops: (2 * n ** 3) / ts[2] / 1e6, addGbps: (12 * len) / ta[2] / 1e6 };
}

export function cpuReference(): CpuReference {
  return numpyReference() ?? jsReference();
}
