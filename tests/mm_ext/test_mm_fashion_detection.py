"""The Faster R-CNN fashion-scenes configs end to end on the CPU with a transferred timm_ext backbone."""

# ruff: noqa: E402  (imports follow pytest.importorskip)

import math
from pathlib import Path

import pytest

pytest.importorskip("mmdet")
pytest.importorskip("timm")

import torch
from mmengine.config import Config
from mmengine.registry import MODELS, DefaultScope

import mm_ext
from plugins.runtime.checkpoint import load_checkpoint
from plugins.tricks.lr_schedule import warmup_cosine_factor

CONFIG_DIR = Path(mm_ext.__file__).parent / "configs"
CONFIGS = ["faster-rcnn_timm-r26nd_fpn_baseline_fashion-scenes.py", "faster-rcnn_timm-r26nd_fpn_tricks_fashion-scenes.py"]
FIRST_LAYER = "conv1.0.weight"  # the first 3x3 conv of the deep (ResNet-C/D) stem


@pytest.mark.slow
@pytest.mark.parametrize("name", CONFIGS)
def test_trains_and_evaluates_with_the_transferred_backbone(name, run_fashion, timm_export, tmp_path):
    exported = load_checkpoint(timm_export)["state_dict"]
    probe = run_fashion(name, tmp_path)

    assert set(probe.start) == set(exported), "every backbone tensor of the export is in the detector"
    for key, value in exported.items():
        torch.testing.assert_close(probe.start[key], value, rtol=0, atol=0, msg=f"{name}: {key} at the start")
    # frozen_stages=1 keeps the stem frozen: after training the first layer still equals the export
    torch.testing.assert_close(probe.end[FIRST_LAYER], exported[FIRST_LAYER], rtol=0, atol=0, msg=name)

    assert len(probe.losses) == 2 and all(probe.losses), "two iterations with losses"
    for step, losses in enumerate(probe.losses, start=1):
        assert all(math.isfinite(v) for v in losses.values()), f"{name}: non-finite loss at iteration {step}: {losses}"
    for metric in ("coco/bbox_mAP", "coco/bbox_mAP_50"):
        assert math.isfinite(probe.metrics.get(metric, math.nan)), f"{name}: {metric} in {probe.metrics}"

    # mm_ext.train's LrRecorderHook: the lr each iteration used, in timm_ext's lr_per_step.csv format
    rows = (tmp_path / "lr_per_step.csv").read_text().split()
    assert rows[0] == "step,lr_group0,lr_group1" if "_tricks" in name else rows[0] == "step,lr_group0", rows[0]
    recorded = [float(r.split(",")[1]) for r in rows[1:]]
    assert [int(r.split(",")[0]) for r in rows[1:]] == [1, 2]
    if "_tricks" in name:  # WarmupCosineLR with 1 warmup iteration over the 2-iteration run, base lr 0.01
        expected = [0.01 * warmup_cosine_factor(i, 2, 1) for i in (1, 2)]
        torch.testing.assert_close(recorded, expected, rtol=1e-12, atol=0.0, msg=f"{name}: lr_per_step.csv")


def test_transfer_changes_the_detector_backbone(timm_export):
    """The export's weights, not timm's random initialisation, end up in the detector."""
    exported = load_checkpoint(timm_export)["state_dict"]
    cfg = Config.fromfile(str(CONFIG_DIR / CONFIGS[1]))

    def backbone_state(checkpoint):
        cfg.model.backbone.checkpoint = checkpoint
        torch.manual_seed(0)
        with DefaultScope.overwrite_default_scope(cfg.default_scope):
            return MODELS.build(cfg.model).backbone.features.model.state_dict()

    transferred, random_init = backbone_state(str(timm_export)), backbone_state(None)
    torch.testing.assert_close(transferred[FIRST_LAYER], exported[FIRST_LAYER], rtol=0, atol=0, msg="first layer")
    convs = [k for k in exported if k.endswith("weight") and exported[k].ndim == 4]
    differing = [k for k in convs if not torch.equal(transferred[k], random_init[k])]
    assert convs and differing == convs, "every conv weight differs from a random init"
