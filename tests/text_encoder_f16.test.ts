// The CLIP text encoder on f16 activations (`activationDtype = "f16"`, what `--variant fp16` and
// `mixed_precision: "fp16"` select where the adapter has shader-f16) against transformers' float32
// goldens of the tiny checkpoint (shared/goldens) and the f32 path, with f32 weights and with the
// matrices stored f16 (what mixed precision loads).
import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import { loadPipelineConfig, resolveWeightFiles } from "../src/io/diffusers.ts";
import { CLIPTextModel } from "../src/nn/clip_text.ts";
import { loadWeights } from "../src/nn/load.ts";
import { disposeModels, encodePrompts, loadIP2P } from "../src/diffusion/pipeline.ts";
import { noGrad } from "../src/tensor/index.ts";
import { gpu } from "../src/gpu/device.ts";
import { maxAbsDiff, useGpu } from "./helpers.ts";
import { TINY_IP2P, goldenF32, goldenInts } from "./goldens.ts";
import { countF16Stores, expectF16Close, f16Tolerance } from "./f16_tolerance.ts";

useGpu();
const C = "components.safetensors";
const ids = () => Int32Array.from(goldenInts(C, "te.input_ids")); // [3, 77]

function loadTextEncoder(f16Matrices: boolean): CLIPTextModel {
  const te = new CLIPTextModel(loadPipelineConfig(TINY_IP2P).textEncoder);
  loadWeights(te, resolveWeightFiles(join(TINY_IP2P, "text_encoder")), { castF16: f16Matrices, ignore: CLIPTextModel.IGNORED_KEYS });
  return te;
}

test("this adapter reads and writes f16 activations (every test below needs shader-f16)", () => {
  expect(gpu().hasF16).toBe(true);
});

describe("CLIPTextModel on f16 activations", () => {
  for (const f16Matrices of [false, true]) {
    const weights = f16Matrices ? "f16 matrices" : "f32 weights";
    test(`${weights}: last_hidden_state and every hidden state stay f32 and match transformers and the f32 path`, async () => {
      const te = loadTextEncoder(f16Matrices);
      const f32 = await noGrad(() => te.forward(ids(), 3)).lastHiddenState.read();
      te.activationDtype = "f16";
      const { result: out, stores, labels } = countF16Stores(() => noGrad(() => te.forward(ids(), 3, { hiddenStates: true })));
      // it computed in f16: the embeddings' sum, layer norms, projections, attention, the MLP
      for (const op of ["add", "layerNorm", "linear", "attention", "quickGelu"]) expect([...labels.keys()].some((l) => l.startsWith(op))).toBe(true);
      expect(out.lastHiddenState.dtype).toBe("f32");
      for (const h of out.hiddenStates!) expect(h.dtype).toBe("f32");
      // Tolerance (f16_tolerance.ts): the run's f16 stores (counted: 12 per layer of 5, the
      // embeddings' two casts and sum, the final LayerNorm: 64, every parallel branch included, so an
      // over-count of the roundings on any one path) plus, with f16 matrices, one rounding-sized error per weighted op (6 per layer:
      // each weight is off by at most 2^-11 relative, so a product by at most 2^-11 of sum |w x|).
      const f16Weights = te.namedParameters().filter(([, p]) => p.t.dtype === "f16").length;
      const tol = f16Tolerance(stores + f16Weights);
      const last = await out.lastHiddenState.read();
      expect(maxAbsDiff(last, f32)).toBeGreaterThan(1e-5);
      const errs = [
        expectF16Close(last, f32, tol, "last_hidden_state vs the f32 path"),
        expectF16Close(last, goldenF32(C, "te.last_hidden_state"), tol, "last_hidden_state vs transformers"),
      ];
      for (let i = 0; i <= 5; i++) {
        errs.push(expectF16Close(await out.hiddenStates![i].read(), goldenF32(C, `te.hidden_states.${i}`), tol, `hidden_states.${i} vs transformers`));
      }
      console.log(`text encoder, ${weights}: ${stores} f16 stores, tolerance ${tol.toExponential(2)}, relative RMS errors ${errs.map((e) => e.toExponential(2)).join(" ")}`);
      te.disposeParameters();
    });
  }
});

describe("loadIP2P chooses the text encoder's activations", () => {
  test("variant fp16 and mixed precision fp16 give f16 activations, the default f32; prompt embeddings stay f32", async () => {
    for (const [opts, want] of [[{ variant: "fp16" }, "f16"], [{ mixedPrecision: "fp16" as const }, "f16"], [{}, "f32"]] as const) {
      const m = loadIP2P(TINY_IP2P, opts);
      expect(m.textEncoder.activationDtype).toBe(want);
      const p = encodePrompts(m, ["turn the sky purple"]);
      expect(p.embeds.dtype).toBe("f32");
      p.embeds.dispose();
      disposeModels(m);
    }
  });
});
