#!/usr/bin/env bash
# Rebuild the bundled default model (liver-unet 2.0.0) from scratch, exactly as released:
# two leave-one-case-out runs (the expert-labelled cases), the final run on all four cases, their evaluations and
# the export with the measured metrics in the card. CPU: about 1.5 hours on 2 cores; a GPU is much faster.
#   Training/scripts/release.sh [DATA_DIR]     DATA_DIR: folder of <case>_image.nii.gz/<case>_label.nii.gz pairs
# liver-resunet stays at 1.0.0 (made by the 1.0.0 version of this script; not retrained for 2.0.0).
set -euo pipefail
DATA=${1:-../shared/data/ct}
CFG=Training/configs/default.yaml
VERSION=2.0.0
SAMPLE=$(liverseg sample | sed -n 's/^image: //p' | xargs dirname)

liverseg-train prepare --source "generic:$DATA" --out prepared/shared
loco=() ; crop=()
for held in chaos_eval_ct amos_0001_slab; do
  run=runs/v2_loco_$held
  liverseg-train train --config $CFG --data prepared/shared --output $run --set "test_cases=[\"$held\"]"
  liverseg-train evaluate --model $run/liver-unet.safetensors --source "generic:$DATA" --cases $held \
    --out reports/v2_loco_$held --no-tumor
  liverseg-train evaluate --model $run/liver-unet.safetensors --source "generic:$DATA" --cases $held \
    --out reports/v2_loco_${held}_crop --no-tumor --crop-to-liver 10
  loco+=(--loco "$held=reports/v2_loco_$held/metrics.json")
  crop+=(--loco-crop "$held=reports/v2_loco_${held}_crop/metrics.json")
done
liverseg-train train --config $CFG --data prepared/shared --output runs/v2_final
liverseg-train evaluate --model runs/v2_final/liver-unet.safetensors --source "generic:$SAMPLE" --out reports/v2_final_lits117
python Training/scripts/release.py --run runs/v2_final --name liver-unet --version $VERSION "${loco[@]}" "${crop[@]}" \
  --sample reports/v2_final_lits117/metrics.json -o LiverSegmentation/liverseg/weights/liver-unet.safetensors
