// The training loop every pretraining stage shares: AdamW over groups of parameters (each with its
// own learning-rate factor), gradient-norm clipping, a linear warm-up, a held-out evaluation every N
// steps, metrics.jsonl, and resumable checkpoints (src/pretrain/checkpoint.ts). The stage supplies
// `loss(step)`, which must be a pure function of the step (data, noise and dropout drawn from
// (seed, step)), so that resuming from a checkpoint reproduces an uninterrupted run exactly.
import { appendFileSync, existsSync, mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { Tensor, backward, clearTape, scope } from "../tensor/index.ts";
import { scopeAsync } from "../tensor/scope.ts";
import { adamW, clipGradNorm, createAdamWState, disposeAdamWState, type AdamWState } from "../tensor/ops/optim.ts";
import { writeFileAtomic } from "../io/atomic.ts";
import { UserError } from "../errors.ts";
import { loadStageCheckpoint, type NamedParam, saveStageCheckpoint } from "./checkpoint.ts";

export interface ParamGroup {
  params: NamedParam[];
  /** Factor on the stage's learning rate. */
  lrScale: number;
}

export interface StageMetrics {
  step: number;
  [key: string]: number | string;
}

export interface StageSpec {
  name: string;
  /** The stage's folder (checkpoints, metrics.jsonl). */
  dir: string;
  groups: ParamGroup[];
  steps: number;
  learningRate: number;
  /** Linear warm-up from 0 over this many steps. */
  warmupSteps: number;
  /** "linear": the learning rate falls linearly to 0 at `steps` (after the warm-up); default constant. */
  decay?: "none" | "linear";
  weightDecay: number;
  maxGradNorm: number;
  /** Hash of everything that decides the result (model, data, settings): a resume must match it. */
  settingsHash: string;
  checkpointEvery: number;
  /** Held-out evaluation every N steps (and at step 0 and at the end); 0 = never. */
  evalEvery: number;
  /** The loss of step `step`, recorded for backward. */
  loss: (step: number) => Tensor;
  evaluate?: (step: number) => Promise<Record<string, number>>;
  /** Polled after every step: true checkpoints and returns early. */
  stop?: () => boolean;
  /** One line of progress (stderr in the CLI). */
  log?: (line: string) => void;
  /** Steps between progress lines (default 50). */
  logEvery?: number;
  /**
   * Continue from a weights-only checkpoint (a finished stage kept without its AdamW moments) with a
   * restarted AdamW and warm-up. Without it such a checkpoint is refused when steps are left: it
   * cannot be resumed exactly.
   */
  freshOptimizer?: boolean;
}

export interface StageResult {
  /** Steps completed so far (== spec.steps when the stage finished). */
  step: number;
  finished: boolean;
}

/** The learning rate of `step`; the warm-up counts from `warmupFrom` (where the optimizer started). */
export function learningRate(spec: Pick<StageSpec, "learningRate" | "warmupSteps" | "decay" | "steps">, step: number, warmupFrom = 0): number {
  const warm = spec.warmupSteps > 0 ? Math.min(1, (step - warmupFrom + 1) / spec.warmupSteps) : 1;
  const decay = spec.decay === "linear" ? Math.max(0, 1 - step / spec.steps) : 1;
  return spec.learningRate * warm * decay;
}

/** metrics.jsonl without lines past `step` (written after the checkpoint a resume starts from). */
function trimMetrics(path: string, step: number): void {
  if (!existsSync(path)) return;
  const keep = readFileSync(path, "utf8").split("\n").filter((l) => {
    if (!l.trim()) return false;
    try {
      return (JSON.parse(l) as StageMetrics).step <= step;
    } catch {
      return false;
    }
  });
  writeFileAtomic(path, keep.map((l) => l + "\n").join(""));
}

/** Run (or resume) a stage. Parameters are updated in place. */
export async function runStage(spec: StageSpec): Promise<StageResult> {
  mkdirSync(spec.dir, { recursive: true });
  const all = spec.groups.flatMap((g) => g.params);
  const metricsPath = join(spec.dir, "metrics.jsonl");
  const log = spec.log ?? (() => {});
  const logEvery = spec.logEvery ?? 50;
  const resumed = loadStageCheckpoint(spec.dir, all, spec.settingsHash);
  let step = resumed?.state.step ?? 0;
  let warmupFrom = resumed?.state.optimizerRestartedAt ?? 0;
  const restart = resumed !== null && resumed.weightsOnly && step < spec.steps;
  if (restart) {
    if (!spec.freshOptimizer) {
      throw new UserError(
        `${resumed.weightsFile}: holds the weights only (the AdamW moments were dropped when the ${spec.name} stage was kept as finished), so it cannot be resumed exactly; add --fresh-optimizer to continue it with a restarted optimizer and warm-up, or use a new --out folder`,
      );
    }
    warmupFrom = step;
  }
  // One AdamW state per group (the kernel takes one learning rate per call).
  const states: AdamWState[] = [];
  {
    let at = 0;
    for (const g of spec.groups) {
      const st = createAdamWState();
      if (resumed && !restart) {
        st.step = resumed.adam.step;
        st.m = resumed.adam.m.slice(at, at + g.params.length);
        st.v = resumed.adam.v.slice(at, at + g.params.length);
      }
      at += g.params.length;
      states.push(st);
    }
  }
  const merged = (): AdamWState => ({ step: states[0]?.step ?? 0, m: states.flatMap((s, i) => padTo(s.m, spec.groups[i].params.length)), v: states.flatMap((s, i) => padTo(s.v, spec.groups[i].params.length)) });
  const save = async () => {
    await saveStageCheckpoint(spec.dir, all, merged(), {
      step,
      adamStep: states[0]?.step ?? 0,
      settingsHash: spec.settingsHash,
      ...(warmupFrom > 0 ? { optimizerRestartedAt: warmupFrom } : {}),
    });
  };
  const record = (m: StageMetrics) => appendFileSync(metricsPath, JSON.stringify(m) + "\n");
  if (resumed) {
    trimMetrics(metricsPath, step);
    log(restart ? `${spec.name}: continuing at step ${step}/${spec.steps} with a restarted optimizer (the checkpoint holds no AdamW moments)` : `${spec.name}: resuming at step ${step}/${spec.steps}`);
  } else {
    trimMetrics(metricsPath, -1);
  }
  for (const p of all) p.t.requireGrad();
  let trainSeconds = 0;
  let window = 0;
  let windowN = 0;
  let stepsThisRun = 0;
  try {
    if (step === 0 && spec.evaluate && spec.evalEvery > 0) record({ step: 0, ...(await spec.evaluate(0)) });
    while (step < spec.steps) {
      const lr = learningRate(spec, step, warmupFrom);
      const tStep = performance.now();
      const loss = await scopeAsync(async () => {
        const l = spec.loss(step);
        backward(l);
        const v = await l.item();
        scope(() => {
          clipGradNorm(all.map((p) => p.t), spec.maxGradNorm);
          spec.groups.forEach((g, i) => adamW(g.params.map((p) => p.t), states[i], { lr: lr * g.lrScale, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: spec.weightDecay }));
        });
        for (const p of all) {
          p.t.grad?.dispose();
          p.t.grad = null;
        }
        return v;
      });
      clearTape();
      trainSeconds += (performance.now() - tStep) / 1000;
      if (!Number.isFinite(loss)) throw new Error(`pretrain ${spec.name}: the loss is ${loss} at step ${step}`);
      step++;
      stepsThisRun++;
      window += loss;
      windowN++;
      const last = step === spec.steps;
      if (step % logEvery === 0 || last) {
        const sps = trainSeconds / stepsThisRun;
        const m: StageMetrics = { step, loss: window / windowN, lr, seconds_per_step: sps };
        const evalNow = spec.evaluate && spec.evalEvery > 0 && (step % spec.evalEvery === 0 || last);
        if (evalNow) Object.assign(m, await spec.evaluate!(step));
        record(m);
        log(`${spec.name} ${step}/${spec.steps}: ${Object.entries(m).filter(([k]) => k !== "step").map(([k, v]) => `${k} ${typeof v === "number" ? fmt(v) : v}`).join(", ")}`);
        window = 0;
        windowN = 0;
      }
      const stopping = spec.stop?.() ?? false;
      if (step % spec.checkpointEvery === 0 || last || stopping) await save();
      if (stopping && !last) return { step, finished: false };
    }
    return { step, finished: true };
  } finally {
    for (const p of all) {
      p.t.grad?.dispose();
      p.t.grad = null;
      p.t.requireGrad(false);
    }
    for (const s of states) disposeAdamWState(s);
  }
}

function padTo<T>(xs: (T | null)[], n: number): (T | null)[] {
  return Array.from({ length: n }, (_, i) => xs[i] ?? null);
}

function fmt(v: number): string {
  if (v === 0 || !Number.isFinite(v)) return String(v);
  const a = Math.abs(v);
  return a >= 1000 || a < 1e-3 ? v.toExponential(3) : v.toPrecision(4);
}
