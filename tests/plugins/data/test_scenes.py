import hashlib
import json

import numpy as np
import pytest
from PIL import Image

mask_utils = pytest.importorskip("pycocotools.mask")
from pycocotools.coco import COCO  # noqa: E402

from plugins.data import scenes as scenes_module  # noqa: E402
from plugins.data.fashion_mnist import CLASSES, load_fashion_mnist  # noqa: E402
from plugins.data.scene_stats import scene_stats  # noqa: E402
from plugins.data.scenes import IGNORE_INDEX, compose_scene, generate_scenes, main  # noqa: E402

ARGS = dict(train=6, val=4, image_size=64, seed=3, progress=False)


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    return generate_scenes(tmp_path_factory.mktemp("scenes"), **ARGS)


def _hashes(root):
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _load(paths, split):
    return json.loads(paths[f"{split}_json"].read_text())


def test_layout_and_byte_identical_regeneration(scenes, tmp_path):
    root = scenes["root"]
    expected = {"manifest.json", "preview.png", "annotations/instances_train.json", "annotations/instances_val.json"}
    expected |= {f"{s}/{kind}/{i:06d}.png" for s, n in (("train", 6), ("val", 4)) for kind in ("images", "labels")
                 for i in range(n)}
    first = _hashes(root)
    assert set(first) == expected
    second = _hashes(generate_scenes(tmp_path / "again", **ARGS)["root"])
    assert first == second, "same arguments gave different files"
    other = _hashes(generate_scenes(tmp_path / "other", **{**ARGS, "seed": 4})["root"])
    assert other["train/images/000000.png"] != first["train/images/000000.png"], "the seed is ignored"


def test_matching_manifest_skips_work_and_changed_arguments_regenerate(tmp_path):
    paths = generate_scenes(tmp_path, **{**ARGS, "train": 3, "val": 1})
    stamp = paths["train_images"].joinpath("000000.png").stat().st_mtime_ns
    generate_scenes(tmp_path, **{**ARGS, "train": 3, "val": 1})
    assert paths["train_images"].joinpath("000000.png").stat().st_mtime_ns == stamp, "regenerated needlessly"
    generate_scenes(tmp_path, **{**ARGS, "train": 2, "val": 1})
    assert sorted(p.name for p in paths["train_images"].iterdir()) == ["000000.png", "000001.png"], "stale files"
    assert len(_load(paths, "train")["images"]) == 2


def test_coco_files_read_by_pycocotools(scenes):
    for split, count in (("train", 6), ("val", 4)):
        coco = COCO(str(scenes[f"{split}_json"]))
        assert len(coco.getImgIds()) == count
        assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == list(CLASSES)
        assert coco.getCatIds() == list(range(1, 11))
        assert len(coco.getAnnIds()) >= count  # 1..6 items per scene, at least one stays visible here
        for img in coco.loadImgs(coco.getImgIds()):
            assert Image.open(scenes[f"{split}_images"] / img["file_name"]).mode == "RGB"
            assert Image.open(scenes[f"{split}_labels"] / img["file_name"]).mode == "L"


def test_no_item_shared_between_splits_and_sources_are_real(scenes):
    for split, source_split in (("train", "train"), ("val", "test")):
        data = _load(scenes, split)
        _, labels = load_fashion_mnist(source_split)
        assert {img["split"] for img in data["images"]} == {split}
        for ann in data["annotations"]:
            assert ann["source_split"] == source_split, f"{split} instance {ann['id']} from {ann['source_split']}"
            assert int(labels[ann["source_index"]]) + 1 == ann["category_id"], f"{split} ann {ann['id']} source"


