// Progress bars on stderr (cli-progress): per-step bars with it/s for sampling, epoch bars for
// training. Quiet when stderr is not a terminal except for a final line.
import cliProgress from "cli-progress";

export interface Progress {
  update(done: number, payload?: Record<string, string | number>): void;
  stop(): void;
}

export function progressBar(label: string, total: number, extra = ""): Progress {
  const tty = Boolean(process.stderr.isTTY);
  const t0 = performance.now();
  if (!tty) {
    return {
      update() {},
      stop() {
        const s = (performance.now() - t0) / 1000;
        process.stderr.write(`${label}: ${total} in ${s.toFixed(1)} s (${(total / Math.max(s, 1e-9)).toFixed(2)} it/s)\n`);
      },
    };
  }
  const bar = new cliProgress.SingleBar(
    {
      format: `${label} |{bar}| {value}/{total} {rate} it/s ETA {eta_formatted}${extra}`,
      stream: process.stderr,
      hideCursor: true,
      clearOnComplete: false,
    },
    cliProgress.Presets.shades_classic,
  );
  bar.start(total, 0, { rate: "0.00" });
  return {
    update(done, payload = {}) {
      const s = (performance.now() - t0) / 1000;
      bar.update(done, { rate: (done / Math.max(s, 1e-9)).toFixed(2), ...payload });
    },
    stop() {
      bar.stop();
    },
  };
}
