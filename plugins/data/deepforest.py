"""The deepforest package's aerial photos and Pascal VOC tree-crown boxes as COCO tiles (a small real check set).

``pip install --no-deps deepforest`` ships four annotated RGB images (two 400x400, one 1249x1035, one
2299x2472; about 950 boxes named Tree / Alive / Dead, all mapped to the one category ``tree``) in its ``data``
folder. The package itself is never imported (its dependencies are not installed); only that folder is read.

Boxes: VOC ``xmin ymin xmax ymax`` are read as pixel-edge coordinates (``xmax`` may equal the image width),
so the COCO box is ``[xmin, ymin, xmax - xmin, ymax - ymin]``; boxes are first clipped to the image and a box
left with no area is counted as ``invalid`` and dropped.

Tiling rule: tiles are ``tile_size`` squares (smaller only when the image is) at stride ``tile_size`` from the
top-left; where the image side is not a multiple, the last tile is aligned to the image's far edge, overlapping
its neighbour (no padding). For each tile and each box touching it: a box fully inside is kept as is; a box
cut by the tile edge is clipped to the tile and kept if at least ``min_inside`` (default 0.5) of its area lies
inside, otherwise dropped from that tile. Boxes can thus appear in two overlapping tiles, and every box
that fits entirely inside some tile appears whole in at least one. A box cut by two tile edges can lose more than half its area to every tile
and appear in none. The counts are stored in the json's ``info``: ``boxes_in``, ``invalid``, ``in_no_tile``
(input boxes), and ``fully_inside``, ``clipped_kept``, ``clipped_dropped`` ((tile, box) pairs; the annotations
written number ``fully_inside + clipped_kept``).

Layout (as the fashion scenes, one split named ``val``)::

    DIR/annotations/instances_val.json   image extras "source_file", "tile_x", "tile_y";
                                         annotation extras "source_box" (index in its XML), "clipped", "voc_name"
    DIR/val/images/NNNNNN.png            RGB tiles
"""

from __future__ import annotations

import argparse
import importlib.util
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ._coco import numbered_png_folder, write_json

__all__ = ["FORMAT", "MIN_INSIDE", "SPLIT", "Tile", "convert_deepforest", "deepforest_data_dir", "main", "read_voc",
           "tile_boxes", "tile_starts"]

FORMAT = "bag-of-tricks/deepforest-tiles/v1"
SPLIT = "val"
MIN_INSIDE = 0.5  # a box cut by a tile edge is kept (clipped) if at least this fraction of its area is inside


@dataclass(frozen=True)
class Tile:
    """One tile: its top-left corner and size in image pixels, and the boxes it keeps.

    ``boxes`` are float ``[M, 4]`` xyxy in tile coordinates, ``source`` the index of each in the input,
    ``clipped`` whether it was cut by the tile edge; ``fully_inside``, ``clipped_kept`` and ``clipped_dropped``
    count the input boxes touching the tile by outcome.
    """

    x: int
    y: int
    width: int
    height: int
    boxes: np.ndarray
    source: np.ndarray
    clipped: np.ndarray
    fully_inside: int
    clipped_kept: int
    clipped_dropped: int


def deepforest_data_dir() -> Path:
    """The installed deepforest package's ``data`` folder, found without importing the package."""
    spec = importlib.util.find_spec("deepforest")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("the deepforest package is not installed; install its data with "
                                "`make install` or `pip install --no-deps deepforest`")
    return Path(spec.origin).parent / "data"


def read_voc(xml_path: Path) -> tuple[str, np.ndarray, list[str]]:
    """Image file name, float boxes ``[N, 4]`` (xmin, ymin, xmax, ymax) and object names of a VOC XML file."""
    root = ET.parse(xml_path).getroot()
    boxes, names = [], []
    for obj in root.iter("object"):
        box = obj.find("bndbox")
        boxes.append([float(box.find(key).text) for key in ("xmin", "ymin", "xmax", "ymax")])
        names.append(obj.find("name").text)
    return root.find("filename").text, np.array(boxes, dtype=np.float64).reshape(-1, 4), names


def tile_starts(length: int, tile_size: int) -> list[int]:
    """Tile offsets along one side: ``0, tile_size, 2 tile_size, ...``, the last aligned to the far edge."""
    last = max(length - tile_size, 0)
    return [*range(0, last, tile_size), last]


