"""Every config shipped in mm_ext/configs parses through the mmdet::/mmseg:: bases and builds its model."""

# ruff: noqa: E402  (imports follow pytest.importorskip)

from pathlib import Path

import pytest

pytest.importorskip("mmdet")
pytest.importorskip("mmseg")

from mmengine.config import Config
from mmengine.registry import MODELS, DefaultScope

import mm_ext
from plugins.data.fashion_mnist import CLASSES

CONFIG_DIR = Path(mm_ext.__file__).parent / "configs"
CONFIGS = sorted(CONFIG_DIR.glob("*.py"))


def test_the_expected_configs_are_shipped():
    assert [p.name for p in CONFIGS] == [
        "faster-rcnn_timm-r26nd_fpn_baseline_fashion-scenes.py",
        "faster-rcnn_timm-r26nd_fpn_tricks_fashion-scenes.py",
        "faster-rcnn_timm-r50d_fpn_baseline-1x_voc0712.py",
        "faster-rcnn_timm-r50d_fpn_baseline_fashion-scenes.py",
        "faster-rcnn_timm-r50d_fpn_tricks-1x_voc0712.py",
        "faster-rcnn_timm-r50d_fpn_tricks_fashion-scenes.py",
        "fcn_timm-r26nd-d8_baseline_fashion-scenes.py",
        "fcn_timm-r26nd-d8_tricks_fashion-scenes.py",
        "fcn_timm-r50d-d8_baseline_ade20k-512x512.py",
        "fcn_timm-r50d-d8_baseline_fashion-scenes.py",
        "fcn_timm-r50d-d8_tricks_ade20k-512x512.py",
        "fcn_timm-r50d-d8_tricks_fashion-scenes.py",
    ]


def _cls_loss(cfg):
    if cfg.model.type == "FasterRCNN":
        return cfg.model.roi_head.bbox_head.loss_cls
    return cfg.model.decode_head.loss_decode


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_builds_its_model(path):
    cfg = Config.fromfile(str(path))
    assert cfg.custom_imports == dict(imports=["mm_ext"], allow_failed_imports=False)
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        model = MODELS.build(cfg.model)
    backbone = model.backbone
    assert isinstance(backbone, mm_ext.TimmTransferBackbone)
    assert cfg.model.backbone.model_name == ("tricks_resnet50d" if "r50d" in path.name else "tricks_resnet26nd")
    if path.name.startswith("fcn"):
        assert backbone.out_strides[-1] == 8, "D8: the last stage at stride 8"
        assert cfg.model.decode_head.in_channels == backbone.out_channels[cfg.model.decode_head.in_index]
        assert cfg.model.auxiliary_head.in_channels == backbone.out_channels[cfg.model.auxiliary_head.in_index]
    else:
        assert list(cfg.model.neck.in_channels) == backbone.out_channels
        assert list(cfg.model.roi_head.bbox_roi_extractor.featmap_strides) == backbone.out_strides
        assert list(cfg.model.rpn_head.anchor_generator.strides[:4]) == backbone.out_strides

    tricks = "_tricks" in path.name
    assert _cls_loss(cfg).type == ("LabelSmoothingCrossEntropyLoss" if tricks else "CrossEntropyLoss")
    assert (cfg.optim_wrapper.get("constructor") == "NoBiasDecayOptimWrapperConstructor") == tricks
    assert ([s.type for s in cfg.param_scheduler] == ["WarmupCosineLR"]) == tricks
    if "fashion-scenes" in path.name:
        classes = cfg.train_dataloader.dataset.metainfo.classes
        if cfg.model.type == "FasterRCNN":
            assert tuple(classes) == CLASSES and cfg.model.roi_head.bbox_head.num_classes == 10
        else:
            assert tuple(classes) == ("background", *CLASSES) and cfg.model.decode_head.num_classes == 11
