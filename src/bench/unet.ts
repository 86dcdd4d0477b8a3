// `rl4pix bench unet`: one no-grad UNet forward of an SD-1.5-shaped InstructPix2Pix UNet (or the
// embedded tiny model's) with random weights drawn on the GPU: median ms after a warm-up, the first
// call's time (pipeline compilation happens at first dispatch on lavapipe), peak pool memory, and,
// PyTorch forwards of the same network timed in the same run: on a CPU adapter the CPU one (when
// /usr/bin/python3 has torch), and on any adapter the CUDA ones (fp32 with TF32 off, fp16, fp16 +
// SDPA) when a python3 with torch sees a CUDA device, else one row saying they are absent.
import { gpu } from "../gpu/device.ts";
import { noGrad, scope } from "../tensor/index.ts";
import type { BenchRow } from "./types.ts";
import { formatProfile } from "../gpu/profiler.ts";
import {
  type ModelBenchOptions,
  buildUnet,
  describeShape,
  loadNote,
  mib,
  modelShape,
  profileModel,
  timeModel,
  unetInputs,
} from "./model.ts";
import { torchUnetForward } from "./torch_reference.ts";
import { absentRow, runTorch, unetArgs, unetScript, unetTorchRows } from "./torch_cuda.ts";
import { adapterClass } from "../gpu/tuning.ts";

export async function benchUnet(o: ModelBenchOptions = {}): Promise<BenchRow[]> {
  const s = modelShape(o);
  const g = gpu();
  const reps = o.reps !== undefined ? Number(o.reps) : s.name === "tiny" ? 9 : 3;
  const { unet, params, bytes } = buildUnet(s);
  const inp = unetInputs(s);
  await g.sync();
  const weightsBytes = g.pool.snapshot().liveBytes;
  const run = () => scope(() => void noGrad(() => unet.forward(inp.sample, inp.timesteps, inp.context)));
  const load0 = loadNote();
  const t = await timeModel(run, reps);
  const rows: BenchRow[] = [{
    name: "unet forward",
    shape: describeShape(s),
    ms: t.ms,
    compileMs: Math.max(0, t.firstMs - t.ms),
    peakBytes: t.peakBytes,
    note: `${(params / 1e6).toFixed(1)}M params (${mib(bytes)}); peak pool ${mib(t.peakBytes)} (weights ${mib(weightsBytes)}); ` +
      `first call ${t.firstMs.toFixed(0)} ms; runs ${t.all.map((v) => v.toFixed(0)).join("/")} ms; cpu ${t.cpuMs.toFixed(0)} ms/call (${t.cores.toFixed(2)} cores busy); ${load0}`,
  }];
  if (o.profile) console.error(formatProfile(await profileModel(run)));
  if (o.torch !== false && adapterClass(g) === "cpu") {
    const tr = torchUnetForward(s.unet, s.latent, s.batch, reps);
    if (tr) {
      rows.push({
        name: "unet forward (PyTorch CPU)",
        shape: describeShape({ ...s, f16: false }),
        ms: tr.ms,
        note: `torch ${tr.version}, ${tr.threads} threads, f32; first call ${tr.firstMs.toFixed(0)} ms; cpu ${tr.cpuMs.toFixed(0)} ms/call; ` +
          `ours / torch: wall ${(t.ms / tr.ms).toFixed(2)}, cpu ${(t.cpuMs / tr.cpuMs).toFixed(2)}; ${loadNote()}`,
      });
    } else rows.push({ name: "unet forward (PyTorch CPU)", shape: describeShape(s), ms: NaN, note: "no torch in /usr/bin/python3" });
  }
  inp.sample.dispose();
  inp.context.dispose();
  unet.disposeParameters();
  await g.sync();
  g.pool.trim();
  if (o.torch !== false) {
    // After ours is freed: torch shares the GPU's memory.
    const r = runTorch(unetScript(), unetArgs(s.unet, s.latent, s.batch, s.tokens, Math.max(3, reps)));
    rows.push(...(r.ok ? unetTorchRows(r.out, describeShape({ ...s, f16: false }), t.ms) : [absentRow("unet forward", r.absent)]));
  }
  return rows;
}
