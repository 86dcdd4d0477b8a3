// Model forwards against diffusers / transformers goldens of the tiny checkpoint (shared/goldens).
import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import { loadPipelineConfig, resolveWeightFiles } from "../src/io/diffusers.ts";
import { CLIPTextModel } from "../src/nn/clip_text.ts";
import { AutoencoderKL } from "../src/nn/vae.ts";
import { UNet2DConditionModel } from "../src/nn/unet.ts";
import { loadWeights } from "../src/nn/load.ts";
import { Tensor, noGrad, scope } from "../src/tensor/index.ts";
import { expectClose, maxAbsDiff, useGpu } from "./helpers.ts";
import { TINY_IP2P, goldenF32, goldenInts, goldenShape } from "./goldens.ts";

useGpu();
const C = "components.safetensors";
const cfg = () => loadPipelineConfig(TINY_IP2P);
const g = (name: string) => Tensor.from(goldenF32(C, name), goldenShape(C, name));

describe("CLIP text encoder", () => {
  test("last_hidden_state and every hidden state match transformers", async () => {
    const te = new CLIPTextModel(cfg().textEncoder);
    loadWeights(te, resolveWeightFiles(join(TINY_IP2P, "text_encoder")), { ignore: CLIPTextModel.IGNORED_KEYS });
    const ids = Int32Array.from(goldenInts(C, "te.input_ids"));
    await noGrad(async () => {
      const out = te.forward(ids, 3, { hiddenStates: true });
      expectClose(await out.lastHiddenState.read(), goldenF32(C, "te.last_hidden_state"), { atol: 1e-5 }, "last_hidden_state");
      for (let i = 0; i <= 5; i++) {
        expectClose(await out.hiddenStates![i].read(), goldenF32(C, `te.hidden_states.${i}`), { atol: 1e-5 }, `hidden_states.${i}`);
      }
    });
    te.disposeParameters();
  });
});

describe("VAE", () => {
  const load = () => {
    const vae = new AutoencoderKL(cfg().vae);
    loadWeights(vae, resolveWeightFiles(join(TINY_IP2P, "vae")));
    return vae;
  };
  test("encode: moments, mean, logvar", async () => {
    const vae = load();
    await noGrad(async () => {
      const d = vae.encode(g("vae.encode.image"));
      expectClose(await d.moments.read(), goldenF32(C, "vae.encode.moments"), { atol: 2e-5 }, "moments");
      expectClose(await d.mean.read(), goldenF32(C, "vae.encode.mean"), { atol: 2e-5 }, "mean");
      expectClose(await d.logvar.read(), goldenF32(C, "vae.encode.logvar"), { atol: 2e-5 }, "logvar");
    });
    vae.disposeParameters();
  });
  test("decode (raw, no scaling)", async () => {
    const vae = load();
    await noGrad(async () => {
      const y = vae.decode(g("vae.decode.latents"));
      expectClose(await y.read(), goldenF32(C, "vae.decode.sample"), { atol: 2e-5 }, "decode");
    });
    vae.disposeParameters();
  });
});

describe("UNet", () => {
  const load = (variant?: string) => {
    const unet = new UNet2DConditionModel(cfg().unet);
    loadWeights(unet, resolveWeightFiles(join(TINY_IP2P, "unet"), { variant }), { keepF16: variant === "fp16" });
    return unet;
  };
  test("forward at t = 999, 500, 1 and per-sample timesteps", async () => {
    const unet = load();
    const sample = g("unet.sample");
    const ehs = g("unet.encoder_hidden_states");
    await noGrad(async () => {
      for (const t of [999, 500, 1]) {
        const out = scope(() => unet.forward(sample, [t, t, t], ehs));
        expectClose(await out.read(), goldenF32(C, `unet.t${t}.out`), { atol: 1e-4 }, `t=${t}`);
        out.dispose();
      }
      const tv = goldenInts(C, "unet.tvec.timesteps");
      expectClose(await unet.forward(sample, tv, ehs).read(), goldenF32(C, "unet.tvec.out"), { atol: 1e-4 }, "per-sample t");
    });
    unet.disposeParameters();
  });
  test("intermediates of the t = 500 forward", async () => {
    const unet = load();
    const seen = new Map<string, Tensor>();
    unet.onIntermediate = (path, t) => seen.set(path, t);
    await noGrad(async () => {
      unet.forward(g("unet.sample"), [500, 500, 500], g("unet.encoder_hidden_states"));
      for (const name of ["time_proj", "time_embedding", "conv_in", "down_blocks.0", "down_blocks.1", "mid_block", "up_blocks.0", "up_blocks.1", "conv_norm_out", "conv_out"]) {
        const t = seen.get(name);
        expect(t).toBeDefined();
        expectClose(await t!.read(), goldenF32(C, `unet.t500.intermediate.${name}`), { atol: 1e-4 }, name);
      }
    });
    unet.disposeParameters();
  });
  test("fp16-variant weights (kept f16 on the GPU where possible)", async () => {
    const unet = load("fp16");
    const out = noGrad(() => unet.forward(g("unet.sample"), [500, 500, 500], g("unet.encoder_hidden_states")));
    const got = await out.read();
    expectClose(got, goldenF32(C, "unet_fp16weights.t500.out"), { atol: 1e-4 }, "fp16 weights");
    // and it really is a different model from the fp32 one
    expect(maxAbsDiff(got, goldenF32(C, "unet.t500.out"))).toBeGreaterThan(1e-4);
    unet.disposeParameters();
  });
});

describe("cross-attention capture", () => {
  test("head-averaged attn2 probabilities of every layer match diffusers' (t = 500)", async () => {
    const { setAttentionCaptureHook } = await import("../src/nn/attention.ts");
    const ops = await import("../src/tensor/ops/index.ts");
    const unet = new UNet2DConditionModel(cfg().unet);
    loadWeights(unet, resolveWeightFiles(join(TINY_IP2P, "unet")));
    const maps = new Map<string, Tensor>();
    setAttentionCaptureHook({
      request(path, batch, queries, keys) {
        if (!path.endsWith("attn2")) return [];
        const acc = ops.zeros([batch, queries, keys]).keep();
        maps.set(path, acc);
        return [{ rows: [0, batch], cols: { start: 0, count: keys }, out: acc, weight: 1, mode: "map" }];
      },
    });
    try {
      noGrad(() => unet.forward(g("unet.sample"), [500, 500, 500], g("unet.encoder_hidden_states")));
    } finally {
      setAttentionCaptureHook(null);
    }
    expect(maps.size).toBe(6);
    for (const [path, t] of maps) {
      expectClose(await t.read(), goldenF32(C, `attn2.${path}`), { atol: 1e-6 }, path);
      t.dispose();
    }
    unet.disposeParameters();
  });
});
