#!/usr/bin/env bash
# Rebuild the bundled models from scratch, exactly as released (CPU: about 3 hours on 2 cores; a GPU is much faster).
#   Training/scripts/release.sh [DATA_DIR]     DATA_DIR: folder of <case>_image.nii.gz/<case>_label.nii.gz pairs
set -euo pipefail
DATA=${1:-../shared/data/ct}
CFG=Training/configs/default.yaml
VERSION=1.0.0
SAMPLE=$(liverseg sample | sed -n 's/^image: //p' | xargs dirname)

liverseg-train prepare --source "generic:$DATA" --out prepared/shared
for arch in resunet unet; do
  loco=() ; crop=()
  for held in chaos_eval_ct amos_0001_slab; do      # the expert-labelled cases
    run=runs/loco_${held}_$arch
    liverseg-train train --config $CFG --data prepared/shared --output $run \
      --set architecture=$arch --set name=liver-$arch --set "test_cases=[\"$held\"]"
    liverseg-train evaluate --model $run/liver-$arch.safetensors --source "generic:$DATA" --cases $held \
      --out reports/loco_${held}_$arch --no-tumor
    liverseg-train evaluate --model $run/liver-$arch.safetensors --source "generic:$DATA" --cases $held \
      --out reports/loco_${held}_${arch}_crop --no-tumor --crop-to-liver 10
    loco+=(--loco "$held=reports/loco_${held}_$arch/metrics.json")
    crop+=(--loco-crop "$held=reports/loco_${held}_${arch}_crop/metrics.json")
  done
  liverseg-train train --config $CFG --data prepared/shared --output runs/final_$arch \
    --set architecture=$arch --set name=liver-$arch
  liverseg-train evaluate --model runs/final_$arch/liver-$arch.safetensors --source "generic:$SAMPLE" \
    --out reports/final_${arch}_lits117
  python Training/scripts/release.py --run runs/final_$arch --name liver-$arch --version $VERSION "${loco[@]}" "${crop[@]}" \
    --sample reports/final_${arch}_lits117/metrics.json -o LiverSegmentation/liverseg/weights/liver-$arch.safetensors
done
