#!/usr/bin/env bash
# What the pre-training domain is worth to transfer, side by side: the same ResNet-26-D recipe (D, cosine, 1-epoch
# warmup, zero gamma, no bias decay, batch 64, 4 epochs on 10,000 images) trained on Fashion-MNIST (grey items on
# black, 28 px) and on the fashion photos (the same items rendered on photo crops as the scenes render them,
# 32 px), each backbone then transferred with the same Detectron2 Faster R-CNN and MMSegmentation FCN runs (1,000
# train / 200 val fashion scenes of 128 px, batch 4, seed 0; by default lr 0.005 for 600 iterations).
#
#   benchmarks/transfer_domain.sh [OUT_DIR]      (default results/transfer_domain; about 20 min on 2 idle cores)
#   ITERS=1200 LR=0.01 DATASETS=fashion_photos benchmarks/transfer_domain.sh OUT   (the longer schedule)
set -euo pipefail
cd "$(dirname "$0")/.."
source benchmarks/_transfer_runs.sh
OUT="${1:-results/transfer_domain}"
PY=.venv/bin/python
ITERS="${ITERS:-600}" LR="${LR:-0.005}" DATASETS="${DATASETS:-fashion_mnist fashion_photos}"
mkdir -p "$OUT"
cat > "$OUT/recipe.yaml" <<YAML
name: domain-probe
variant: d
base_lr: 0.1
base_batch_size: 256
batch_size: 64
epochs: 4
warmup_epochs: 1
schedule: cosine
no_bias_decay: true
zero_gamma: true
YAML
$PY -m plugins.data.scenes --out "$OUT/scenes" --train 1000 --val 200 --image-size 128 --seed 0 --no-progress
for dataset in $DATASETS; do
  run="$OUT/$dataset"
  if [ "$dataset" = fashion_mnist ]; then
    mean="[72.94, 72.94, 72.94]"; std="[90.02, 90.02, 90.02]"
  else
    mean="[123.675, 116.28, 103.53]"; std="[58.395, 57.12, 57.375]"
  fi
  [ -f "$run/cls/backbone.pth" ] || $PY -m timm_ext.train --model tricks_resnet26nd --recipe "$OUT/recipe.yaml" \
      --dataset "$dataset" --in-chans 3 --train-subset 10000 --val-subset 2000 --seed 0 --scale 1 1 --ratio 1 1 \
      --color-jitter 0 --checkpoint-hist 1 --output "$run/cls" --experiment train \
      --export-backbone "$run/cls/backbone.pth" > "$run.cls.log" 2>&1
  d2_transfer "$run/d2" "$OUT/scenes" "$run/cls/backbone.pth" "$ITERS" "$LR" "$mean" "$std" "$run.d2.log"
  seg_transfer "$run/seg" "$OUT/scenes" "$run/cls/backbone.pth" "$ITERS" "$LR" "$mean" "$std" "$run.seg.log"
done
$PY - "$OUT" $DATASETS <<'PYEOF'
import sys
from pathlib import Path

from plugins.reproduce.study import parse_classification, parse_d2, parse_mm

out = Path(sys.argv[1])
print(f"{'pre-training data':16s} {'top-1':>6s} {'box AP':>7s} {'AP50':>6s} {'mIoU':>6s} {'pixel acc':>9s}")
for dataset in sys.argv[2:]:
    cls, det, seg = (parse_classification(out / dataset / "cls"), parse_d2(out / dataset / "d2"),
                     parse_mm(out / dataset / "seg"))
    print(f"{dataset:16s} {cls['val_top1']:6.2f} {det['bbox/AP']:7.2f} {det['bbox/AP50']:6.2f} {seg['mIoU']:6.2f} "
          f"{seg['aAcc']:9.2f}")
PYEOF
