// `rl4pix edit IMAGE "INSTRUCTION" -o OUT.png`: one instruction edit.
import type { Command } from "commander";
import { existsSync } from "node:fs";
import { dirname } from "node:path";
import { readImage, resize, writePng } from "../io/image.ts";
import { openSafetensors } from "../io/safetensors.ts";
import { Tensor } from "../tensor/tensor.ts";
import { UserError } from "../errors.ts";
import { editImage, writeTrajectory } from "../diffusion/edit.ts";
import { attentionOverlay } from "../diffusion/images.ts";
import { disposeTrajectory } from "../diffusion/pipeline.ts";
import { addModelFlags, loadModelsFromFlags, type ModelFlags } from "./model_args.ts";
import { progressBar } from "./progress.ts";
import { action, num } from "./run.ts";

interface EditFlags extends ModelFlags {
  output: string;
  steps: number;
  textGuidance: number;
  imageGuidance: number;
  eta: number;
  seed: number;
  resolution?: number;
  latents?: string;
  saveTrajectory?: string;
  attentionMap?: string;
  attentionLayers: string;
}

function checkOutputPath(flag: string, path: string): void {
  const dir = dirname(path);
  if (!existsSync(dir)) throw new UserError(`${flag}: folder ${dir} does not exist`);
}

/** The `--latents` file's initial noise, read and checked on the host (before the GPU starts). */
function readLatents(path: string): { data: Float32Array; shape: number[] } {
  const f = openSafetensors(path);
  if (!f.has("latents")) throw new UserError(`${path}: no tensor named 'latents'`);
  const shape = f.info("latents").shape;
  if (shape.length !== 4 || shape[0] !== 1) throw new UserError(`${path}: 'latents' has shape [${shape.join(",")}], expected [1,4,h,w]`);
  return { data: f.toF32("latents"), shape };
}

export async function editCommand(image: string, instruction: string, o: EditFlags): Promise<void> {
  if (!instruction.trim()) throw new UserError("INSTRUCTION is empty");
  checkOutputPath("-o", o.output);
  if (o.saveTrajectory) checkOutputPath("--save-trajectory", o.saveTrajectory);
  if (o.attentionMap) checkOutputPath("--attention-map", o.attentionMap);
  if (o.saveTrajectory && o.eta === 0) console.error("rl4pix: note: --eta 0 gives no log-probs in the trajectory (deterministic DDIM)");
  const input = await readImage(image);
  const noise = o.latents ? readLatents(o.latents) : null;
  const models = await loadModelsFromFlags(o); // checks the model flags, then starts the GPU
  const latents = noise ? Tensor.from(noise.data, noise.shape, "f32", "latents").keep() : undefined;
  const bar = progressBar("edit", o.steps);
  const r = await editImage(models, input, instruction, {
    steps: o.steps,
    guidance: { text: o.textGuidance, image: o.imageGuidance },
    eta: o.eta,
    seed: o.seed,
    resolution: o.resolution,
    latents,
    attentionLayers: o.attentionMap ? o.attentionLayers : undefined,
    onStep: (i) => bar.update(i + 1),
  }, Boolean(o.saveTrajectory));
  bar.stop();
  if (r.truncated) console.error("rl4pix: warning: the instruction is longer than 77 tokens and was truncated (as diffusers does)");
  await writePng(o.output, r.image);
  if (o.attentionMap && r.attention) {
    const rgb = { width: input.width, height: input.height, channels: 3, data: input.data.subarray(0, 3 * input.width * input.height) };
    const inputSized = resize(rgb, r.image.width, r.image.height, "bilinear");
    await writePng(o.attentionMap, attentionOverlay(inputSized, r.attention.map, r.attention.width, r.attention.height));
  }
  if (o.saveTrajectory && r.trajectory) {
    await writeTrajectory(o.saveTrajectory, r.trajectory, {
      instruction,
      seed: String(o.seed),
      eta: String(o.eta),
      text_guidance: String(o.textGuidance),
      image_guidance: String(o.imageGuidance),
    });
    disposeTrajectory(r.trajectory);
  }
  console.log(o.output);
}

export function register(program: Command): void {
  addModelFlags(
    program
      .command("edit")
      .description("edit IMAGE (PNG or JPEG) following INSTRUCTION; writes a PNG")
      .argument("<image>", "input image")
      .argument("<instruction>", "the edit instruction, e.g. \"make it snowy\"")
      .requiredOption("-o, --output <png>", "output PNG"),
  )
    .option("--steps <n>", "DDIM steps", num("--steps", 1, 1000, true), 50)
    .option("--text-guidance <s>", "text guidance scale s_T", num("--text-guidance"), 7.5)
    .option("--image-guidance <s>", "image guidance scale s_I", num("--image-guidance"), 1.5)
    .option("--eta <eta>", "DDIM eta (0 = deterministic)", num("--eta", 0), 0)
    .option("--seed <n>", "random seed", num("--seed", 0, 2 ** 32 - 1, true), 0)
    .option("--resolution <px>", "scale the longer side to this many pixels first", num("--resolution", 8, 4096, true))
    .option("--latents <file>", "safetensors with tensor 'latents' [1,4,h,w]: the initial noise")
    .option("--save-trajectory <file>", "write the sampled chain (latents, timesteps, log_probs) as safetensors")
    .option("--attention-map <png>", "write the instruction's cross-attention map over the input")
    .option("--attention-layers <spec>", "layers for --attention-map: auto (latent/4 maps, else the closest size: as the reward's default), res:N, down, mid, up, or module paths", "auto")
    .action(action(async (image: string, instruction: string, o: EditFlags) => await editCommand(image, instruction, o)));
}
