import pytest
import timm
import torch

from plugins.models.features import TimmFeatures
from plugins.runtime.checkpoint import export_backbone


def test_out_indices_channels_and_strides_follow_feature_info():
    features = TimmFeatures("resnet50d", out_indices=(1, 2, 3, 4))
    assert features.out_channels == [256, 512, 1024, 2048]
    assert features.out_strides == [4, 8, 16, 32]
    outs = features(torch.randn(1, 3, 64, 64))
    assert [tuple(o.shape[1:]) for o in outs] == [(256, 16, 16), (512, 8, 8), (1024, 4, 4), (2048, 2, 2)]
    assert not any(k.startswith("fc.") for k in features.model.state_dict()), "built with num_classes=0"


@pytest.mark.parametrize("output_stride, strides", [(16, [4, 8, 16, 16]), (8, [4, 8, 8, 8])])
def test_output_stride_dilates_the_last_stages(output_stride, strides):
    features = TimmFeatures("tricks_resnet26d", output_stride=output_stride)
    assert features.out_strides == strides
    outs = features(torch.randn(1, 3, 64, 64))
    assert [64 // o.shape[-1] for o in outs] == strides


def test_subset_of_indices_in_order():
    features = TimmFeatures("tricks_resnet18d", out_indices=(0, 3))
    outs = features(torch.randn(1, 3, 64, 64))
    assert [o.shape[1] for o in outs] == features.out_channels == [64, 256]


def test_checkpoint_loads_every_backbone_tensor(tmp_path):
    torch.manual_seed(1)
    trained = timm.create_model("tricks_resnet26nd", num_classes=10, in_chans=1)
    path = export_backbone(trained, tmp_path / "backbone.pth", {"model_name": "tricks_resnet26nd", "variant": "d"})
    features = TimmFeatures("tricks_resnet26nd", checkpoint=str(path), in_chans=1)
    assert features.load_report.ok and features.load_report.missing == []
    expected = {k: v for k, v in trained.state_dict().items() if not k.startswith("fc.")}
    for key, value in features.model.state_dict().items():
        torch.testing.assert_close(value, expected[key], rtol=0, atol=0, msg=f"tensor {key}")


def test_checkpoint_of_another_architecture_raises_unless_allowed(tmp_path):
    other = timm.create_model("tricks_resnet26nb", num_classes=0, in_chans=1)  # 7x7 stem, no avg-pool shortcut
    path = export_backbone(other, tmp_path / "backbone.pth", {"model_name": "tricks_resnet26nb"})
    with pytest.raises(ValueError, match="missing"):
        TimmFeatures("tricks_resnet26nd", checkpoint=str(path), in_chans=1)
    features = TimmFeatures("tricks_resnet26nd", checkpoint=str(path), in_chans=1, allow_missing=True)
    assert features.load_report.missing


def test_freeze_semantics():
    features = TimmFeatures("tricks_resnet26d", frozen_stages=2)
    features.train()
    model = features.model
    assert not any(p.requires_grad for m in (model.conv1, model.bn1, model.layer1, model.layer2) for p in m.parameters())
    assert all(p.requires_grad for p in model.layer3.parameters())
    assert not model.bn1.training and not model.layer2.training and model.layer3.training
    features.freeze(-1)  # freezing only adds: a lower value later unfreezes nothing
    features.train()
    assert not model.layer1.training and not any(p.requires_grad for p in model.layer1.parameters())


@pytest.mark.parametrize("kwargs, match", [
    ({"out_indices": (5,)}, "out_indices"),
    ({"out_indices": (2, 1)}, "increasing"),
    ({"output_stride": 4}, "output_stride"),
    ({"frozen_stages": 7}, "frozen_stages"),
])
def test_bad_arguments_raise_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TimmFeatures("tricks_resnet18d", **kwargs)


def test_non_resnet_model_is_refused():
    with pytest.raises(ValueError, match="mobilenetv3_small_050"):
        TimmFeatures("mobilenetv3_small_050")
