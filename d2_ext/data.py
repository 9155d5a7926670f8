"""Register the fashion scenes (``plugins.data.scenes``, layout in docs/architecture.md) in Detectron2's catalogs.

Detection uses Detectron2's own ``register_coco_instances`` and semantic segmentation its ``load_sem_seg``:
no custom loader, so what trains here is what any Detectron2 user reads from these files.
"""

from __future__ import annotations

from pathlib import Path

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_sem_seg, register_coco_instances

from plugins.data.fashion_mnist import CLASSES
from plugins.data.scenes import IGNORE_INDEX

__all__ = ["SPLITS", "register_fashion_scenes"]

SPLITS = ("train", "val")


def _already_registered(name: str, source: str, key: str) -> bool:
    """True if ``name`` is registered from ``source``; ValueError if it is registered from something else."""
    if name not in DatasetCatalog.list():
        return False
    registered = MetadataCatalog.get(name).get(key, None)
    if registered != source:
        raise ValueError(
            f"dataset {name!r} is already registered from {registered!r}, not {source!r}; "
            "pass another name_prefix to register_fashion_scenes"
        )
    return True


def register_fashion_scenes(root: str | Path, name_prefix: str = "fashion_scenes") -> list[str]:
    """Register the scenes under ``root`` (written by ``python -m plugins.data.scenes --out ROOT``).

    Registers, for ``split`` in ``train``, ``val``:

    - ``"{name_prefix}_{split}"``: COCO instances (boxes and RLE masks) via ``register_coco_instances``, with
      ``thing_classes`` = the ten Fashion-MNIST names (category ids 1..10 -> contiguous 0..9) and
      ``evaluator_type="coco"``;
    - ``"{name_prefix}_{split}_sem_seg"``: the label PNGs via ``load_sem_seg``, with ``stuff_classes`` =
      ``["background", *the ten names]``, ``ignore_label=255`` and ``evaluator_type="sem_seg"``.

    Calling it again with the same ``root`` does nothing; the same names from another ``root`` raise ValueError.

    Args:
        root: the scenes folder (with ``annotations/`` and ``train/``, ``val/``).
        name_prefix: prefix of the dataset names (default ``"fashion_scenes"``).

    Returns:
        The four registered dataset names.
    """
    root = Path(root).resolve()
    names = []
    for split in SPLITS:
        json_file = root / "annotations" / f"instances_{split}.json"
        image_root = root / split / "images"
        label_root = root / split / "labels"
        if not json_file.is_file() or not image_root.is_dir() or not label_root.is_dir():
            raise FileNotFoundError(
                f"no fashion scenes under {str(root)!r} (expected {json_file}, {image_root}, {label_root}); "
                f"write them with: python -m plugins.data.scenes --out {root}"
            )
        name = f"{name_prefix}_{split}"
        if not _already_registered(name, str(json_file), "json_file"):
            register_coco_instances(name, {"thing_classes": list(CLASSES)}, str(json_file), str(image_root))
        seg_name = f"{name}_sem_seg"
        if not _already_registered(seg_name, str(label_root), "sem_seg_root"):
            DatasetCatalog.register(
                seg_name,
                lambda gt=str(label_root), img=str(image_root): load_sem_seg(gt, img, gt_ext="png", image_ext="png"),
            )
            MetadataCatalog.get(seg_name).set(
                stuff_classes=["background", *CLASSES],
                ignore_label=IGNORE_INDEX,
                evaluator_type="sem_seg",
                image_root=str(image_root),
                sem_seg_root=str(label_root),
            )
        names += [name, seg_name]
    return names
