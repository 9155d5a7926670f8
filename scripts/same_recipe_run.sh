#!/usr/bin/env bash
# Does a recipe run give bit-identical results in two checkouts? (e.g. the commit a published study ran at and HEAD)
#
#   scripts/same_recipe_run.sh OTHER_CHECKOUT [extra tricks-train flags...]
#
# Runs the same short tricks-train --recipe command (the study's classification flags, fashion photos, 2 epochs)
# in this checkout and in OTHER_CHECKOUT (each with its own .venv, or this one's), one after the other, and
# compares summary.csv (all but the timing columns), lr_per_step.csv and every tensor of last.pth.tar. Exit 0 when
# all are identical. Both checkouts must have timm's loop (timm's files; commits after c7d52ec).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OTHER="$(cd "${1:?usage: $0 OTHER_CHECKOUT [flags...]}" && pwd)"
shift
OUT="$(mktemp -d)"
for tree in "$ROOT" "$OTHER"; do
  name=$([ "$tree" = "$ROOT" ] && echo this || echo other)
  py="$tree/.venv/bin/python"; [ -x "$py" ] || py="$ROOT/.venv/bin/python"
  echo "==> $tree ($(git -C "$tree" rev-parse --short HEAD))"
  (cd "$tree" && "$py" -m timm_ext.train --model tricks_resnet26nd --recipe paper --epochs 2 --warmup-epochs 1 \
      --dataset fashion_photos --img-size 32 --in-chans 3 --train-subset 512 --val-subset 256 -b 64 --seed 0 \
      --scale 1 1 --ratio 1 1 --color-jitter 0 --channels-last "$@" --output "$OUT" --experiment "$name" \
      > "$OUT/$name.log" 2>&1)
done
# timm's result columns (epoch, train_loss, eval_loss, eval_top1, eval_top5, lr); images_per_s, epoch_time: timings
diff <(cut -d, -f1-6 "$OUT/this/summary.csv") <(cut -d, -f1-6 "$OUT/other/summary.csv")
cmp "$OUT/this/lr_per_step.csv" "$OUT/other/lr_per_step.csv"
"$ROOT/.venv/bin/python" - "$OUT" <<'PY'
import sys
import argparse
import torch
out = sys.argv[1]
with torch.serialization.safe_globals([argparse.Namespace]):
    a, b = (torch.load(f"{out}/{n}/last.pth.tar", weights_only=True)["state_dict"] for n in ("this", "other"))
same = a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
print(f"summary.csv results, lr_per_step.csv identical; last.pth.tar: {len(a)} tensors {'identical' if same else 'DIFFER'}")
sys.exit(0 if same else 1)
PY
