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
from plugins.runtime.checkpoint import export_backbone, load_checkpoint


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
    backbone = MODELS.build(
        dict(type="TimmTransferBackbone", model_name=model_name, output_stride=output_stride)
    )
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


def _export(tmp_path):
    source = _backbone().features.model
    with torch.no_grad():
        for tensor in source.state_dict().values():
            if tensor.is_floating_point():
                tensor.normal_()
    return export_backbone(source, tmp_path / "backbone.pth", meta={"model_name": "tricks_resnet26nd"})


def test_pretrained_local_file_is_loaded_as_checkpoint(tmp_path):
    """mmseg's EncoderDecoder passes model.pretrained to the backbone: a local export loads like checkpoint=."""
    path = _export(tmp_path)
    via_pretrained = _backbone(pretrained=str(path)).features.model.state_dict()
    via_checkpoint = _backbone(checkpoint=str(path)).features.model.state_dict()
    for key, value in load_checkpoint(path)["state_dict"].items():
        torch.testing.assert_close(via_pretrained[key], value, rtol=0, atol=0, msg=key)
        torch.testing.assert_close(via_checkpoint[key], value, rtol=0, atol=0, msg=key)
    assert _backbone(pretrained=None).features.load_report is None
    assert _backbone(pretrained=False).features.load_report is None


@pytest.mark.parametrize(
    "pretrained",
    ["open-mmlab://resnet50_v1c", "torchvision://resnet50", "https://download.pytorch.org/r50.pth", True],
)
def test_pretrained_that_is_no_local_file_names_what_to_set(pretrained):
    with pytest.raises(ValueError) as error:
        _backbone(pretrained=pretrained)
    message = str(error.value)
    assert f"model.pretrained={pretrained!r}" in message
    assert (
        "set model.pretrained=None" in message and "model.backbone.checkpoint='.../backbone.pth'" in message
    )


def test_pretrained_bad_values(tmp_path):
    path = _export(tmp_path)
    with pytest.raises(
        ValueError, match=r"model.pretrained='\S+absent.pth' \(no such file\); accepted: None, False"
    ):
        _backbone(pretrained=str(tmp_path / "absent.pth"))
    with pytest.raises(
        ValueError, match=r"both model.pretrained=.* and model.backbone.checkpoint=.*; accepted: one"
    ):
        _backbone(pretrained=str(path), checkpoint=str(path))


def test_keys_of_a_stock_resnet_dict_name_the_missing_delete():
    """A backbone dict merged into the stock ResNet one (no _delete_=True) carries depth, norm_cfg, style..."""
    with pytest.raises(
        ValueError, match=r"keys of OpenMMLab's ResNet \(depth, norm_cfg, style\).*_delete_=True"
    ):
        _backbone(depth=50, norm_cfg=dict(type="BN"), style="pytorch")
