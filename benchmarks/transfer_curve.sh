#!/usr/bin/env bash
# How far the study's transfer runs are from convergence: one backbone transferred with the full preset's
# Detectron2 Faster R-CNN and MMSegmentation FCN runs (1,000 train / 200 val fashion scenes of 128 px, batch 4,
# lr 0.01, warmup 10 %, step decay at 75 % and 90 % for the detector, poly for the FCN, seed 0), at several
# schedule lengths, each its own run (the decay points scale with it).
#
#   BACKBONE=path/backbone.pth benchmarks/transfer_curve.sh [OUT_DIR]     (default results/transfer_curve)
#   ITERS="800 1600 3200" BACKBONE=... benchmarks/transfer_curve.sh OUT  (default ITERS "2400": about 20 min
#                                                                           on 2 idle cores)
# BACKBONE: a timm_ext backbone.pth of tricks_resnet26nd trained on the fashion photos (e.g. the study's
# results/full/stages/cls-cosine-s0-*/backbone.pth). Prints box AP / AP50 and mIoU / pixel accuracy per length.
set -euo pipefail
cd "$(dirname "$0")/.."
source benchmarks/_transfer_runs.sh
OUT="${1:-results/transfer_curve}"
PY=.venv/bin/python
ITERS="${ITERS:-2400}" LR="${LR:-0.01}"
BACKBONE="${BACKBONE:?set BACKBONE to a backbone.pth (see the header)}"
mean="[123.675, 116.28, 103.53]"; std="[58.395, 57.12, 57.375]"  # the fashion photos' (plugins.reproduce.study)
mkdir -p "$OUT"
[ -f "$OUT/scenes/annotations/instances_val.json" ] || \
  $PY -m plugins.data.scenes --out "$OUT/scenes" --train 1000 --val 200 --image-size 128 --seed 0 --no-progress
for iters in $ITERS; do
  run="$OUT/$iters"
  d2_transfer "$run/d2" "$OUT/scenes" "$BACKBONE" "$iters" "$LR" "$mean" "$std" "$run.d2.log"
  seg_transfer "$run/seg" "$OUT/scenes" "$BACKBONE" "$iters" "$LR" "$mean" "$std" "$run.seg.log"
done
$PY - "$OUT" $ITERS <<'PYEOF'
import sys
from pathlib import Path

from plugins.reproduce.study import parse_d2, parse_mm

out = Path(sys.argv[1])
print(f"{'iterations':>10s} {'box AP':>7s} {'AP50':>6s} {'mIoU':>6s} {'pixel acc':>9s}")
for iters in sys.argv[2:]:
    det, seg = parse_d2(out / iters / "d2"), parse_mm(out / iters / "seg")
    print(f"{iters:>10s} {det['bbox/AP']:7.2f} {det['bbox/AP50']:6.2f} {seg['mIoU']:6.2f} {seg['aAcc']:9.2f}")
PYEOF
