import importlib.util
import json

import numpy as np
import pytest
from PIL import Image

from plugins.data.deepforest import (
    MIN_INSIDE,
    convert_deepforest,
    deepforest_data_dir,
    main,
    read_voc,
    tile_boxes,
    tile_starts,
)

needs_deepforest = pytest.mark.skipif(importlib.util.find_spec("deepforest") is None,
                                      reason="deepforest not installed (pip install --no-deps deepforest)")


def test_tile_starts_align_the_last_tile_to_the_edge():
    assert tile_starts(2299, 400) == [0, 400, 800, 1200, 1600, 1899]
    assert tile_starts(800, 400) == [0, 400]
    assert tile_starts(400, 400) == [0]
    assert tile_starts(250, 400) == [0]


def test_cut_boxes_kept_clipped_only_with_half_their_area_inside():
    boxes = np.array([[10, 10, 50, 50],      # inside the left tile
                      [380, 10, 420, 50],    # 50 % / 50 %: clipped and kept in both tiles
                      [390, 100, 430, 140],  # 25 % / 75 %: dropped left, clipped right
                      [700, 0, 800, 400],    # inside the right tile, touching its edges
                      [390, 390, 410, 400]], dtype=float)  # 50 % / 50 % across the vertical edge only
    left, right = tile_boxes(boxes, width=800, height=400, tile_size=400)
    assert (left.x, left.y, left.width, left.height, right.x) == (0, 0, 400, 400, 400)
    assert left.source.tolist() == [0, 1, 4] and left.clipped.tolist() == [False, True, True]
    np.testing.assert_array_equal(left.boxes, [[10, 10, 50, 50], [380, 10, 400, 50], [390, 390, 400, 400]])
    assert (left.fully_inside, left.clipped_kept, left.clipped_dropped) == (1, 2, 1)
    assert right.source.tolist() == [1, 2, 3, 4]
    np.testing.assert_array_equal(right.boxes, [[0, 10, 20, 50], [0, 100, 30, 140], [300, 0, 400, 400],
                                                [0, 390, 10, 400]])
    assert (right.fully_inside, right.clipped_kept, right.clipped_dropped) == (1, 3, 0)
    with pytest.raises(ValueError, match="tile_size"):
        tile_boxes(boxes, 800, 400, tile_size=0)


def _independent_accounting(data_dir, tile_size):
    """Count (tile, box) outcomes with plain loops, and which boxes fit entirely inside some tile."""
    full = kept = dropped = boxes_in = 0
    fits = {}
    for xml_path in sorted(data_dir.glob("*.xml")):
        file_name, boxes, _ = read_voc(xml_path)
        width, height = Image.open(data_dir / file_name).size
        boxes_in += len(boxes)
        xs = sorted({*range(0, max(width - tile_size, 0), tile_size), max(width - tile_size, 0)})
        ys = sorted({*range(0, max(height - tile_size, 0), tile_size), max(height - tile_size, 0)})
        for i, (x0, y0, x1, y1) in enumerate(boxes.tolist()):
            area = (x1 - x0) * (y1 - y0)
            for ty in ys:
                for tx in xs:
                    tx1, ty1 = tx + min(tile_size, width), ty + min(tile_size, height)
                    iw = max(0.0, min(x1, tx1) - max(x0, tx))
                    ih = max(0.0, min(y1, ty1) - max(y0, ty))
                    if iw * ih == 0:
                        continue
                    if iw * ih == area:
                        full += 1
                        fits[(file_name, i)] = (x1 - x0, y1 - y0)
                    elif iw * ih >= MIN_INSIDE * area:
                        kept += 1
                    else:
                        dropped += 1
    return boxes_in, full, kept, dropped, fits


@needs_deepforest
def test_real_boxes_accounted_for_across_tiles(tmp_path):
    json_path = convert_deepforest(tmp_path, tile_size=400)
    data = json.loads(json_path.read_text())
    info = data["info"]
    boxes_in, full, kept, dropped, fits = _independent_accounting(deepforest_data_dir(), 400)
    assert (info["boxes_in"], info["fully_inside"], info["clipped_kept"], info["clipped_dropped"]) == (
        boxes_in, full, kept, dropped)
    assert len(data["annotations"]) == full + kept, "fully inside + clipped kept must equal the boxes written"
    assert sum(not a["clipped"] for a in data["annotations"]) == full
    assert data["categories"] == [{"id": 1, "name": "tree", "supercategory": "plant"}]

    images = {img["id"]: img for img in data["images"]}
    whole = {(images[a["image_id"]]["source_file"], a["source_box"]) for a in data["annotations"] if not a["clipped"]}
    assert set(fits) <= whole, "a box that fits in a tile is missing from every tile"
    for ann in data["annotations"]:
        img = images[ann["image_id"]]
        x, y, w, h = ann["bbox"]
        assert w > 0 and h > 0 and x >= 0 and y >= 0 and x + w <= img["width"] and y + h <= img["height"]
        assert abs(ann["area"] - w * h) < 1e-9
        if not ann["clipped"]:
            key = (img["source_file"], ann["source_box"])
            assert (w, h) == fits[key], f"unclipped box {key} changed size"

    first = data["images"][0]
    tile = np.asarray(Image.open(tmp_path / "val" / "images" / first["file_name"]))
    source = np.asarray(Image.open(deepforest_data_dir() / first["source_file"]).convert("RGB"))
    np.testing.assert_array_equal(tile, source[first["tile_y"]:first["tile_y"] + first["height"],
                                               first["tile_x"]:first["tile_x"] + first["width"]])
    assert all(img["width"] <= 400 and img["height"] <= 400 for img in data["images"])


@needs_deepforest
def test_read_by_pycocotools_and_command_line(tmp_path, capsys):
    coco_module = pytest.importorskip("pycocotools.coco")
    main(["--out", str(tmp_path), "--tile-size", "400"])
    assert "tiles" in capsys.readouterr().out
    coco = coco_module.COCO(str(tmp_path / "annotations" / "instances_val.json"))
    assert coco.getCatIds() == [1] and len(coco.getImgIds()) == len(list((tmp_path / "val" / "images").iterdir()))
