"""build_timm_backbone / build_timm_fpn_backbone: names, shapes, freezing, norms, zero gamma, checkpoints."""

import logging

import pytest

pytest.importorskip("detectron2")
pytest.importorskip("timm")

import timm  # noqa: E402
import torch  # noqa: E402
from detectron2 import model_zoo  # noqa: E402
from detectron2.config import get_cfg  # noqa: E402
from detectron2.layers import FrozenBatchNorm2d, ShapeSpec  # noqa: E402
from detectron2.modeling import BACKBONE_REGISTRY, build_backbone, build_model  # noqa: E402
from detectron2.structures import Boxes, Instances  # noqa: E402
from detectron2.utils.events import EventStorage  # noqa: E402
from torch import nn  # noqa: E402

from d2_ext import add_tricks_config  # noqa: E402
from d2_ext.backbone import TimmBackbone, build_timm_backbone  # noqa: E402
from plugins.models.features import TimmFeatures  # noqa: E402
from plugins.runtime.checkpoint import export_backbone  # noqa: E402

MODEL = "resnet18d"  # any timm ResNet; small and fast


def _cfg(**timm_keys):
    cfg = get_cfg()
    add_tricks_config(cfg)
    cfg.TRICKS.TIMM.MODEL_NAME = MODEL
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    for key, value in timm_keys.items():
        cfg.TRICKS.TIMM[key] = value
    return cfg


def test_registered():
    assert BACKBONE_REGISTRY.get("build_timm_backbone") is build_timm_backbone
    assert "build_timm_fpn_backbone" in BACKBONE_REGISTRY


def test_output_shape_follows_timm_features():
    cfg = _cfg(OUT_INDICES=(0, 1, 2, 3, 4), FREEZE_AT=0, NORM="BN")
    cfg.MODEL.RESNETS.OUT_FEATURES = ["stem", "res2", "res3", "res4", "res5"]
    backbone = build_timm_backbone(cfg, ShapeSpec(channels=3))
    features = TimmFeatures(MODEL, out_indices=(0, 1, 2, 3, 4))
    shapes = backbone.output_shape()
    assert list(shapes) == ["stem", "res2", "res3", "res4", "res5"]
    assert [s.channels for s in shapes.values()] == features.out_channels
    assert [s.stride for s in shapes.values()] == features.out_strides == [2, 4, 8, 16, 32]
    outputs = backbone(torch.zeros(1, 3, 64, 64))
    for name, shape in shapes.items():
        assert outputs[name].shape == (1, shape.channels, 64 // shape.stride, 64 // shape.stride), name


def test_out_features_select_outputs():
    cfg = _cfg()
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res4"]  # Detectron2's default (C4 models)
    backbone = build_timm_backbone(cfg, ShapeSpec(channels=3))
    assert list(backbone.output_shape()) == ["res4"]
    assert list(backbone(torch.zeros(1, 3, 64, 64))) == ["res4"]
    cfg = _cfg(OUT_INDICES=(1, 2, 3))
    with pytest.raises(ValueError, match=r"OUT_FEATURES.*\['res5'\].*OUT_INDICES"):
        build_timm_backbone(cfg, ShapeSpec(channels=3))
    with pytest.raises(ValueError, match="in_chans"):
        build_timm_backbone(_cfg(), ShapeSpec(channels=1))
    with pytest.raises(ValueError, match="available"):
        TimmBackbone(TimmFeatures(MODEL, out_indices=(1, 2)), ["res4"])


@pytest.mark.parametrize("freeze_at", [0, 1, 2, 3, 5])
def test_freeze_at_has_detectron2_meaning(freeze_at):
    backbone = build_timm_backbone(_cfg(FREEZE_AT=freeze_at, NORM="BN"), ShapeSpec(channels=3)).train()
    model = backbone.features.model
    stages = [("stem", [model.conv1, model.bn1])] + [
        (f"res{k + 2}", [getattr(model, f"layer{k + 1}")]) for k in range(4)
    ]
    for index, (name, modules) in enumerate(stages):
        frozen = index < freeze_at  # FREEZE_AT = k freezes the stem and res2..res_k (k stages in all)
        for module in modules:
            assert all(p.requires_grad != frozen for p in module.parameters()), (
                f"{name} at FREEZE_AT={freeze_at}"
            )
            bns = [m for m in module.modules() if isinstance(m, nn.BatchNorm2d)]
            assert all(bn.training != frozen for bn in bns), f"{name} BN mode at FREEZE_AT={freeze_at}"


def test_frozen_bn_keeps_the_function():
    torch.manual_seed(0)
    bn = build_timm_backbone(_cfg(NORM="BN", FREEZE_AT=0), ShapeSpec(channels=3))
    with torch.no_grad():  # non-trivial statistics so that the check means something
        for module in bn.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
    frozen = build_timm_backbone(_cfg(NORM="FrozenBN", FREEZE_AT=0), ShapeSpec(channels=3))
    frozen.load_state_dict(bn.state_dict(), strict=False)  # FrozenBN has no num_batches_tracked
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in bn.modules())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in frozen.modules())
    assert sum(isinstance(m, FrozenBatchNorm2d) for m in frozen.modules()) == n_bn
    assert all("bn" not in name for name, p in frozen.named_parameters() if p.requires_grad), (
        "norms not trained"
    )
    x = torch.randn(2, 3, 64, 64)
    expected = bn.eval()(x)
    actual = frozen.train()(x)  # FrozenBN: the same in train and eval mode
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=1e-4, atol=1e-4, msg=f"FrozenBN {name}")


