// One benchmark measurement, as printed by `rl4pix bench` (and `--json`).
export interface BenchRow {
  /** Kernel or workload, e.g. "matmul". */
  name: string;
  /** The shape measured, e.g. "1024x1024x1024". */
  shape: string;
  /** Median milliseconds per call after warm-up. */
  ms: number;
  gflops?: number;
  gbps?: number;
  /** Pipeline compile time paid before the first call. */
  compileMs?: number;
  /** Peak GPU memory allocated by our pool during the measurement. */
  peakBytes?: number;
  /** Free-form remark (variant chosen, reference used). */
  note?: string;
}
