// `rl4pix bench [what…] [--json]`: kernel and model throughput, with an in-run CPU reference so the
// figures can be read as ratios on a shared, noisy machine.
import type { Command } from "commander";
import { gpu, initGpu } from "../gpu/device.ts";
import { adapterClass, tuningChoices } from "../gpu/tuning.ts";
import { UserError } from "../errors.ts";
import type { BenchRow } from "../bench/types.ts";
import { cpuReference } from "../bench/reference.ts";
import { benchElementwise } from "../bench/elementwise.ts";
import { benchConv } from "../bench/conv.ts";
import { benchMatmulVariants } from "../bench/matmul.ts";
import { benchConvSplitK, benchMatmulSplitK } from "../bench/split_k.ts";
import { benchAttention } from "../bench/attention.ts";
import { benchGroupNorm } from "../bench/groupnorm.ts";
import { benchUnet } from "../bench/unet.ts";
import { benchTrainStep } from "../bench/train_step.ts";
import type { ModelBenchOptions } from "../bench/model.ts";
import { action } from "./run.ts";

type Suite = (opts: ModelBenchOptions) => Promise<BenchRow[]>;

/** Kernel suites by name; model-level suites (unet, train-step) register themselves here too. */
export const SUITES: Record<string, Suite> = {
  // Both suites end with split-K on vs off at the SD UNet's small-image, wide-channel shapes
  // (fewer reps on a CPU adapter, where one 1280-channel conv takes most of a second).
  matmul: async (o) => [...(await benchMatmulVariants(o.torch !== false)), ...(await benchMatmulSplitK(splitReps()))],
  attention: () => benchAttention(),
  groupnorm: () => benchGroupNorm(),
  elementwise: benchElementwise,
  conv: async () => [...(await benchConv()), ...(await benchConvSplitK(splitReps()))],
  unet: (o) => benchUnet(o),
  "train-step": (o) => benchTrainStep(o),
};

const splitReps = () => (adapterClass(gpu()) === "gpu" ? 5 : 3);

export const ALL_KERNEL_SUITES = ["matmul", "conv", "attention", "groupnorm", "elementwise"];

function fmt(rows: BenchRow[]): string {
  const lines = [["kernel", "shape", "ms", "GFLOP/s", "GB/s", "compile ms", "peak MiB", "note"]];
  for (const r of rows) {
    lines.push([
      r.name,
      r.shape,
      r.ms.toFixed(2),
      r.gflops !== undefined ? r.gflops.toFixed(2) : "",
      r.gbps !== undefined ? r.gbps.toFixed(2) : "",
      r.compileMs !== undefined ? r.compileMs.toFixed(0) : "",
      r.peakBytes !== undefined ? (r.peakBytes / 2 ** 20).toFixed(0) : "",
      r.note ?? "",
    ]);
  }
  const w = lines[0].map((_, i) => Math.max(...lines.map((l) => l[i].length)));
  return lines.map((l) => l.map((c, i) => c.padEnd(w[i])).join("  ").trimEnd()).join("\n");
}

export async function runBench(what: string[], json: boolean, opts: Record<string, unknown> = {}): Promise<void> {
  const names = what.length === 0 || what.includes("all") ? ALL_KERNEL_SUITES.filter((s) => s in SUITES) : what;
  for (const n of names) if (!(n in SUITES)) throw new UserError(`bench: unknown suite '${n}' (known: ${Object.keys(SUITES).join(", ")}, all)`);
  const g = await initGpu();
  const ref = cpuReference();
  const rows: BenchRow[] = [];
  for (const n of names) {
    const r = await SUITES[n](opts as ModelBenchOptions);
    rows.push(...r);
    if (!json) console.error(`bench: ${n} done`);
  }
  for (const r of rows) {
    if (r.gflops !== undefined) r.note = [r.note, `${(100 * r.gflops / ref.matmulGflops).toFixed(1)}% of CPU ref matmul`].filter(Boolean).join("; ");
    if (r.gbps !== undefined) r.note = [r.note, `${(100 * r.gbps / ref.addGbps).toFixed(1)}% of CPU ref add`].filter(Boolean).join("; ");
  }
  const out = {
    adapter: g.info.description,
    adapterClass: adapterClass(g),
    reference: ref,
    tuning: { ...tuningChoices },
    options: opts,
    rows,
  };
  if (json) console.log(JSON.stringify(out, null, 2));
  else {
    console.log(`adapter: ${out.adapter} (${out.adapterClass})`);
    console.log(`CPU reference (${ref.source}): matmul 1024^3 ${ref.matmulGflops.toFixed(1)} GFLOP/s, add ${ref.addGbps.toFixed(1)} GB/s`);
    console.log(fmt(rows));
  }
  void gpu;
}

export function register(program: Command): void {
  program
    .command("bench")
    .description("kernel and model benchmarks: matmul, conv, attention, groupnorm, elementwise, unet, train-step, all")
    .argument("[what...]", "suites to run (default: all kernel suites)")
    .option("--json", "print JSON")
    .option("--config <name>", "model shapes for unet/train-step: sd15 or tiny", "sd15")
    .option("--resolution <px>", "image resolution for unet/train-step", "256")
    .option("--batch <n>", "batch for unet (default: 1 for sd15, 3 for tiny)")
    .option("--f16", "f16 weights (where shader-f16 exists)")
    .option("--checkpointing <mode>", "train-step: gradient checkpointing on, off or both", "both")
    .option("--reps <n>", "unet/train-step: timed repetitions (median reported)")
    .option("--profile", "unet/train-step: print the per-kernel GPU time of one more call")
    .option("--no-torch", "unet, matmul: skip the PyTorch references (CPU for unet on a CPU adapter; CUDA on the same GPU)")
    .action(action(async (what: string[], opts: { json?: boolean }) => {
      await runBench(what, Boolean(opts.json), opts);
    }));
}
