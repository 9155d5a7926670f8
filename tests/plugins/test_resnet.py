import pytest
import torch
from torch import nn

from plugins.tricks.resnet import create_resnet, zero_gamma_

timm = pytest.importorskip("timm")


def _params(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    ("variant", "timm_name"), [("b", "resnet50"), ("c", "resnet50c"), ("d", "resnet50d")]
)
def test_parameter_count_matches_timm(variant, timm_name):
    ours, ref = _params(create_resnet(variant, 50)), _params(timm.create_model(timm_name, pretrained=False))
    assert abs(ours - ref) <= 1e-3 * ref, f"{variant}: {ours} vs {timm_name} {ref}"


def test_variant_a_has_b_parameters_and_shapes():
    a, b = create_resnet("a", 50), create_resnet("b", 50)
    assert {k: v.shape for k, v in a.state_dict().items()} == {k: v.shape for k, v in b.state_dict().items()}


@pytest.mark.parametrize("depth", [18, 26, 34, 101])
def test_other_depths_match_timm(depth):
    assert _params(create_resnet("b", depth)) == _params(
        timm.create_model(f"resnet{depth}", pretrained=False)
    )


@pytest.mark.parametrize("variant", ["a", "b", "c", "d"])
def test_strides_where_the_paper_puts_them(variant):
    model = create_resnet(variant, 50)
    for stage in (model.layer2, model.layer3, model.layer4):
        first = stage[0]
        if variant == "a":
            assert (first.conv1.stride, first.conv2.stride) == ((2, 2), (1, 1)), "A: stride in the first 1x1"
        else:
            assert (first.conv1.stride, first.conv2.stride) == ((1, 1), (2, 2)), (
                f"{variant}: stride in the 3x3"
            )
        for block in list(stage)[1:]:
            assert block.conv1.stride == block.conv2.stride == (1, 1)
        shortcut = list(first.downsample)
        if variant == "d":
            assert (
                isinstance(shortcut[0], nn.AvgPool2d)
                and shortcut[0].kernel_size == 2
                and shortcut[0].stride == 2
            )
            assert shortcut[1].kernel_size == (1, 1) and shortcut[1].stride == (1, 1)
        else:
            assert shortcut[0].kernel_size == (1, 1) and shortcut[0].stride == (2, 2)
    if variant in ("c", "d"):
        convs = [m for m in model.conv1 if isinstance(m, nn.Conv2d)]
        assert [(c.kernel_size, c.stride, c.out_channels) for c in convs] == [
            ((3, 3), (2, 2), 32),
            ((3, 3), (1, 1), 32),
            ((3, 3), (1, 1), 64),
        ]
    else:
        assert (model.conv1.kernel_size, model.conv1.stride, model.conv1.out_channels) == ((7, 7), (2, 2), 64)


@pytest.mark.parametrize("variant", ["a", "b", "c", "d"])
def test_output_shapes(variant):
    model = create_resnet(variant, 26, num_classes=7, width_multiplier=0.25).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert model(x).shape == (2, 7)
        assert model.forward_features(x).shape == (2, 128 * 4, 2, 2)


def test_narrow_small_input_net():
    model = create_resnet("d", 18, num_classes=10, in_chans=1, width_multiplier=0.25, small_input=True).eval()
    assert [s[0].conv1.in_channels for s in (model.layer1, model.layer2, model.layer3, model.layer4)] == [
        16,
        16,
        32,
        64,
    ]
    assert [m.out_channels for m in model.conv1 if isinstance(m, nn.Conv2d)] == [8, 8, 16]
    assert isinstance(model.maxpool, nn.Identity)
    with torch.no_grad():
        assert model.forward_features(torch.randn(2, 1, 28, 28)).shape == (2, 128, 2, 2)
    assert [f["reduction"] for f in model.feature_info] == [2, 2, 4, 8, 16]
    narrow_b = create_resnet("b", 18, width_multiplier=0.25)
    assert (narrow_b.conv1.kernel_size, narrow_b.conv1.out_channels) == ((7, 7), 16)
    assert narrow_b.layer1[0].downsample is None


