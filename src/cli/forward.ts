// `rl4pix forward COMPONENT` and `rl4pix score-trajectory`: debugging tools that run one component
// (or re-score a saved chain) on inputs from a safetensors file, to compare with a PyTorch dump.
import type { Command } from "commander";
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { gpu, initGpu } from "../gpu/device.ts";
import { openSafetensors, type SafetensorsFile, writeSafetensors, type TensorToWrite } from "../io/safetensors.ts";
import { loadPipelineConfig, resolveWeightFiles } from "../io/diffusers.ts";
import { readImage } from "../io/image.ts";
import { UserError } from "../errors.ts";
import { Tensor, backward, noGrad, scope } from "../tensor/index.ts";
import { CLIPTextModel } from "../nn/clip_text.ts";
import { AutoencoderKL } from "../nn/vae.ts";
import { UNet2DConditionModel } from "../nn/unet.ts";
import { loadWeights } from "../nn/load.ts";
import { attachLoraLayers, loraTargets } from "../nn/lora.ts";
import { setAttentionCaptureHook } from "../nn/attention.ts";
import * as ops from "../tensor/ops/index.ts";
import { DDIMScheduler } from "../diffusion/ddim.ts";
import { crossAttentionLayers } from "../diffusion/attention_store.ts";
import { encodeImages, encodePrompts, guidedConditioning, variantIfPresent } from "../diffusion/pipeline.ts";
import { scoreChain } from "../diffusion/score.ts";
import { imageToTensor } from "../diffusion/images.ts";
import { addModelFlags, checkModelFlags, loadModelsFromFlags, type ModelFlags } from "./model_args.ts";
import { action, num } from "./run.ts";

const COMPONENTS = ["text-encoder", "vae-encode", "vae-decode", "unet", "ddim-step"] as const;
type Component = (typeof COMPONENTS)[number];

function need(f: SafetensorsFile, name: string, rank?: number): Tensor {
  if (!f.has(name)) throw new UserError(`${f.path}: no tensor named '${name}'`);
  const shape = f.info(name).shape;
  if (rank !== undefined && shape.length !== rank) throw new UserError(`${f.path}: '${name}' has shape [${shape.join(",")}], expected rank ${rank}`);
  return Tensor.from(f.toF32(name), shape, "f32", name);
}

function ints(f: SafetensorsFile, name: string): number[] {
  if (!f.has(name)) throw new UserError(`${f.path}: no tensor named '${name}'`);
  return Array.from(f.toI32(name));
}

async function out(t: Tensor): Promise<TensorToWrite> {
  return { dtype: "F32", shape: [...t.shape], data: await t.readF32() };
}

interface ForwardFlags extends ModelFlags {
  inputs: string;
  out: string;
  captureAttention?: boolean;
  gradOutput?: string;
  eta: number;
  steps: number;
}

