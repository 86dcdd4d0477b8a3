// PyTorch rows on the same GPU for `bench matmul` / `bench unet`, checked without CUDA: the generated
// scripts are valid Python, the interpreter search reports why there are no rows (one row), canned
// outputs become rows with GFLOP/s and ratios, and on this machine the bench prints the CUDA rows or
// exactly one line saying they are absent.
import { describe, expect, test } from "bun:test";
import { spawnSync } from "node:child_process";
import { chmodSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  absentRow,
  matmulScript,
  matmulTorchRows,
  parseTorchOutput,
  runTorch,
  unetArgs,
  unetScript,
  unetTorchRows,
} from "../src/bench/torch_cuda.ts";
import { torchMatmulRows } from "../src/bench/matmul.ts";
import { modelShape } from "../src/bench/model.ts";
import { cliRunner } from "./cli_run.ts";

const work = mkdtempSync(join(tmpdir(), "rl4pix-torch-cuda-"));

/** An executable that ignores its arguments and prints `stdout` (exit `code`, `stderr`). */
function fakePython(name: string, stdout: string, code = 0, stderr = ""): string {
  const f = join(work, name);
  writeFileSync(`${f}.out`, stdout);
  writeFileSync(`${f}.err`, stderr);
  writeFileSync(f, `#!/bin/sh\ncat '${f}.out'\ncat '${f}.err' >&2\nexit ${code}\n`);
  chmodSync(f, 0o755);
  return f;
}

describe("the generated PyTorch scripts", () => {
  test("name the settings each row claims (CI has no Python: device-check.sh runs them for real)", () => {
    // TF32 off for products and convolutions, every UNet variant's attention switch present.
    expect(matmulScript()).toContain("torch.backends.cuda.matmul.allow_tf32 = False");
    expect(unetScript()).toContain("torch.backends.cudnn.allow_tf32 = False");
    expect(unetScript()).toContain('SDPA = v == "fp16+sdpa"');
  });

  test("the UNet argument carries the model config, the shape and all three variants", () => {
    const s = modelShape({ config: "sd15", resolution: 512, batch: 3 });
    const a = unetArgs(s.unet, s.latent, s.batch, s.tokens, 3);
    expect(a).toMatchObject({ device: "cuda", latent: 64, batch: 3, tokens: 77, cin: 8, cross: 768, boc: [320, 640, 1280, 1280], variants: ["fp32", "fp16", "fp16+sdpa"] });
  });
});

describe("finding a PyTorch with CUDA", () => {
  test("each failure says why, the last candidate's reason wins, the first good output is used", () => {
    expect(runTorch("x", {}, [join(work, "missing-python")])).toEqual({ ok: false, absent: `no ${join(work, "missing-python")}` });
    const noTorch = fakePython("no-torch", "", 1, "ModuleNotFoundError: No module named 'torch'");
    expect(runTorch("x", {}, [noTorch])).toEqual({ ok: false, absent: `no torch in ${noTorch}` });
    const noCuda = fakePython("no-cuda", '{"absent": "torch 1.13.1 sees no CUDA device"}');
    expect(runTorch("x", {}, [noTorch, noCuda])).toEqual({ ok: false, absent: `${noCuda}: torch 1.13.1 sees no CUDA device` });
    const good = fakePython("good", '{"device": "H200", "torch": "2.11", "rows": [{"shape": [2, 3, 4], "variant": "fp16", "ms": 1}]}');
    const r = runTorch("x", {}, [noCuda, good, noTorch]);
    expect(r.ok).toBe(true);
    expect(r.ok && r.out.device).toBe("H200");
    expect(parseTorchOutput("garbage")).toEqual({ ok: false, absent: "the PyTorch script printed no result (garbage)" });
  });

  test("matmul rows: GFLOP/s from torch's time and our time over torch's for the same shape", () => {
    const out = { device: "NVIDIA H200", torch: "2.11.0", rows: [
      { shape: [1024, 1024, 1024] as [number, number, number], variant: "fp32" as const, ms: 0.2 },
      { shape: [1024, 1024, 1024] as [number, number, number], variant: "fp16" as const, ms: 0.05 },
      { shape: [77, 768, 768] as [number, number, number], variant: "fp16" as const, ms: 0.01 },
    ] };
    const rows = matmulTorchRows(out, new Map([["1024x1024x1024", 0.5]]));
    expect(rows.map((r) => r.name)).toEqual(["matmul (PyTorch CUDA fp32, TF32 off)", "matmul (PyTorch CUDA fp16)", "matmul (PyTorch CUDA fp16)"]);
    expect(rows[0].gflops).toBeCloseTo(2 * 1024 ** 3 / 0.2 / 1e6, 6);
    expect(rows[0].note).toBe("torch 2.11.0 on NVIDIA H200; ours / torch 2.50");
    expect(rows[1].note).toBe("torch 2.11.0 on NVIDIA H200; ours / torch 10.00");
    expect(rows[2].note).toBe("torch 2.11.0 on NVIDIA H200"); // no own row for that shape: no ratio
    const unet = unetTorchRows({ ...out, rows: [{ variant: "fp32", ms: 108 }, { variant: "fp16+sdpa", ms: 18.6 }] }, "sd15 512px b3", 381);
    expect(unet.map((r) => [r.name, r.ms, r.note])).toEqual([
      ["unet forward (PyTorch CUDA fp32, TF32 off)", 108, "torch 2.11.0 on NVIDIA H200; ours / torch 3.53"],
      ["unet forward (PyTorch CUDA fp16 + SDPA)", 18.6, "torch 2.11.0 on NVIDIA H200; ours / torch 20.48"],
    ]);
  });

  test("torchMatmulRows: one absent row, or every shape and variant with our ratio", () => {
    const shapes: [number, number, number][] = [[64, 32, 16]];
    const ours = [{ name: "matmul", shape: "64x32x16", ms: 2 }];
    expect(torchMatmulRows(shapes, ours, () => ({ ok: false, absent: "no torch in python3" }))).toEqual([absentRow("matmul", "no torch in python3")]);
    let seen: Record<string, unknown> = {};
    const rows = torchMatmulRows(shapes, ours, (_s, arg) => {
      seen = arg;
      return { ok: true, out: { device: "d", torch: "t", rows: [{ shape: [64, 32, 16], variant: "fp32", ms: 1 }, { shape: [64, 32, 16], variant: "fp16", ms: 0.5 }] } };
    });
    expect(seen).toMatchObject({ device: "cuda", shapes, variants: ["fp32", "fp16"] });
    expect(rows.map((r) => r.note)).toEqual(["torch t on d; ours / torch 2.00", "torch t on d; ours / torch 4.00"]);
  });
});

describe("bench on this machine", () => {
  const { run } = cliRunner(join(work, "cache"));
  test("bench unet prints the PyTorch CUDA rows, or one line saying they are absent and why", () => {
    const r = run("bench", "unet", "--config", "tiny", "--resolution", "64", "--batch", "1", "--reps", "1");
    expect(r.code).toBe(0);
    const lines = r.out.split("\n").filter((l) => l.includes("PyTorch CUDA"));
    const cuda = spawnSync("python3", ["-c", "import torch; assert torch.cuda.is_available()"]).status === 0;
    if (cuda) expect(lines.length).toBe(3);
    else {
      expect(lines).toHaveLength(1);
      expect(lines[0]).toMatch(/^unet forward \(PyTorch CUDA\) +- +NaN .*absent: (no torch in \S+|\S+: torch \S+ sees no CUDA device|no \S+)$/);
    }
  });
});