def tile_boxes(boxes: np.ndarray, width: int, height: int, tile_size: int = 400,
               min_inside: float = MIN_INSIDE) -> list[Tile]:
    """Split xyxy ``boxes`` (already inside the ``width`` x ``height`` image) over the tiles (module docstring rule).

    Args:
        boxes: float ``[N, 4]`` xmin, ymin, xmax, ymax with positive area.
        width: image width in pixels.
        height: image height in pixels.
        tile_size: tile side in pixels. Default 400.
        min_inside: smallest fraction of a cut box's area inside the tile for it to be kept. Default 0.5.

    Returns:
        the tiles, row by row.
    """
    _check_tile_size(tile_size)
    if not 0.0 < min_inside <= 1.0:
        raise ValueError(f"min_inside={min_inside!r} must lie in (0, 1]")
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    tiles = []
    for y in tile_starts(height, tile_size):
        for x in tile_starts(width, tile_size):
            tw, th = min(tile_size, width), min(tile_size, height)
            clipped = np.clip(boxes, [x, y, x, y], [x + tw, y + th, x + tw, y + th])
            inside = np.clip(clipped[:, 2] - clipped[:, 0], 0, None) * np.clip(clipped[:, 3] - clipped[:, 1], 0, None)
            touching = inside > 0
            whole = touching & (inside == area)
            cut = touching & ~whole
            kept_cut = cut & (inside >= min_inside * area)
            keep = whole | kept_cut
            tiles.append(Tile(x, y, tw, th, clipped[keep] - [x, y, x, y], np.flatnonzero(keep), kept_cut[keep],
                              int(whole.sum()), int(kept_cut.sum()), int((cut & ~kept_cut).sum())))
    return tiles


def _check_tile_size(tile_size: int) -> None:
    if not isinstance(tile_size, int) or tile_size < 1:
        raise ValueError(f"tile_size={tile_size!r} must be a positive int")


def convert_deepforest(out: str | Path, tile_size: int = 400, data_dir: str | Path | None = None) -> Path:
    """Write the deepforest images as COCO tiles under ``out`` (layout in the module docstring).

    Args:
        out: output folder (created; earlier ``NNNNNN.png`` tiles in it are replaced).
        tile_size: tile side in pixels. Default 400.
        data_dir: folder of the VOC XML files and images; default ``deepforest_data_dir()``.

    Returns:
        path of ``annotations/instances_val.json``.
    """
    _check_tile_size(tile_size)
    data_dir = Path(data_dir) if data_dir is not None else deepforest_data_dir()
    xml_files = sorted(data_dir.glob("*.xml"))
    if not xml_files:
        raise FileNotFoundError(f"no Pascal VOC .xml files in {data_dir}")
    out = Path(out)
    image_dir = numbered_png_folder(out / SPLIT / "images")
    images, annotations = [], []
    counts = dict.fromkeys(("boxes_in", "invalid", "in_no_tile", "fully_inside", "clipped_kept", "clipped_dropped"), 0)
    for xml_path in xml_files:
        file_name, boxes, names = read_voc(xml_path)
        with Image.open(data_dir / file_name) as photo:
            pixels = np.asarray(photo.convert("RGB"))
        height, width = pixels.shape[:2]
        boxes = np.clip(boxes, 0, [width, height, width, height])
        valid = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        counts["boxes_in"] += len(boxes)
        counts["invalid"] += int((~valid).sum())
        index = np.flatnonzero(valid)
        tiles = tile_boxes(boxes[valid], width, height, tile_size)
        counts["in_no_tile"] += len(index) - len(np.unique(np.concatenate([t.source for t in tiles])))
        for tile in tiles:
            image_id = len(images) + 1
            name = f"{image_id - 1:06d}.png"
            Image.fromarray(pixels[tile.y:tile.y + tile.height, tile.x:tile.x + tile.width]).save(image_dir / name)
            images.append({"id": image_id, "file_name": name, "width": tile.width, "height": tile.height,
                           "source_file": file_name, "tile_x": tile.x, "tile_y": tile.y})
            for (x0, y0, x1, y1), source, clipped in zip(tile.boxes.tolist(), tile.source, tile.clipped):
                annotations.append({
                    "id": len(annotations) + 1, "image_id": image_id, "category_id": 1,
                    "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0), "iscrowd": 0,
                    "source_box": int(index[source]), "clipped": bool(clipped), "voc_name": names[index[source]]})
            for key in ("fully_inside", "clipped_kept", "clipped_dropped"):
                counts[key] += getattr(tile, key)
    json_path = out / "annotations" / f"instances_{SPLIT}.json"
    write_json(json_path, {
        "info": {"description": "deepforest aerial images (Pascal VOC tree crowns) as COCO tiles",
                 "format": FORMAT, "tile_size": tile_size, "min_inside": MIN_INSIDE, **counts},
        "licenses": [], "categories": [{"id": 1, "name": "tree", "supercategory": "plant"}],
        "images": images, "annotations": annotations})
    return json_path


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: ``python -m plugins.data.deepforest --out DIR [--tile-size 400]``."""
    parser = argparse.ArgumentParser(prog="python -m plugins.data.deepforest", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--tile-size", type=int, default=400, help="tile side in pixels (default 400)")
    args = parser.parse_args(argv)
    try:
        json_path = convert_deepforest(args.out, tile_size=args.tile_size)
    except ValueError as err:
        parser.error(str(err))
    from .scene_stats import coco_stats

    stats = coco_stats(json_path)
    print(f"{json_path}: {stats['images']} tiles, {stats['instances']} boxes")


if __name__ == "__main__":
    main()