async function forwardCommand(component: string, o: ForwardFlags): Promise<void> {
  if (!(COMPONENTS as readonly string[]).includes(component)) throw new UserError(`forward: unknown component '${component}' (${COMPONENTS.join(", ")})`);
  if (!existsSync(dirname(o.out))) throw new UserError(`--out: folder ${dirname(o.out)} does not exist`);
  const inputs = openSafetensors(o.inputs);
  const c = component as Component;
  // every file and flag is checked before the GPU starts
  if (o.gradOutput && !o.lora) throw new UserError("--grad-output needs --lora (gradients are taken with respect to the LoRA weights)");
  const checked = c === "ddim-step" ? null : await checkModelFlags(o);
  const schedulerConfig = c === "ddim-step" && o.model ? loadPipelineConfig(o.model).scheduler : undefined;
  const gradFile = o.gradOutput ? openSafetensors(o.gradOutput) : null;
  await initGpu();
  const result = new Map<string, TensorToWrite>();
  if (c === "ddim-step") {
    const s = new DDIMScheduler(schedulerConfig);
    s.setTimesteps(o.steps);
    const eps = need(inputs, "model_output", 4);
    const x = need(inputs, "sample", 4);
    const tsRaw = ints(inputs, "timestep");
    const ts = tsRaw.length === 1 ? new Array(x.shape[0]).fill(tsRaw[0]) : tsRaw;
    const r = noGrad(() => s.step(eps, ts, x, {
      eta: o.eta,
      prevSample: inputs.has("prev_sample") ? need(inputs, "prev_sample", 4) : undefined,
      noise: inputs.has("variance_noise") ? need(inputs, "variance_noise", 4) : undefined,
    }));
    result.set("prev_sample_mean", await out(r.mean));
    result.set("prev_sample", await out(r.prevSample));
    result.set("pred_original_sample", await out(r.predOriginal));
    result.set("std_dev_t", { dtype: "F32", shape: [ts.length], data: Float32Array.from(r.coefficients.map((k) => k.std)) });
    if (r.logProb) result.set("log_prob", await out(r.logProb));
  } else {
    const dir = checked!.dir;
    const cfg = checked!.model.config;
    // --variant fp16 runs as loadIP2P does: f16 weights (a component without fp16 files falls back to
    // its f32 ones, as diffusers does) and f16 activations where the adapter has shader-f16.
    const f16 = o.variant === "fp16";
    const f16Activations = f16 && gpu().hasF16;
    if (c === "text-encoder") {
      const te = new CLIPTextModel(cfg.textEncoder);
      loadWeights(te, resolveWeightFiles(join(dir, "text_encoder"), { variant: variantIfPresent(join(dir, "text_encoder"), o.variant) }), { keepF16: f16, ignore: CLIPTextModel.IGNORED_KEYS });
      if (f16Activations) te.activationDtype = "f16";
      const idsShape = inputs.has("input_ids") ? inputs.info("input_ids").shape : [];
      if (idsShape.length !== 2) throw new UserError(`${o.inputs}: 'input_ids' must be [B, L]`);
      const ids = Int32Array.from(ints(inputs, "input_ids"));
      result.set("last_hidden_state", await out(noGrad(() => te.forward(ids, idsShape[0]).lastHiddenState)));
    } else if (c === "vae-encode" || c === "vae-decode") {
      const vae = new AutoencoderKL(cfg.vae);
      loadWeights(vae, resolveWeightFiles(join(dir, "vae"), { variant: variantIfPresent(join(dir, "vae"), o.variant) }), { keepF16: f16 });
      if (f16Activations) vae.activationDtype = "f16";
      if (c === "vae-encode") {
        const d = noGrad(() => vae.encode(need(inputs, "image", 4)));
        result.set("mean", await out(d.mean));
        result.set("std", await out(noGrad(() => ops.exp(ops.scale(d.logvar, 0.5)))));
      } else {
        result.set("sample", await out(noGrad(() => vae.decode(need(inputs, "latents", 4)))));
      }
    } else {
      const unet = new UNet2DConditionModel(cfg.unet);
      loadWeights(unet, resolveWeightFiles(join(dir, "unet"), { variant: o.variant }), { keepF16: f16 });
      if (f16Activations) unet.activationDtype = "f16";
      const lora = checked!.lora;
      if (lora) attachLoraLayers(unet, lora.layers, o.lora!, Boolean(o.gradOutput));
      const sample = need(inputs, "sample", 4);
      const tsRaw = ints(inputs, "timestep");
      const ts = tsRaw.length === 1 ? new Array(sample.shape[0]).fill(tsRaw[0]) : tsRaw;
      if (ts.length !== sample.shape[0]) throw new UserError(`${o.inputs}: 'timestep' has ${ts.length} values for batch ${sample.shape[0]}`);
      const ehs = need(inputs, "encoder_hidden_states", 3);
      const maps = new Map<string, Tensor>();
      if (o.captureAttention) {
        const paths = new Set(crossAttentionLayers(unet).map((l) => l.path));
        setAttentionCaptureHook({
          request(path, batch, queries, keys) {
            if (!paths.has(path)) return [];
            const acc = ops.zeros([batch, queries, keys]).keep();
            maps.set(path, acc);
            return [{ rows: [0, batch], cols: { start: 0, count: keys }, out: acc, weight: 1, mode: "map" }];
          },
        });
      }
      const run = () => unet.forward(sample, ts, ehs);
      const pred = o.gradOutput ? scope(run) : noGrad(run);
      setAttentionCaptureHook(null);
      result.set("noise_pred", await out(pred));
      for (const [path, t] of maps) result.set(`attn2.${path}`, await out(t));
      if (o.gradOutput && lora) {
        const gf = gradFile!;
        const g = need(gf, "grad_output");
        if (g.shape.join(",") !== pred.shape.join(",")) throw new UserError(`${o.gradOutput}: 'grad_output' is [${g.shape.join(",")}], noise_pred is [${pred.shape.join(",")}]`);
        backward(pred, g);
        const targets = loraTargets(unet);
        for (const [path, keys] of lora.keys) {
          const l = targets.get(path)!.lora!;
          result.set(`grad.${keys.down}`, await out(l.down.grad ?? ops.zerosLike(l.down)));
          result.set(`grad.${keys.up}`, await out(l.up.grad ?? ops.zerosLike(l.up)));
        }
      }
    }
  }
  writeSafetensors(o.out, result, { format: "pt", component });
  console.log(o.out);
}

