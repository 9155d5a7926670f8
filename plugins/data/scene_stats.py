"""What a COCO detection set contains: items per class, boxes per image, box sizes, pixel share per class.

``scene_stats(DIR)`` describes every split of a fashion-scenes folder (also printed by
``python -m plugins.data.scenes --stats DIR``); ``coco_stats`` describes one COCO json (and, optionally, its
folder of label PNGs), so it also serves the deepforest tiles.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["SIDE_BINS", "coco_stats", "format_scene_stats", "scene_stats"]

SIDE_BINS = (0, 8, 16, 32, 64, 96, 128, 256)  # box side sqrt(w * h) in pixels; the last bin is open-ended
_COCO_AREA = ((32 ** 2, "small"), (96 ** 2, "medium"), (float("inf"), "large"))


def coco_stats(json_path: str | Path, labels_dir: str | Path | None = None) -> dict:
    """Statistics of one COCO instances file.

    Args:
        json_path: the COCO json.
        labels_dir: optional folder of uint8 label PNGs (named like the images) for the pixel share. Default None.

    Returns:
        dict with ``images``, ``instances``, ``items_per_class`` (name -> count), ``boxes_per_image``
        (``min``, ``mean``, ``max``, ``histogram``: boxes -> images), ``coco_size`` (small / medium / large by
        annotation ``area``, as COCOeval buckets them), ``box_side`` (``"lo-hi"`` px of sqrt(w h) -> boxes) and,
        with ``labels_dir``, ``pixel_share`` (background / class names / ignore -> fraction of pixels).
    """
    data = json.loads(Path(json_path).read_text())
    names = {c["id"]: c["name"] for c in data["categories"]}
    per_class = dict.fromkeys(names.values(), 0)
    per_image = dict.fromkeys((img["id"] for img in data["images"]), 0)
    coco_size = dict.fromkeys((label for _, label in _COCO_AREA), 0)
    sides = []
    for ann in data["annotations"]:
        per_class[names[ann["category_id"]]] += 1
        per_image[ann["image_id"]] += 1
        coco_size[next(label for limit, label in _COCO_AREA if ann["area"] < limit)] += 1
        sides.append(float(np.sqrt(ann["bbox"][2] * ann["bbox"][3])))
    counts = np.array(list(per_image.values()) or [0])
    edges = [*SIDE_BINS, float("inf")]
    side_hist = np.histogram(sides, bins=edges)[0].tolist()
    stats = {
        "images": len(data["images"]), "instances": len(data["annotations"]), "items_per_class": per_class,
        "boxes_per_image": {"min": int(counts.min()), "mean": float(counts.mean()), "max": int(counts.max()),
                            "histogram": {int(n): int((counts == n).sum()) for n in np.unique(counts)}},
        "coco_size": coco_size,
        "box_side": {f"{lo}-{hi}" if hi != float("inf") else f"{lo}+": n
                     for lo, hi, n in zip(edges[:-1], edges[1:], side_hist)},
    }
    if labels_dir is not None:
        pixels = np.zeros(256, dtype=np.int64)
        for img in data["images"]:
            pixels += np.bincount(np.asarray(Image.open(Path(labels_dir) / img["file_name"])).ravel(),
                                  minlength=256)
        total = max(int(pixels.sum()), 1)
        share = {"background": pixels[0] / total}
        share.update({name: pixels[cid] / total for cid, name in names.items()})
        share["ignore"] = pixels[255] / total
        stats["pixel_share"] = {k: float(v) for k, v in share.items()}
    return stats


def scene_stats(root: str | Path) -> dict[str, dict]:
    """``coco_stats`` of each split found in a fashion-scenes folder, with the pixel share from its labels."""
    root = Path(root)
    stats = {}
    for split in ("train", "val"):
        json_path = root / "annotations" / f"instances_{split}.json"
        if json_path.is_file():
            labels = root / split / "labels"
            stats[split] = coco_stats(json_path, labels if labels.is_dir() else None)
    if not stats:
        raise FileNotFoundError(f"no annotations/instances_{{train,val}}.json under {root}")
    return stats


def format_scene_stats(stats: dict[str, dict]) -> str:
    """Human-readable text of ``scene_stats``' result."""
    lines = []
    for split, s in stats.items():
        b = s["boxes_per_image"]
        lines.append(f"== {split}: {s['images']} images, {s['instances']} instances")
        lines.append("items per class: " + ", ".join(f"{k} {v}" for k, v in s["items_per_class"].items()))
        lines.append(f"boxes per image: min {b['min']}, mean {b['mean']:.2f}, max {b['max']}; histogram "
                     + ", ".join(f"{n}: {c}" for n, c in b["histogram"].items()))
        lines.append("COCO size (by area): " + ", ".join(f"{k} {v}" for k, v in s["coco_size"].items()))
        lines.append("box side sqrt(w*h) px: " + ", ".join(f"{k}: {v}" for k, v in s["box_side"].items()))
        if "pixel_share" in s:
            lines.append("pixel share: " + ", ".join(f"{k} {100 * v:.2f}%" for k, v in s["pixel_share"].items()))
    return "\n".join(lines)
