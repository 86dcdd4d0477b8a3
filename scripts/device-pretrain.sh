#!/bin/bash
# Pretraining runs side by side on a lent GPU machine (no network there), each an ordinary
# `rl4pix pretrain` command, stopped with --max-seconds so that all of them checkpoint before the
# lease's command limit; the results come back as at most 8 files (the lease's limit):
#   NAME.tgz       per run: its log, settings.json, each stage's metrics.jsonl and done.json, and
#                  model/ when the editor finished, else the newest checkpoint of each stage it trained
#   NAME-ckpt.tgz  the newest editor checkpoint (weights + AdamW moments: resumable exactly) of the
#                  two runs with the lowest held-out L1 outside the mask, and of no other
#   logs.tgz       nvidia-smi, doctor, every run's log
# Prepare and carry as for scripts/device-check.sh (scripts/device-prepare.sh: .gl .devrun).
# Usage there: bash scripts/device-pretrain.sh "$OUT"
#   RUNS    lines "NAME|START|FLAGS": START is a run folder to copy and continue (the flags may change
#           the settings of stages it has not started) or "-" for a new run
#   BUDGET  seconds for the whole script (default 540); PACK seconds kept for packing (default 50)
#   LEARN   then the paired PPO experiment (scripts/learning_evidence.ts) on a model: a run's NAME
#           (its finished model/) or a model folder (e.g. weights/editor-tiny), with LEARN_FLAGS
#           (default "--seeds 0,1,2 --epochs 12"), in LEARN_SECONDS kept from BUDGET (default 240);
#           its log, results.json and every PPO run's metrics.jsonl come back as learn.tgz
#           (RUNS="" runs the experiment alone)
# SKIP_SETUP=1 runs it here on lavapipe (for trying the script with short RUNS).
set -u
OUTDIR=${1:?usage: device-pretrain.sh OUTDIR}
R=/tmp/devpretrain
rm -rf "$R" && mkdir -p "$R/runs"
START=$(date +%s)
BUDGET=${BUDGET:-540}
step() { echo "== $(date +%T) $*"; }
pack_logs() { tar -C "$R" -czf "$OUTDIR/logs.tgz" --exclude=runs/*/* . ; }

step set-up and doctor
if [ "${SKIP_SETUP:-}" = 1 ]; then
  export PATH=$PWD/node_modules/.bin:$PATH
else
  source scripts/device-setup.sh || { pack_logs; exit 2; }
fi

# Default: continue checkpoints/editor-tiny's editor stage (trained from its 4000-step text-to-image
# stage, whose longer training is what grounds the instruction's attention, learning notes E17.3/E20)
# to 3000 steps; the decoder stage (not in that checkpoint) runs first and depends on the VAE only.
E="--vae-steps 1000 --decoder-steps 6000 --decoder-lr 1e-3 --editor-batch 64 --editor-lr 1e-3 --editor-loss v --eval-every 500"
RUNS=${RUNS-"editor-3000|checkpoints/editor-tiny|$E --t2i-steps 4000 --editor-steps 3000"}
LEARN=${LEARN:-}
LEARN_SECONDS=$([ -n "$LEARN" ] && echo "${LEARN_SECONDS:-240}" || echo 0)
MAXS=$(( START + BUDGET - ${PACK:-50} - LEARN_SECONDS - $(date +%s) ))
step "runs (each stops after $MAXS s)"
names=()
while IFS='|' read -r name from flags; do
  [ -z "$name" ] && continue
  names+=("$name")
  d=$R/runs/$name
  if [ "$from" != - ]; then
    mkdir -p "$d" && cp -r "$from"/. "$d"/ && rm -f "$d"/*.jsonl "$d/README.md"
    # each copied stage remembers its newest checkpoint: only what trains past it here comes back
    for st in vae decoder t2i editor; do [ -d "$d/$st" ] && (cd "$d" && ls -d $st/ckpt-* 2>/dev/null | tail -1) > "$d/$st/copied"; done
  fi
  # shellcheck disable=SC2086
  ( bun cli.ts pretrain --out "$d" $flags --max-seconds "$MAXS" > "$R/runs/$name.log" 2>&1; echo "rc=$?" >> "$R/runs/$name.log" ) &
done <<< "$RUNS"
wait

if [ -n "$LEARN" ]; then
  model=$LEARN
  [ -d "$R/runs/$LEARN/model" ] && model=$R/runs/$LEARN/model
  left=$(( START + BUDGET - ${PACK:-50} - $(date +%s) ))
  step "learning evidence on $model ($left s)"
  # shellcheck disable=SC2086
  timeout "$left" bun scripts/learning_evidence.ts --model "$model" --out "$R/learn" ${LEARN_FLAGS:---seeds 0,1,2 --epochs 12} > "$R/learn.log" 2>&1
  echo "rc=$?" >> "$R/learn.log"
  cat "$R/learn.log"
  (cd "$R" && tar -czf "$OUTDIR/learn.tgz" learn.log $(cd "$R" && ls learn/results.json learn/runs/*/metrics.jsonl 2>/dev/null))
fi

step results
for n in "${names[@]}"; do
  echo "-- $n: $(tail -1 "$R/runs/$n.log")"
  for st in vae decoder t2i editor; do
    f="$R/runs/$n/$st/metrics.jsonl"
    [ -f "$f" ] || continue
    echo "$st:"; grep -E '"(psnr|grounding_own|l1_outside)"' "$f" | cut -c1-330 | tail -5
  done
done

step pack
best=$(for n in "${names[@]}"; do
  f="$R/runs/$n/editor/metrics.jsonl"
  [ -f "$f" ] || continue
  v=$(grep l1_outside "$f" | tail -1 | sed -E 's/.*"l1_outside":([0-9.e-]+).*/\1/')
  [ -n "$v" ] && echo "$v $n"
done | sort -g | head -2 | cut -d' ' -f2)
for n in "${names[@]}"; do
  d=$R/runs/$n
  cp "$R/runs/$n.log" "$d/run.log"
  items=(run.log settings.json)
  for st in vae decoder t2i editor; do
    [ -d "$d/$st" ] || continue
    items+=($(cd "$d" && ls -d $st/metrics.jsonl $st/done.json 2>/dev/null))
    newest=$(cd "$d" && ls -d $st/ckpt-* 2>/dev/null | tail -1)
    # a checkpoint copied in is already at home: only what trained here comes back
    [ -f "$d/$st/copied" ] && [ "$newest" = "$(cat "$d/$st/copied")" ] && continue
    [ -n "$newest" ] && ! [ -f "$d/editor/done.json" ] && items+=("$newest")
  done
  [ -f "$d/editor/done.json" ] && items+=(model)
  tar -C "$d" -czf "$OUTDIR/$n.tgz" "${items[@]}"
done
for n in $best; do # finished runs' editor checkpoints (unfinished ones are in NAME.tgz already)
  d=$R/runs/$n
  [ -f "$d/editor/done.json" ] || continue
  newest=$(cd "$d" && ls -d editor/ckpt-* 2>/dev/null | tail -1)
  [ -n "$newest" ] && tar -C "$d" -czf "$OUTDIR/$n-ckpt.tgz" settings.json "$newest"
done
pack_logs
ls -la "$OUTDIR"
echo "elapsed $(( $(date +%s) - START )) s"
