#!/usr/bin/env bash
# The training half of release.sh for a GPU lease of fixed length: the two leave-one-case-out runs and the final run
# train side by side on one GPU, each planned to fit MINUTES of wall clock (time_budget_minutes: the cosine schedule
# ends where the measured epoch time says the budget ends) and fed by WORKERS sampling processes (loader_workers).
# Evaluate and export the runs afterwards with release.sh's evaluate/release.py steps, on any machine.
#   Training/scripts/train_gpu.sh PREPARED_DIR OUT_DIR MINUTES WORKERS [--set KEY=VALUE ...]
# Example (16 CPU cores, one GPU): Training/scripts/train_gpu.sh prepared/shared runs/gpu 7.5 4 --set batch_size=16
set -euo pipefail
prepared=$1 out=$2 minutes=$3 workers=$4
shift 4
mkdir -p "$out"
pids=()
for held in chaos_eval_ct amos_0001_slab final; do
  if [ $held = final ]; then run=final test='[]'; else run=loco_$held test="[\"$held\"]"; fi
  python3 -m liverseg_train train --config Training/configs/default.yaml --data "$prepared" --output "$out/$run" \
    --set "test_cases=$test" --set time_budget_minutes="$minutes" --set loader_workers="$workers" \
    --set epochs=100000 --set threads=1 "$@" >"$out/$run.log" 2>&1 &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
exit $status
