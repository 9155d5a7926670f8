"""What a finished stage wrote, read back as its figures: timm's summary.csv for a classification stage, MMEngine's
scalars.json for MMDetection and MMSegmentation, Detectron2's metrics.json. Each parser is a stage's ``parse``."""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path

# Where a classification stage's tricks-train run writes timm's files: {out}/<CLS_RUN>/ (--output {out}
# --experiment CLS_RUN), its backbone beside them.
CLS_RUN = "train"


def parse_classification(out: Path) -> dict:
    """The stage's figures from timm's summary.csv: the last epoch's eval_top1, eval_top5, train_loss, the median
    images_per_s, and every numeric column per epoch (``per_epoch``: validation top-1 and calibration error, the
    clean training-subset top-1, epoch wall and CPU seconds, ...), which the ladder and time-to-accuracy read."""
    with open(out / CLS_RUN / "summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    top1 = [float(r["eval_top1"]) for r in rows]
    speed = [float(r["images_per_s"]) for r in rows if r.get("images_per_s")]
    per_epoch: dict[str, list[float | None]] = {}
    for column in rows[0]:
        try:
            per_epoch[column] = [float(r[column]) if r.get(column) not in (None, "") else None for r in rows]
        except ValueError:
            continue
    return {"val_top1": top1[-1], "best_top1": max(top1), "val_top5": float(rows[-1]["eval_top5"]),
            "train_loss": float(rows[-1]["train_loss"]), "curve": top1,
            "images_per_s": statistics.median(speed) if speed else None, "per_epoch": per_epoch}


def _last_json_lines(path: Path) -> list[dict]:
    out = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out


def parse_mm(out: Path) -> dict:
    """Last evaluation of an MMEngine run (vis_data/scalars.json under the timestamped folder)."""
    found = {}
    for path in sorted(out.rglob("scalars.json")):
        for rec in _last_json_lines(path):
            for k, v in rec.items():
                if k in ("coco/bbox_mAP", "coco/bbox_mAP_50", "mIoU", "aAcc", "mAcc"):
                    found[k] = float(v)
    if not found:
        raise RuntimeError(f"no evaluation metrics found under {out}")
    # mmdet reports mAP in [0, 1]; mmseg in percent: report both in percent.
    return {k: (v * 100 if k.startswith("coco/") else v) for k, v in found.items()}


def parse_d2(out: Path) -> dict:
    found = {}
    for rec in _last_json_lines(out / "metrics.json"):
        for k, v in rec.items():
            if k in ("bbox/AP", "bbox/AP50"):
                found[k] = float(v)
    if not found:
        raise RuntimeError(f"no bbox metrics in {out / 'metrics.json'}")
    return found
