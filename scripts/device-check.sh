#!/bin/bash
# The one prepared run for a lent GPU machine (no network there): set-up from carried files, doctor,
# the kernel tests, the benchmarks (kernels, with a cuBLAS fp32 reference timed in the same run; the
# SD-1.5 UNet and train step at 512 px), then a few tiny-model training runs side by side.
# Everything lands in OUTDIR/all.tgz; a summary goes to stdout.
#
# Prepare on the development machine (x86-64), in the repo root: bash scripts/device-prepare.sh, which
# fills (and lists in .git/info/exclude)
#   .gl/      the .debs of the Vulkan loader and the glvnd libraries the NVIDIA ICD loads (libvulkan1
#             libglvnd0 libegl1 libgl1 libglx0 libopengl0 libgles2; apt-get download from that
#             machine's own apt sources)
#   .devrun/  bun.xz (xz of node_modules/bun/bin/bun.exe) and nm.tar.xz (node_modules without bun,
#             deno, typescript and the other platforms' Dawn builds)
# and carry both. Usage there: bash scripts/device-check.sh "$OUT"
set -u
OUTDIR=${1:?usage: device-check.sh OUTDIR}
R=/tmp/devcheck
rm -rf "$R" && mkdir -p "$R"
step() { echo "== $(date +%T) $*"; }
# Every step's timeout is cut to what is left of BUDGET seconds (default 520), keeping 20 s to pack.
DEADLINE=$(( $(date +%s) + ${BUDGET:-520} ))
# STEPS: which parts to run (default all): tests cublas kernels unet train runs
want() { [[ " ${STEPS:-tests cublas kernels unet train runs} " == *" $1 "* ]]; }
tmo() { local t=$1 l=$(( DEADLINE - $(date +%s) - 20 )); (( l < t )) && t=$l; (( t < 1 )) && t=1; echo "$t"; }

step set-up and doctor
source scripts/device-setup.sh || { tar -C "$R" -czf "$OUTDIR/all.tgz" .; exit 2; }
# What the adapter adds with Dawn's unsafe APIs (the subgroup-matrix feature and its configurations).
# Dawn blocklists shader-f16 on NVIDIA's Vulkan driver (driver bugs; the 2026-12-04 H200 doctor
# listed "shader-f16 no"); its toggle vulkan_enable_f16_on_nvidia lifts that, at the driver's risk.
RL4PIX_DAWN_FLAGS=enable-dawn-features=allow_unsafe_apis,vulkan_enable_f16_on_nvidia timeout $(tmo 60) bun cli.ts doctor > "$R/doctor-unsafe.txt" 2>&1
echo "doctor with allow_unsafe_apis,vulkan_enable_f16_on_nvidia rc=$?"
grep -E "^(dawn flags|wanted|subgroups|sg matrix|device) " "$R/doctor-unsafe.txt"

if want tests; then
step kernel tests
# TESTS: the test files (default: every kernel family's; the golden checks need ../shared, absent there).
# tests/matmul_f16.test.ts and tests/elementwise_f16.test.ts (f16 activations) need shader-f16, which
# the H200's Dawn does not offer by default (see above): add them by TESTS= (with RL4PIX_DAWN_FLAGS
# set as above) where a doctor lists shader-f16.
TESTS=${TESTS:-tests/matmul.test.ts tests/conv.test.ts tests/matmul_splitk.test.ts tests/conv_splitk.test.ts tests/attention.test.ts tests/norm.test.ts tests/elementwise.test.ts \
  tests/layout.test.ts tests/embedding.test.ts tests/random.test.ts tests/optim.test.ts tests/cast.test.ts tests/runtime.test.ts \
  tests/adapter_report.test.ts tests/torch_cuda.test.ts}
# shellcheck disable=SC2086
timeout $(tmo 150) bun test --timeout 120000 $TESTS > "$R/tests.txt" 2>&1
echo "tests rc=$?"
grep -E "^\(fail\)|^ *[0-9]+ (pass|fail)|^Ran" "$R/tests.txt"
fi

if want cublas; then
step cuBLAS fp32 reference
timeout $(tmo 120) python3 - > "$R/cublas.json" 2>"$R/cublas.err" <<'EOF'
import json, torch
torch.backends.cuda.matmul.allow_tf32 = False
out = {"device": torch.cuda.get_device_name(0), "sm_count": torch.cuda.get_device_properties(0).multi_processor_count, "rows": []}
for m, k, n in [(1024, 1024, 1024), (4096, 320, 320), (4096, 320, 1280), (4096, 1280, 320), (77, 768, 768), (4096, 4096, 4096)]:
    a = torch.randn(m, k, device="cuda"); b = torch.randn(k, n, device="cuda")
    for _ in range(3): a @ b
    torch.cuda.synchronize()
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    reps = 50
    s.record()
    for _ in range(reps): a @ b
    e.record(); torch.cuda.synchronize()
    ms = s.elapsed_time(e) / reps
    out["rows"].append({"shape": f"{m}x{k}x{n}", "ms": ms, "gflops": 2 * m * k * n / ms / 1e6})