def test_boxes_tight_and_semantic_map_consistent(scenes):
    for split in ("train", "val"):
        data = _load(scenes, split)
        for img in data["images"]:
            label = np.asarray(Image.open(scenes[f"{split}_labels"] / img["file_name"]))
            covered = np.zeros(label.shape, dtype=int)
            for ann in (a for a in data["annotations"] if a["image_id"] == img["id"]):
                mask = mask_utils.decode(ann["segmentation"]).astype(bool)
                where = f"{split} image {img['file_name']} ann {ann['id']}"
                assert mask.shape == label.shape and mask.any(), where
                ys, xs = np.nonzero(mask)
                tight = [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
                assert ann["bbox"] == [int(v) for v in tight], f"{where}: box not tight"
                assert mask_utils.toBbox(ann["segmentation"]).tolist() == ann["bbox"], where
                assert ann["area"] == int(mask.sum()) == int(mask_utils.area(ann["segmentation"])), where
                assert set(np.unique(label[mask])) <= {ann["category_id"], IGNORE_INDEX}, where
                assert (label[mask] == ann["category_id"]).all(), f"{where}: visible pixels not labelled"
                covered += mask
            assert covered.max() <= 1, f"{split} {img['file_name']}: instance masks overlap"
            classes = (label >= 1) & (label <= 10)
            np.testing.assert_array_equal(classes, covered == 1, err_msg=f"{split} {img['file_name']}: "
                                          "labelled pixels without an instance")
            assert set(np.unique(label)) <= {0, *range(1, 11), IGNORE_INDEX}


def test_photo_columns_split_between_train_and_val():
    regions = scenes_module.photo_regions()
    assert len(regions["train"]) == len(regions["val"]) == len(scenes_module.PHOTOS)
    for name, train, val in zip(scenes_module.PHOTOS, regions["train"], regions["val"]):
        assert train.shape[0] == val.shape[0] and train.shape[2] == val.shape[2] == 3, name
        assert abs(train.shape[1] / (train.shape[1] + val.shape[1]) - scenes_module.TRAIN_COLUMNS) < 0.01, name


def test_each_split_draws_backgrounds_from_its_own_photo_columns(tmp_path, monkeypatch):
    flat = {"train": [np.full((100, 100, 3), 10, np.uint8)], "val": [np.full((100, 100, 3), 200, np.uint8)]}
    monkeypatch.setattr(scenes_module, "photo_regions", lambda: flat)
    paths = generate_scenes(tmp_path, train=2, val=2, image_size=32, progress=False)
    for split, value in (("train", 10), ("val", 200)):
        for i in range(2):
            image = np.asarray(Image.open(paths[f"{split}_images"] / f"{i:06d}.png"))
            label = np.asarray(Image.open(paths[f"{split}_labels"] / f"{i:06d}.png"))
            assert (image[label == 0] == value).all(), f"{split} scene {i} background from the wrong columns"


def _square(side, value=255):
    return np.full((side, side), value, dtype=np.uint8)


def test_compose_drops_hidden_item_and_shrinks_partly_hidden_box():
    background = np.zeros((32, 32, 3), dtype=np.uint8)
    red, blue = (255, 0, 0), (0, 0, 255)
    hidden = compose_scene(background, [_square(8), _square(16)], [3, 7], [(4, 4), (0, 0)], [red, blue])
    assert [(i.item, i.category_id, i.bbox, i.area) for i in hidden.instances] == [(1, 7, [0, 0, 16, 16], 256)]
    assert set(np.unique(hidden.label)) == {0, 7}, "the hidden item left labels behind"
    assert (hidden.image[:16, :16] == [0, 0, 255]).all()

    partly = compose_scene(background, [_square(8), _square(16)], [3, 7], [(4, 4), (8, 0)], [red, blue])
    first, second = partly.instances
    assert (first.item, first.bbox, first.area) == (0, [4, 4, 4, 8], 32), "box must follow the visible part"
    assert (second.bbox, second.area) == ([8, 0, 16, 16], 256)
    assert (partly.label[4:12, 4:8] == 3).all() and (partly.label[0:16, 8:24] == 7).all()


def test_compose_border_pixels_are_ignored_and_tiny_leftovers_dropped():
    background = np.zeros((32, 32, 3), dtype=np.uint8)
    item = _square(10, 25)  # blended border intensity everywhere but the opaque centre
    item[2:8, 2:8] = 200
    scene = compose_scene(background, [item], [1], [(0, 0)], [(255, 255, 255)])
    assert scene.instances[0].bbox == [2, 2, 6, 6] and scene.instances[0].area == 36
    assert (scene.label[:10, :10][item == 25] == IGNORE_INDEX).all()
    assert 0 < scene.image[0, 0, 0] < 255, "border pixels are alpha-blended"

    # a later item covers all but one column (4 < 16 pixels) of the first: dropped, its rest ignored
    leftover = compose_scene(background, [_square(4), _square(8)], [2, 5], [(0, 0), (1, 0)], [(9, 9, 9)] * 2,
                             min_visible_area=16)
    assert [i.item for i in leftover.instances] == [1]
    assert (leftover.label[:4, 0] == IGNORE_INDEX).all() and (leftover.label[:8, 1:9] == 5).all()


def test_compose_rejects_items_outside_the_image():
    with pytest.raises(ValueError, match="leaves the 16x16 image"):
        compose_scene(np.zeros((16, 16, 3), np.uint8), [_square(8)], [1], [(10, 0)], [(1, 2, 3)])
    with pytest.raises(ValueError, match="category_ids"):
        compose_scene(np.zeros((16, 16, 3), np.uint8), [_square(8)], [11], [(0, 0)], [(1, 2, 3)])


def test_generate_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="items_max"):
        generate_scenes(tmp_path, items_min=3, items_max=2, progress=False)
    with pytest.raises(ValueError, match="image_size"):
        generate_scenes(tmp_path, image_size=16, progress=False)


def test_stats_agree_with_annotations(scenes, capsys):
    stats = scene_stats(scenes["root"])
    for split in ("train", "val"):
        data = _load(scenes, split)
        s = stats[split]
        assert s["images"] == len(data["images"]) and s["instances"] == len(data["annotations"])
        assert sum(s["items_per_class"].values()) == s["instances"]
        assert sum(s["boxes_per_image"]["histogram"].values()) == s["images"]
        assert sum(s["coco_size"].values()) == sum(s["box_side"].values()) == s["instances"]
        assert abs(sum(s["pixel_share"].values()) - 1.0) < 1e-9
    main(["--stats", str(scenes["root"])])
    printed = capsys.readouterr().out
    assert "== train: 6 images" in printed and "pixel share" in printed


def test_command_line_generates(tmp_path):
    main(["--out", str(tmp_path), "--train", "2", "--val", "1", "--image-size", "48", "--seed", "1",
          "--no-progress"])
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["args"] == {"train": 2, "val": 1, "image_size": 48, "seed": 1, "items_min": 1, "items_max": 6}
    assert Image.open(tmp_path / "val" / "images" / "000000.png").size == (48, 48)
