import importlib
import warnings

import pytest
import timm
import torch
from timm.models.resnet import Bottleneck

import timm_ext  # noqa: F401  (registers the tricks_* models)
from plugins.models import timm_models as tricks_models
from plugins.models.features import TimmFeatures

EXPECTED = sorted(
    f"tricks_resnet{family}{variant}" for family in ("18", "26", "50", "26n", "50n") for variant in "abcd"
)


def test_list_models_lists_every_family_and_variant():
    assert sorted(timm.list_models("tricks_*")) == EXPECTED


@pytest.mark.parametrize("name", EXPECTED)
def test_every_registered_model_builds_and_runs_forward(name):
    model = timm.create_model(name, pretrained=False, num_classes=7, in_chans=1).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 1, 32, 32))
    assert out.shape == (2, 7), name
    assert torch.isfinite(out).all(), name
    assert model.pretrained_cfg["url"] == "" and model.pretrained_cfg["architecture"] == name


@pytest.mark.parametrize("variant, timm_name", [("b", "resnet50"), ("c", "resnet50c"), ("d", "resnet50d")])
def test_depth_50_parameter_counts_match_timm(variant, timm_name):
    ours = timm.create_model(f"tricks_resnet50{variant}")
    theirs = timm.create_model(timm_name)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(ours) == count(theirs), f"tricks_resnet50{variant} vs {timm_name}"
    assert [tuple(v.shape) for v in ours.state_dict().values()] == [
        tuple(v.shape) for v in theirs.state_dict().values()
    ], f"tricks_resnet50{variant} tensor shapes differ from {timm_name}"


def test_variant_a_has_its_stride_in_the_first_1x1_conv():
    a, b = timm.create_model("tricks_resnet50a"), timm.create_model("tricks_resnet50b")
    assert a.layer2[0].conv1.stride == (2, 2) and a.layer2[0].conv2.stride == (1, 1)
    assert b.layer2[0].conv1.stride == (1, 1) and b.layer2[0].conv2.stride == (2, 2)


def test_narrow_small_input_family_keeps_resolution_in_the_stem():
    model = timm.create_model("tricks_resnet26nd", num_classes=0, in_chans=1)
    assert isinstance(model.maxpool, torch.nn.Identity)
    assert model.num_features == 128 * Bottleneck.expansion  # stage widths x 0.25
    assert timm.create_model("tricks_resnet50nd").layer3[5] is not None  # depth 50: 3-4-6-3 blocks


def _last_gammas(model):
    return torch.cat([m.bn3.weight.detach() for m in model.modules() if isinstance(m, Bottleneck)])


def test_zero_gamma_is_off_by_default_and_on_when_asked():
    assert torch.all(_last_gammas(timm.create_model("tricks_resnet26d")) == 1)  # timm would zero them
    assert torch.all(_last_gammas(timm.create_model("tricks_resnet26d", zero_gamma=True)) == 0)
    assert torch.all(_last_gammas(timm.create_model("tricks_resnet26d", zero_init_last=True)) == 0)


def test_timm_kwargs_pass_through():
    model = timm.create_model("tricks_resnet26d", output_stride=16, num_classes=0, global_pool="max")
    assert model.feature_info[-1]["reduction"] == 16
    assert model.global_pool.pool_type == "max"
    features = timm.create_model("tricks_resnet26nd", features_only=True, out_indices=(2, 4), in_chans=1)
    shapes = [f.shape for f in features(torch.randn(1, 1, 32, 32))]
    assert shapes == [(1, 128, 8, 8), (1, 512, 2, 2)]  # strides 4 and 16 without the stem max-pool


def test_registration_never_overwrites_an_existing_timm_name(monkeypatch):
    before = timm.models.model_entrypoint("resnet50")
    monkeypatch.setattr(tricks_models, "_NAMES", {"resnet50": ("50", "d")})
    with pytest.warns(UserWarning, match="leaves it in place"):
        tricks_models._register_all()
    assert timm.models.model_entrypoint("resnet50") is before
    assert not hasattr(tricks_models, "resnet50")


def test_reimport_registers_nothing_twice():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        importlib.reload(tricks_models)
    assert sorted(timm.list_models("tricks_*")) == EXPECTED


def test_timm_features_matches_timm_forward_intermediates():
    torch.manual_seed(0)
    features = TimmFeatures("tricks_resnet26nd", out_indices=(0, 1, 2, 3, 4), in_chans=1).eval()
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        ours = features(x)
        theirs = features.model.forward_intermediates(x, indices=[0, 1, 2, 3, 4], intermediates_only=True)
    for index, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=f"feature index {index}")
    assert features.out_channels == [16, 64, 128, 256, 512]
    assert features.out_strides == [2, 2, 4, 8, 16]  # small input: no stem max-pool
    assert [o.shape[-1] for o in ours] == [64 // s for s in features.out_strides]


@pytest.mark.parametrize("name", EXPECTED)
def test_create_model_places_every_tensor_on_the_given_device_and_dtype(name):
    # timm's test_model_default_cfgs builds every model with device="meta"; nothing may stay on the CPU
    # or in the default dtype (the narrow A/B stem swaps in its own 7x7 conv).
    model = timm.create_model(name, device="meta", dtype=torch.float64)
    tensors = [*model.named_parameters(), *model.named_buffers()]
    assert [n for n, t in tensors if t.device != torch.device("meta")] == [], name
    assert [n for n, t in tensors if t.is_floating_point() and t.dtype != torch.float64] == [], name
