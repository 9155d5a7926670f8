"""Model and optimizer construction of timm_ext.train: zero gamma and bias decay exactly as the recipe says."""

import pytest
import timm
import torch
from timm.models.resnet import Bottleneck
from timm.optim import param_groups_weight_decay

from plugins.recipe import Recipe
from timm_ext._args import UsageError
from timm_ext._engine import build_model, build_optimizer, mixup_epsilon


def _last_gammas(model):
    return torch.cat([m.bn3.weight.detach() for m in model.modules() if isinstance(m, Bottleneck)])


@pytest.mark.parametrize("name", ["resnet26d", "tricks_resnet26d"])
def test_timm_zero_init_last_is_off_unless_the_recipe_says_zero_gamma(name):
    assert torch.all(_last_gammas(build_model(name, 10, 3, zero_gamma=False)) == 1), name
    assert torch.all(_last_gammas(build_model(name, 10, 3, zero_gamma=True)) == 0), name


def test_same_seed_gives_timm_init_with_zero_gamma_applied_after():
    torch.manual_seed(0)
    ours = build_model("resnet26d", 10, 3, zero_gamma=True)
    torch.manual_seed(0)
    theirs = timm.create_model("resnet26d", num_classes=10)  # timm's zero_init_last=True
    for key, value in theirs.state_dict().items():
        torch.testing.assert_close(ours.state_dict()[key], value, rtol=0, atol=0, msg=key)


def test_bias_decay_is_one_group_and_no_bias_decay_matches_timm_param_groups():
    model = build_model("tricks_resnet26nd", 10, 1, zero_gamma=False)
    baseline = Recipe.preset("baseline")
    optimizer = build_optimizer(model, baseline, "nesterov", 0.1)
    assert len(optimizer.param_groups) == 1
    assert optimizer.param_groups[0]["weight_decay"] == baseline.weight_decay
    assert len(optimizer.param_groups[0]["params"]) == len(list(model.parameters()))
    assert optimizer.defaults["nesterov"] and optimizer.defaults["momentum"] == baseline.momentum
    optimizer = build_optimizer(model, baseline.with_overrides(no_bias_decay=True), "nesterov", 0.1)
    ours = {g["weight_decay"]: {id(p) for p in g["params"]} for g in optimizer.param_groups}
    timm_groups = {g["weight_decay"]: {id(p) for p in g["params"]} for g in param_groups_weight_decay(model, 1e-4)}
    assert ours == timm_groups
    assert isinstance(build_optimizer(model, baseline, "adamw", 1e-3), torch.optim.AdamW)
    plain = build_optimizer(model, baseline.with_overrides(nesterov=False), "momentum", 0.1)
    assert not plain.defaults["nesterov"]


def test_mixup_smoothing_gives_the_recipe_form():
    recipe = Recipe.preset("paper")
    assert mixup_epsilon(recipe, 10) == pytest.approx(0.1 * 10 / 9)  # paper form: eps / (K - 1) off-class
    assert mixup_epsilon(recipe.with_overrides(label_smoothing_form="uniform"), 10) == 0.1


def test_model_kwargs_owned_by_other_flags_are_refused():
    with pytest.raises(UsageError, match="--zero-gamma"):
        build_model("resnet26d", 10, 3, zero_gamma=False, model_kwargs={"zero_init_last": True})
