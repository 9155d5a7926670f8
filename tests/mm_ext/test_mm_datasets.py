"""The generated fashion scenes load through MMDetection's CocoDataset and MMSegmentation's BaseSegDataset
as they are written (no custom dataset code), with the expected images, instances and classes."""

# ruff: noqa: E402  (imports follow pytest.importorskip)

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("mmdet")
pytest.importorskip("mmseg")

from plugins.data.fashion_mnist import CLASSES


@pytest.mark.parametrize("split", ["train", "val"])
def test_mmdet_coco_dataset_reads_the_scenes(fashion_scenes, split):
    from mmdet.datasets import CocoDataset

    root = Path(fashion_scenes)
    coco = json.loads((root / "annotations" / f"instances_{split}.json").read_text())
    ds = CocoDataset(data_root=str(root), ann_file=f"annotations/instances_{split}.json",
                     data_prefix=dict(img=f"{split}/images/"), metainfo=dict(classes=CLASSES),
                     test_mode=True, pipeline=[])
    assert len(ds) == len(coco["images"]), f"{split}: images"
    instances = [inst for i in range(len(ds)) for inst in ds.get_data_info(i)["instances"]]
    assert len(instances) == len(coco["annotations"]), f"{split}: instances"
    assert ds.metainfo["classes"] == CLASSES
    labels = {inst["bbox_label"] for inst in instances}
    assert labels <= set(range(10)), labels
    by_id = {a["id"]: a for a in coco["annotations"]}
    first = ds.get_data_info(0)
    assert Path(first["img_path"]).is_file()
    for inst in first["instances"]:  # COCO xywh -> mmdet xyxy, category id k -> label k - 1
        assert inst["bbox_label"] in range(10) and inst["bbox"][2] > inst["bbox"][0] and inst["bbox"][3] > inst["bbox"][1]
    assert {a["category_id"] - 1 for a in by_id.values()} == labels


@pytest.mark.parametrize("split", ["train", "val"])
def test_mmseg_dataset_reads_the_label_maps(fashion_scenes, split):
    from mmcv.transforms import LoadImageFromFile
    from mmseg.datasets import BaseSegDataset
    from mmseg.datasets.transforms import LoadAnnotations

    root = Path(fashion_scenes)
    classes = ("background", *CLASSES)
    ds = BaseSegDataset(data_root=str(root), data_prefix=dict(img_path=f"{split}/images", seg_map_path=f"{split}/labels"),
                        img_suffix=".png", seg_map_suffix=".png", metainfo=dict(classes=classes),
                        reduce_zero_label=False, pipeline=[LoadImageFromFile(), LoadAnnotations()])
    images = sorted((root / split / "images").glob("*.png"))
    assert len(ds) == len(images) > 0
    assert len(ds.metainfo["classes"]) == 11
    sample = ds[0]
    seg = sample["gt_seg_map"]
    assert seg.shape == sample["img"].shape[:2]
    assert set(np.unique(seg)) <= set(range(11)) | {255}