def test_zero_gamma_flag_really_controls_the_last_gammas():
    off = create_resnet("b", 50)
    assert all(torch.all(m.weight == 1) for m in off.modules() if isinstance(m, nn.BatchNorm2d)), (
        "zero_gamma=False must leave every gamma at 1 (timm zero-inits by default)"
    )
    on = create_resnet("b", 50, zero_gamma=True)
    for name, module in on.named_modules():
        if isinstance(module, nn.BatchNorm2d):
            expected = 0.0 if name.endswith("bn3") else 1.0
            assert torch.all(module.weight == expected), name


def test_zero_gamma_on_timm_and_torchvision():
    torchvision = pytest.importorskip("torchvision")
    assert zero_gamma_(timm.create_model("resnet18", pretrained=False, zero_init_last=False)) == 8
    for builder, blocks, last in (
        (torchvision.models.resnet50, 16, "bn3"),
        (torchvision.models.resnet18, 8, "bn2"),
    ):
        model = builder()
        assert zero_gamma_(model) == blocks
        for name, module in model.named_modules():
            if isinstance(module, nn.BatchNorm2d) and "layer" in name:
                expected = 0.0 if name.endswith(last) else 1.0
                assert torch.all(module.weight == expected), name


def test_zero_gamma_on_detectron2_resnet():
    pytest.importorskip("detectron2")
    from detectron2.config import get_cfg
    from detectron2.layers import ShapeSpec
    from detectron2.modeling.backbone.resnet import build_resnet_backbone

    for depth, norm, blocks, last in ((50, "FrozenBN", 16, "conv3.norm"), (18, "BN", 8, "conv2.norm")):
        cfg = get_cfg()
        cfg.MODEL.RESNETS.DEPTH = depth
        cfg.MODEL.RESNETS.NORM = norm
        cfg.MODEL.RESNETS.OUT_FEATURES = ["res2", "res3", "res4", "res5"]  # build all four stages
        cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 256 if depth == 50 else 64
        model = build_resnet_backbone(cfg, ShapeSpec(channels=3))
        assert zero_gamma_(model) == blocks
        for name, module in model.named_modules():
            if hasattr(module, "weight") and "Norm" in type(module).__name__ and name.startswith("res"):
                expected = 0.0 if name.endswith(last) else 1.0
                assert torch.all(module.weight == expected), name


def test_zero_gamma_on_mmdet_resnet():
    pytest.importorskip("mmdet")
    from mmdet.models.backbones import ResNet

    for depth, blocks, last in ((50, 16, "norm3"), (18, 8, "norm2")):
        model = ResNet(depth=depth)
        model.init_weights()
        assert zero_gamma_(model) == blocks
        block_type = type(model.layer1[0])
        for block in model.modules():
            if isinstance(block, block_type):
                assert torch.all(getattr(block, last).weight == 0)
                assert torch.all(block.norm1.weight == 1)


def test_zero_gamma_on_mmseg_resnet_v1c():
    pytest.importorskip("mmseg")
    from mmseg.models.backbones import ResNetV1c

    model = ResNetV1c(depth=50)
    assert zero_gamma_(model) == 16
    assert all(
        torch.all(block.norm3.weight == 0) for stage in model.res_layers for block in getattr(model, stage)
    )


def test_zero_gamma_refuses_a_model_without_residual_blocks():
    with pytest.raises(ValueError, match="no residual block"):
        zero_gamma_(nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8)))


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"variant": "e"}, "variant"),
        ({"variant": "b", "depth": 20}, "depth"),
        ({"variant": "b", "width_multiplier": 0}, "width_multiplier"),
        ({"variant": "b", "stem_width": 0}, "stem_width"),
        ({"variant": "b", "avg_down": True}, "avg_down"),
        ({"variant": "b", "zero_init_last": True}, "zero_init_last"),
    ],
)
def test_invalid_arguments_name_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        create_resnet(**kwargs)
