"""cfg.TRICKS: defaults, validation, unknown keys, and every shipped yaml (loaded, and its model built)."""

import re

import pytest

pytest.importorskip("detectron2")

import torch  # noqa: E402
from detectron2.config import get_cfg  # noqa: E402
from detectron2.modeling import build_model  # noqa: E402

import d2_ext  # noqa: E402
from d2_ext import add_tricks_config, validate_tricks_config  # noqa: E402

SHIPPED = sorted(p.name for p in d2_ext.CONFIG_DIR.glob("*.yaml"))


def _cfg():
    cfg = get_cfg()
    add_tricks_config(cfg)
    return cfg


def test_defaults():
    cfg = _cfg()
    t = cfg.TRICKS
    assert (t.LR_SCHEDULE, t.WARMUP_ITERS, t.MIN_LR_RATIO, t.BASE_BATCH_SIZE) == ("", 0, 0.0, 0)
    assert (t.NO_BIAS_DECAY, t.ZERO_GAMMA, t.LABEL_SMOOTHING, t.LABEL_SMOOTHING_FORM) == (False, False, 0.0, "paper")
    assert tuple(t.TIMM.OUT_INDICES) == (1, 2, 3, 4)
    assert (t.TIMM.CHECKPOINT, t.TIMM.FREEZE_AT, t.TIMM.NORM) == ("", 2, "FrozenBN")
    validate_tricks_config(cfg)
    cfg.TRICKS.LABEL_SMOOTHING = 0.2
    add_tricks_config(cfg)  # a second call keeps the values
    assert cfg.TRICKS.LABEL_SMOOTHING == 0.2


