"""COCO instances files written byte-for-byte reproducibly: compressed RLE masks and sorted-key JSON."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np


def rle_encode(mask: np.ndarray) -> dict:
    """COCO compressed RLE of a 2-D mask: ``{"size": [h, w], "counts": str}``.

    The same string as ``pycocotools.mask.encode`` (column-major runs, first run counts zeros, each count
    after the second stored as the difference to the count two before, in 5-bit groups offset by 48), so
    pycocotools, mmdet and Detectron2 decode it; written here so that the files do not depend on whether
    pycocotools is installed.
    """
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D, got shape {mask.shape}")
    flat = np.asarray(mask, dtype=bool).ravel(order="F")
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    runs = np.diff(np.concatenate(([0], changes, [flat.size]))).tolist()
    if flat.size and flat[0]:
        runs.insert(0, 0)
    chars = []
    for i, count in enumerate(runs):
        x = count - runs[i - 2] if i > 2 else count
        more = True
        while more:
            c = x & 0x1F
            x >>= 5  # arithmetic shift, as in pycocotools' C code
            more = x != -1 if c & 0x10 else x != 0
            chars.append(chr(c + 48 + (0x20 if more else 0)))
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": "".join(chars)}


def mask_to_xywh(mask: np.ndarray) -> list[int]:
    """Tight pixel box ``[x, y, w, h]`` of a non-empty mask, ``w = x_max - x_min + 1`` (pycocotools' toBbox)."""
    cols = np.flatnonzero(mask.any(axis=0))
    rows = np.flatnonzero(mask.any(axis=1))
    if cols.size == 0:
        raise ValueError("mask is empty: an empty mask has no box")
    return [int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)]


_NUMBERED_PNG = re.compile(r"\d{6}\.png")


def numbered_png_folder(folder: Path) -> Path:
    """Create ``folder`` and delete the ``NNNNNN.png`` files a previous, larger run may have left in it.

    Dataset classes that list a folder (mmseg, Detectron2's ``load_sem_seg``) would otherwise see them.
    """
    folder.mkdir(parents=True, exist_ok=True)
    for path in folder.iterdir():
        if _NUMBERED_PNG.fullmatch(path.name):
            path.unlink()
    return folder


def write_json(path: Path, data: dict) -> None:
    """Write ``data`` with sorted keys and no whitespace, so equal content gives equal bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, sort_keys=True, separators=(",", ":")) + "\n")