interface ScoreFlags extends ModelFlags {
  image: string;
  prompt: string;
  trajectory: string;
  textGuidance: number;
  imageGuidance: number;
  eta: number;
  json?: boolean;
}

async function scoreCommand(o: ScoreFlags): Promise<void> {
  const f = openSafetensors(o.trajectory);
  if (!f.has("latents") || f.info("latents").shape.length !== 5) throw new UserError(`${o.trajectory}: needs a tensor 'latents' [T+1, B, 4, h, w]`);
  const [T1, B, C, h, w] = f.info("latents").shape;
  const ts = ints(f, "timesteps");
  if (ts.length !== T1 - 1) throw new UserError(`${o.trajectory}: ${ts.length} timesteps for ${T1} latents (expected ${T1 - 1})`);
  if (o.eta <= 0) throw new UserError("--eta must be > 0: a deterministic step has no log-probability");
  const input = await readImage(o.image);
  const models = await loadModelsFromFlags(o);
  const factor = models.vae.scaleFactor;
  const latents: Tensor[] = [];
  const all = f.toF32("latents");
  const per = B * C * h * w;
  for (let i = 0; i < T1; i++) latents.push(Tensor.from(all.subarray(i * per, (i + 1) * per), [B, C, h, w]).keep());
  const stored = f.has("log_probs") ? f.toF32("log_probs") : null;
  const prompts = encodePrompts(models, new Array(B).fill(o.prompt));
  const img = imageToTensor(input, w * factor, h * factor);
  const imgLat = encodeImages(models, ops.concat(new Array(B).fill(img), 0));
  const cond = guidedConditioning(models, prompts.embeds, imgLat);
  const lps = await scoreChain(models, cond, latents, ts, { text: o.textGuidance, image: o.imageGuidance }, o.eta);
  if (o.json) {
    console.log(JSON.stringify({ timesteps: ts, log_probs: lps, stored_log_probs: stored ? Array.from({ length: ts.length }, (_, i) => Array.from(stored.subarray(i * B, (i + 1) * B))) : null }));
  } else {
    lps.forEach((row, i) => {
      const s = stored ? `  (stored ${Array.from(stored.subarray(i * B, (i + 1) * B)).map((v) => v.toFixed(6)).join(" ")})` : "";
      console.log(`t=${String(ts[i]).padStart(4)}  ${row.map((v) => v.toFixed(6)).join(" ")}${s}`);
    });
  }
}

export function register(program: Command): void {
  program
    .command("forward")
    .description("run one component on inputs from a safetensors file (compare with a PyTorch dump): text-encoder, vae-encode, vae-decode, unet, ddim-step")
    .argument("<component>", COMPONENTS.join(" | "))
    .option("--model <dir>", "diffusers folder (default: the embedded tiny model)")
    .option("--variant <name>", "weight variant, e.g. fp16 (f16 weights, f16 activations where the adapter has shader-f16)")
    .option("--lora <file>", "LoRA file for the UNet")
    .requiredOption("--inputs <file>", "input tensors (safetensors)")
    .requiredOption("--out <file>", "output tensors (safetensors)")
    .option("--capture-attention", "unet: also write each attn2 layer's head-averaged probabilities")
    .option("--grad-output <file>", "unet: safetensors with 'grad_output'; writes the gradient of sum(noise_pred * grad_output) w.r.t. every LoRA weight")
    .option("--eta <eta>", "ddim-step: eta", num("--eta", 0), 1)
    .option("--steps <n>", "ddim-step: number of inference steps", num("--steps", 1, 1000, true), 50)
    .action(action(async (component: string, o: ForwardFlags) => await forwardCommand(component, o)));

  addModelFlags(
    program
      .command("score-trajectory")
      .description("recompute each step's log-prob of a saved trajectory under the current model (what PPO does)"),
  )
    .requiredOption("--image <file>", "the input image the chain was conditioned on")
    .requiredOption("--prompt <text>", "the instruction")
    .requiredOption("--trajectory <file>", "safetensors from `edit --save-trajectory`")
    .option("--text-guidance <s>", "text guidance", num("--text-guidance"), 7.5)
    .option("--image-guidance <s>", "image guidance", num("--image-guidance"), 1.5)
    .option("--eta <eta>", "DDIM eta of the chain", num("--eta", 0), 1)
    .option("--json", "print JSON")
    .action(action(async (o: ScoreFlags) => await scoreCommand(o)));
}