def test_unknown_keys_still_fail(tmp_path):
    cfg = _cfg()
    with pytest.raises((KeyError, AssertionError), match="TRICKS.MIXUP"):  # yacs asserts for KEY VALUE lists
        cfg.merge_from_list(["TRICKS.MIXUP", "0.2"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("TRICKS:\n  TIMM:\n    FROZEN_STAGES: 1\n")
    with pytest.raises(KeyError, match="TRICKS.TIMM.FROZEN_STAGES"):
        _cfg().merge_from_file(str(bad))


def test_yaml_with_every_key_loads(tmp_path):
    path = tmp_path / "all.yaml"
    path.write_text(
        "SOLVER:\n  MAX_ITER: 100\n"
        "TRICKS:\n  LR_SCHEDULE: warmup_cosine\n  WARMUP_ITERS: 10\n  MIN_LR_RATIO: 0.01\n  BASE_BATCH_SIZE: 256\n"
        "  NO_BIAS_DECAY: True\n  ZERO_GAMMA: True\n  LABEL_SMOOTHING: 0.1\n  LABEL_SMOOTHING_FORM: uniform\n"
        "  TIMM:\n    MODEL_NAME: resnet18\n    CHECKPOINT: x.pth\n    OUT_INDICES: [0, 2, 4]\n    FREEZE_AT: 0\n"
        "    NORM: BN\n    OUTPUT_STRIDE: 16\n    KWARGS:\n      drop_path_rate: 0.1\n"
    )
    cfg = _cfg()
    cfg.merge_from_file(str(path))
    validate_tricks_config(cfg)
    assert cfg.TRICKS.LABEL_SMOOTHING_FORM == "uniform" and tuple(cfg.TRICKS.TIMM.OUT_INDICES) == (0, 2, 4)
    assert dict(cfg.TRICKS.TIMM.KWARGS) == {"drop_path_rate": 0.1}


@pytest.mark.parametrize(("key", "value", "accepted"), [
    ("LR_SCHEDULE", "cosine", "'warmup_cosine'"),
    ("WARMUP_ITERS", -1, "an int >= 0"),
    ("WARMUP_ITERS", 5000, "at most SOLVER.MAX_ITER"),
    ("MIN_LR_RATIO", 1.5, "[0, 1]"),
    ("BASE_BATCH_SIZE", -16, "an int >= 0"),
    ("LABEL_SMOOTHING", 1.0, "[0, 1)"),
    ("LABEL_SMOOTHING_FORM", "eps/K", "'paper'"),
    ("TIMM.MODEL_NAME", "", "a timm ResNet name"),
    ("TIMM.OUT_INDICES", (2, 1), "strictly increasing"),
    ("TIMM.OUT_INDICES", (1, 5), "ints in 0..4"),
    ("TIMM.FREEZE_AT", 6, "0..5"),
    ("TIMM.NORM", "SyncBN", "'FrozenBN' or 'BN'"),
    ("TIMM.OUTPUT_STRIDE", 4, "8, 16 or 32"),
])
def test_bad_values_name_key_and_accepted(key, value, accepted):
    cfg = _cfg()
    cfg.SOLVER.MAX_ITER = 1000
    if key == "LR_SCHEDULE" or key.startswith("WARMUP"):
        cfg.TRICKS.LR_SCHEDULE = "warmup_cosine"
    node, _, leaf = f"TRICKS.{key}".rpartition(".")
    target = cfg
    for part in node.split("."):
        target = target[part]
    target[leaf] = value
    with pytest.raises(ValueError, match=re.escape(f"cfg.TRICKS.{key}={value!r}")) as info:
        validate_tricks_config(cfg)
    assert accepted in str(info.value)


def test_inconsistent_combinations():
    cfg = _cfg()
    cfg.TRICKS.BASE_BATCH_SIZE = 16
    cfg.SOLVER.REFERENCE_WORLD_SIZE = 8
    with pytest.raises(ValueError, match="REFERENCE_WORLD_SIZE"):
        validate_tricks_config(cfg)
    cfg = _cfg()
    cfg.TRICKS.NO_BIAS_DECAY = True
    cfg.SOLVER.BIAS_LR_FACTOR = 2.0
    with pytest.raises(ValueError, match="BIAS_LR_FACTOR"):
        validate_tricks_config(cfg)
    with pytest.raises(ValueError, match="add_tricks_config"):
        validate_tricks_config(get_cfg())
    cfg = _cfg()  # warmup_step decays at Detectron2's own SOLVER.STEPS, which must lie inside the run
    cfg.TRICKS.LR_SCHEDULE, cfg.SOLVER.MAX_ITER, cfg.SOLVER.STEPS = "warmup_step", 100, (80, 120)
    with pytest.raises(ValueError, match=re.escape("cfg.SOLVER.STEPS=(80, 120) is not accepted with "
                                                   "TRICKS.LR_SCHEDULE='warmup_step'")):
        validate_tricks_config(cfg)
    cfg.SOLVER.STEPS = (80, 90)
    validate_tricks_config(cfg)


def test_get_config_file():
    assert d2_ext.get_config_file(SHIPPED[0]).endswith(SHIPPED[0])
    with pytest.raises(FileNotFoundError, match="shipped"):
        d2_ext.get_config_file("mask_rcnn.yaml")


def test_the_expected_configs_are_shipped():
    for name in ("faster_rcnn_timm_R_50_D_FPN_baseline_voc.yaml", "faster_rcnn_timm_R_50_D_FPN_tricks_voc.yaml",
                 "faster_rcnn_timm_R_26n_D_FPN_baseline_fashion_scenes.yaml",
                 "faster_rcnn_timm_R_26n_D_FPN_tricks_fashion_scenes.yaml",
                 "faster_rcnn_timm_R_50_D_FPN_baseline_fashion_scenes.yaml",
                 "faster_rcnn_timm_R_50_D_FPN_tricks_fashion_scenes.yaml"):
        assert name in SHIPPED


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_config_loads_and_builds(name):
    cfg = _cfg()
    cfg.merge_from_file(d2_ext.get_config_file(name))
    validate_tricks_config(cfg)
    assert cfg.MODEL.WEIGHTS == "", "shipped configs never download weights"
    cfg.MODEL.DEVICE = "cpu"
    model = build_model(cfg).eval()
    size = cfg.INPUT.MIN_SIZE_TEST if cfg.INPUT.MIN_SIZE_TEST <= 128 else 96
    with torch.no_grad():
        (output,) = model([{"image": torch.zeros(3, size, size), "height": size, "width": size}])
    assert output["instances"].image_size == (size, size)
