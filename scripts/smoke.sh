#!/bin/sh
# `npm run smoke`: the GPU smoke test on whatever adapter exists (lavapipe in CI, a real GPU elsewhere):
# doctor, one edit of a synthetic image with the embedded model, and re-scoring its trajectory.
set -eu
cd "$(dirname "$0")/.."
RL4PIX="${RL4PIX:-node_modules/.bin/bun cli.ts}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
$RL4PIX doctor
$RL4PIX synth "$work/data" --n 1 --size 64 >/dev/null
img="$work/data/images/$(ls "$work/data/images" | grep source | head -1)"
$RL4PIX edit "$img" "add a red circle" -o "$work/out.png" --steps 4 --eta 1 --seed 1 \
  --save-trajectory "$work/traj.safetensors" --attention-map "$work/att.png"
$RL4PIX score-trajectory --image "$img" --prompt "add a red circle" --trajectory "$work/traj.safetensors" --eta 1
echo "smoke: ok"