def _last_gammas(model):
    return [
        block.bn2.weight
        for stage in (model.layer1, model.layer2, model.layer3, model.layer4)
        for block in stage
    ]


def test_zero_gamma():
    cfg = _cfg(NORM="BN", FREEZE_AT=0)
    cfg.TRICKS.TIMM.KWARGS.zero_init_last = False  # timm's own ResNets zero-init by default
    plain = build_timm_backbone(cfg, ShapeSpec(channels=3))
    assert all((g != 0).all() for g in _last_gammas(plain.features.model))
    cfg.TRICKS.ZERO_GAMMA = True
    zeroed = build_timm_backbone(cfg, ShapeSpec(channels=3))
    assert all((g == 0).all() for g in _last_gammas(zeroed.features.model))


def _export(tmp_path, model_name=MODEL, **kwargs):
    torch.manual_seed(1)
    model = timm.create_model(model_name, pretrained=False, num_classes=7, **kwargs)
    path = export_backbone(
        model,
        tmp_path / "backbone.pth",
        {
            "model_name": model_name,
            "variant": "d",
            "recipe": {},
            "val_top1": 0.0,
            "num_classes": 7,
            "in_chans": 3,
        },
    )
    return model, path


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_checkpoint_loads_every_tensor_and_is_reported(tmp_path):
    source, path = _export(tmp_path)
    cfg = _cfg(CHECKPOINT=str(path))
    cfg.TRICKS.ZERO_GAMMA = True  # ignored: the checkpoint defines the gammas
    records = _Records()
    logger = logging.getLogger("d2_ext.backbone")
    logger.addHandler(records)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        backbone = build_timm_backbone(cfg, ShapeSpec(channels=3))
    finally:
        logger.removeHandler(records)
        logger.setLevel(level)
    report = backbone.features.load_report
    expected = {k for k in source.state_dict() if not k.startswith("fc.")}
    assert report.ok and set(report.matched) == expected
    assert any("tensors matched" in m and str(path) in m for m in records.messages), records.messages
    assert any("ZERO_GAMMA ignored" in m for m in records.messages)
    loaded = backbone.features.model.state_dict()  # FrozenBN keeps weight/bias/running_* under the same keys
    for key, value in source.state_dict().items():
        if key.startswith("fc.") or key.endswith("num_batches_tracked"):
            continue
        torch.testing.assert_close(loaded[key], value, rtol=0.0, atol=0.0, msg=f"checkpoint tensor {key}")


