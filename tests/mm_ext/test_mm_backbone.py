"""TimmTransferBackbone: feature maps, dilation, freezing, norm_eval, and a timm_ext export that really arrives."""

# ruff: noqa: E402  (imports follow pytest.importorskip)

import logging

import pytest

pytest.importorskip("mmengine")
pytest.importorskip("timm")

import torch
from mmengine.logging import MMLogger
from mmengine.model import BaseModule
from mmengine.registry import MODELS
from torch.nn.modules.batchnorm import _BatchNorm

import mm_ext
from plugins.checkpoint import export_backbone, load_checkpoint


def _backbone(**kwargs):
    return MODELS.build(dict(type="TimmTransferBackbone", model_name="tricks_resnet26nd", **kwargs))


@pytest.mark.parametrize(
    "model_name, output_stride, strides",
    [
        ("tricks_resnet26nd", 32, [2, 4, 8, 16]),  # narrow small-input net: no stem max-pool
        ("tricks_resnet26nd", 16, [2, 4, 8, 8]),
        ("resnet18", 32, [4, 8, 16, 32]),  # timm's own ResNet
        ("resnet18", 8, [4, 8, 8, 8]),  # FCN-D8
    ],
)
def test_feature_maps_and_strides(model_name, output_stride, strides):
    backbone = MODELS.build(dict(type="TimmTransferBackbone", model_name=model_name, output_stride=output_stride))
    assert isinstance(backbone, mm_ext.TimmTransferBackbone) and isinstance(backbone, BaseModule)
    outputs = backbone(torch.zeros(1, 3, 64, 64))
    assert isinstance(outputs, tuple) and len(outputs) == 4
    assert [64 // o.shape[-1] for o in outputs] == strides == backbone.out_strides
    assert [o.shape[1] for o in outputs] == backbone.out_channels


def test_frozen_stages_and_norm_eval_survive_train():
    backbone = _backbone(frozen_stages=1, norm_eval=False)
    backbone.train()
    model = backbone.features.model
    frozen = [model.conv1, model.bn1, model.layer1]
    assert all(not p.requires_grad for m in frozen for p in m.parameters())
    assert all(p.requires_grad for p in model.layer2.parameters())
    assert all(not m.training for part in frozen for m in part.modules() if isinstance(m, _BatchNorm))
    assert model.layer2[0].bn1.training

    backbone = _backbone(norm_eval=True)
    backbone.train()
    norms = [m for m in backbone.modules() if isinstance(m, _BatchNorm)]
    assert norms and all(not m.training for m in norms), "norm_eval keeps every BatchNorm in eval mode"
    assert backbone.features.model.layer2[0].conv1.training


def test_export_arrives_and_survives_init_weights(tmp_path):
    source = _backbone().features.model
    with torch.no_grad():
        for tensor in source.state_dict().values():
            if tensor.is_floating_point():
                tensor.normal_()
    path = export_backbone(source, tmp_path / "backbone.pth", meta={"model_name": "tricks_resnet26nd"})
    exported = load_checkpoint(path)["state_dict"]

    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = MMLogger.get_current_instance()
    logger.addHandler(handler)
    try:
        backbone = _backbone(checkpoint=str(path))
    finally:
        logger.removeHandler(handler)
    report = backbone.features.load_report
    assert report.ok and len(report.matched) == len(exported), report.summary()
    assert any("tensors matched" in r.getMessage() for r in records), "the load report is logged"

    parent = BaseModule()
    parent.backbone = backbone
    parent.init_weights()  # what the Runner does before training: must not re-initialise the transfer
    state = backbone.features.model.state_dict()
    for key, value in exported.items():
        torch.testing.assert_close(state[key], value, rtol=0, atol=0, msg=f"{key} after init_weights")


def test_missing_or_mismatched_weights_fail_loudly(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint"):
        _backbone(checkpoint=str(tmp_path / "absent.pth"))
    # A ResNet-26-B export lacks the ResNet-D shortcut's layout: not every backbone tensor can be matched.
    other = MODELS.build(dict(type="TimmTransferBackbone", model_name="tricks_resnet26nb")).features.model
    path = export_backbone(other, tmp_path / "b.pth", meta={"model_name": "tricks_resnet26nb"})
    with pytest.raises(ValueError, match="missing|mismatch"):
        _backbone(checkpoint=str(path))
    with pytest.raises(ValueError, match="init_cfg"):
        _backbone(init_cfg=dict(type="Pretrained", checkpoint=str(path)))