print(json.dumps(out))
EOF
cat "$R/cublas.json"
fi

if want kernels; then
# bench all includes matmul's and conv's split-K rows (on vs off at the SD UNet's 16x16 / 8x8
# 1280-channel shapes, each "on" row with its speed ratio): printed apart below.
step bench kernels
timeout $(tmo 150) bun cli.ts bench all --json > "$R/bench-kernels.json" 2> "$R/bench-kernels.err"
echo "bench rc=$?"
timeout $(tmo 60) bun cli.ts bench matmul --no-torch --json > "$R/bench-matmul-2.json" 2>&1
echo "bench matmul again rc=$?"
fi

if want unet; then
step "bench unet 512, with PyTorch CUDA fp32 (TF32 off), fp16, fp16 + SDPA on the same GPU"
timeout $(tmo 150) bun cli.ts bench unet --config sd15 --resolution 512 --batch 1 --reps 3 --json > "$R/bench-unet-512-b1.json" 2>&1
echo "unet b1 rc=$?"
timeout $(tmo 150) bun cli.ts bench unet --config sd15 --resolution 512 --batch 3 --reps 3 --json > "$R/bench-unet-512-b3.json" 2>&1
echo "unet b3 rc=$?"
fi

if want train; then
step bench train-step 512
timeout $(tmo 200) bun cli.ts bench train-step --config sd15 --resolution 512 --checkpointing both --reps 2 --json > "$R/bench-train-512.json" 2>&1
echo "train-step rc=$?"
fi
for f in "$R"/bench-*.json; do
  echo "-- $(basename "$f")"
  grep -E '"(name|shape|ms|gflops|gbps|peakBytes|note)"' "$f" | tr -s ' ' | paste -sd' ' | sed 's/"name"/\n"name"/g' | cut -c1-300
done

step split-K on vs off
bun -e '
let j; try { j = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")); } catch { process.exit(0); }
for (const r of j.rows ?? []) if (/split-K on$/.test(r.name)) console.log([r.name, r.shape, Number(r.ms).toFixed(3) + " ms", r.note ?? ""].join(" | "));
' "$R/bench-kernels.json"

step PyTorch rows on this GPU, next to ours
bun -e '
for (const f of process.argv.slice(1)) {
  let j; try { j = JSON.parse(require("fs").readFileSync(f, "utf8")); } catch { continue; }
  for (const r of j.rows ?? []) if (/PyTorch|^matmul$|^unet forward$/.test(r.name))
    console.log([f.replace(/.*\//, ""), r.name, r.shape, r.ms === null ? "-" : Number(r.ms).toFixed(2) + " ms", r.gflops ? r.gflops.toFixed(0) + " GFLOP/s" : "", r.note ?? ""].join(" | "));
}' "$R"/bench-kernels.json "$R"/bench-unet-512-b1.json "$R"/bench-unet-512-b3.json

if want runs; then
step tiny training runs, side by side
mkdir -p "$R/runs"
run() { # name, extra --set pairs
  local name=$1; shift
  local sets=()
  for kv in "$@"; do sets+=(--set "$kv"); done
  timeout $(tmo 170) bun cli.ts train --config configs/tiny-cpu.json --out "$R/runs/$name" --set num_epochs=120 --set save_freq=1000 "${sets[@]}" > "$R/runs/$name.log" 2>&1
}
run demo &
run batch32 sample.batch_size=32 &
run lr1e-2 train.learning_rate=0.01 &
run steps3 sample.num_steps=3 sample.batch_size=16 &
run inner4 train.num_inner_epochs=4 &
wait
for d in "$R"/runs/*/; do
  n=$(basename "$d")
  echo "-- $n: $(wc -l < "$d/metrics.jsonl" 2>/dev/null) epochs"
  bun -e 'const l=require("fs").readFileSync(process.argv[1],"utf8").trim().split("\n").map(JSON.parse);const k=Object.keys(l[0]).find(x=>/cos/.test(x))??"reward_mean";const m=(a)=>a.reduce((x,y)=>x+y,0)/a.length;const q=Math.max(1,Math.floor(l.length/4));console.log(k,"first quarter",m(l.slice(0,q).map(r=>r[k])).toFixed(4),"last quarter",m(l.slice(-q).map(r=>r[k])).toFixed(4))' "$d/metrics.jsonl" 2>&1 | head -2
done

fi

step pack
tar -C "$R" -czf "$OUTDIR/all.tgz" .
ls -la "$OUTDIR"