def test_missing_weights_fail_loudly(tmp_path):
    model, _ = _export(tmp_path)
    state = {k: v for k, v in model.state_dict().items() if k != "layer3.0.conv1.weight"}
    path = tmp_path / "broken.pth"
    torch.save({"state_dict": state, "meta": {}}, path)
    with pytest.raises(ValueError, match=r"layer3\.0\.conv1\.weight"):
        build_timm_backbone(_cfg(CHECKPOINT=str(path)), ShapeSpec(channels=3))
    _, wrong = _export(tmp_path, model_name="resnet26d")
    with pytest.raises(ValueError, match="shape mismatch|missing"):
        build_timm_backbone(_cfg(CHECKPOINT=str(wrong)), ShapeSpec(channels=3))


def test_model_zoo_base_rcnn_fpn_unchanged():
    """Detectron2's own Base-RCNN-FPN.yaml with only the backbone name changed trains a step."""
    cfg = get_cfg()
    add_tricks_config(cfg)
    cfg.merge_from_file(model_zoo.get_config_file("Base-RCNN-FPN.yaml"))
    cfg.MODEL.BACKBONE.NAME = "build_timm_fpn_backbone"
    cfg.TRICKS.TIMM.MODEL_NAME = MODEL
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 3
    cfg.MODEL.RPN.POST_NMS_TOPK_TRAIN = 64
    cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 32
    backbone = build_backbone(cfg)
    assert list(backbone.output_shape()) == ["p2", "p3", "p4", "p5", "p6"]
    assert [s.stride for s in backbone.output_shape().values()] == [4, 8, 16, 32, 64]
    model = build_model(cfg).train()
    instances = Instances((96, 96))
    instances.gt_boxes = Boxes(torch.tensor([[10.0, 12.0, 60.0, 70.0]]))
    instances.gt_classes = torch.tensor([1])
    with EventStorage():
        losses = model([{"image": torch.randint(0, 255, (3, 96, 96)).float(), "instances": instances}])
    assert set(losses) == {"loss_cls", "loss_box_reg", "loss_rpn_cls", "loss_rpn_loc"}
    assert all(torch.isfinite(v) for v in losses.values())


def test_fpn_levels_the_heads_ask_for_are_checked():
    """FPN names a level by its stride: without the stem max-pool (the narrow tricks_resnet*n* default) the levels
    are p1..p5, and Base-RCNN-FPN.yaml's RPN asks for p2..p6; say so instead of Detectron2's KeyError 'p6'."""
    cfg = get_cfg()
    add_tricks_config(cfg)
    cfg.merge_from_file(model_zoo.get_config_file("Base-RCNN-FPN.yaml"))
    cfg.MODEL.BACKBONE.NAME = "build_timm_fpn_backbone"
    cfg.TRICKS.TIMM.MODEL_NAME = "tricks_resnet26nd"
    with pytest.raises(
        ValueError,
        match=r"MODEL.RPN.IN_FEATURES=\['p2', 'p3', 'p4', 'p5', 'p6'\] asks for \['p6'\], which the timm FPN "
        r"backbone of TRICKS.TIMM.MODEL_NAME='tricks_resnet26nd' does not output; it outputs \['p1', 'p2', 'p3', "
        r"'p4', 'p5'\] at strides \[2, 4, 8, 16, 32\] \(with a tricks_resnet\*n\* model, set "
        r"TRICKS.TIMM.KWARGS.small_input False",
    ):
        build_backbone(cfg)
    cfg.TRICKS.TIMM.KWARGS.small_input = False
    assert list(build_backbone(cfg).output_shape()) == ["p2", "p3", "p4", "p5", "p6"]
