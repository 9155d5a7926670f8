"""register_fashion_scenes: the generated scenes through Detectron2's own COCO and sem-seg loaders."""

import json

import pytest

pytest.importorskip("detectron2")

import numpy as np  # noqa: E402
from detectron2.data import DatasetCatalog, MetadataCatalog  # noqa: E402
from PIL import Image  # noqa: E402

from d2_ext import register_fashion_scenes  # noqa: E402
from plugins.data.fashion_mnist import CLASSES  # noqa: E402


def test_scenes_load_with_expected_counts(scenes_root):
    names = register_fashion_scenes(scenes_root, name_prefix="d2data_scenes")
    assert names == ["d2data_scenes_train", "d2data_scenes_train_sem_seg", "d2data_scenes_val",
                     "d2data_scenes_val_sem_seg"]
    assert register_fashion_scenes(scenes_root, name_prefix="d2data_scenes") == names, "idempotent"
    for split, count in (("train", 8), ("val", 4)):
        coco = json.loads((scenes_root / "annotations" / f"instances_{split}.json").read_text())
        records = DatasetCatalog.get(f"d2data_scenes_{split}")
        assert len(records) == count == len(coco["images"])
        instances = [a for r in records for a in r["annotations"]]
        assert len(instances) == len(coco["annotations"]) > 0
        # category ids 1..10 map to contiguous 0..9 in Fashion-MNIST order
        expected = sorted(a["category_id"] - 1 for a in coco["annotations"])
        assert sorted(a["category_id"] for a in instances) == expected
        metadata = MetadataCatalog.get(f"d2data_scenes_{split}")
        assert metadata.thing_classes == list(CLASSES) and len(metadata.thing_classes) == 10
        assert metadata.evaluator_type == "coco"
        image = np.asarray(Image.open(records[0]["file_name"]))
        assert image.shape == (96, 96, 3) and (records[0]["height"], records[0]["width"]) == (96, 96)
        assert all(len(a["bbox"]) == 4 and "counts" in a["segmentation"] for a in instances)

        seg = DatasetCatalog.get(f"d2data_scenes_{split}_sem_seg")
        assert len(seg) == count
        label = np.asarray(Image.open(seg[0]["sem_seg_file_name"]))
        assert set(np.unique(label)) <= set(range(11)) | {255}
        seg_meta = MetadataCatalog.get(f"d2data_scenes_{split}_sem_seg")
        assert seg_meta.stuff_classes == ["background", *CLASSES] and seg_meta.ignore_label == 255


def test_missing_or_conflicting_roots(scenes_root, tmp_path):
    with pytest.raises(FileNotFoundError, match="plugins.data.scenes"):
        register_fashion_scenes(tmp_path / "nowhere", name_prefix="d2data_missing")
    register_fashion_scenes(scenes_root, name_prefix="d2data_conflict")
    other = tmp_path / "other"
    for sub in ("annotations", "train/images", "train/labels", "val/images", "val/labels"):
        (other / sub).mkdir(parents=True)
    for split in ("train", "val"):
        (other / "annotations" / f"instances_{split}.json").write_text("{}")
    with pytest.raises(ValueError, match="already registered"):
        register_fashion_scenes(other, name_prefix="d2data_conflict")
