import pytest
import torch
from torch import nn

from plugins.tricks.no_bias_decay import describe_param_groups, no_bias_decay_param_groups

torchvision = pytest.importorskip("torchvision")


def _ids(params):
    return {id(p) for p in params}


def test_torchvision_resnet50_groups_follow_the_definition():
    model = torchvision.models.resnet50()
    decay, no_decay = no_bias_decay_param_groups(model, 1e-4)
    assert (decay["name"], decay["weight_decay"]) == ("decay", 1e-4)
    assert (no_decay["name"], no_decay["weight_decay"]) == ("no_decay", 0.0)

    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert (len(convs), len(bns)) == (53, 53)
    expected_decay = [m.weight for m in convs] + [model.fc.weight]
    expected_no_decay = [p for m in bns for p in (m.weight, m.bias)] + [model.fc.bias]
    assert len(decay["params"]) == 54 and len(no_decay["params"]) == 107
    assert _ids(decay["params"]) == _ids(expected_decay)
    assert _ids(no_decay["params"]) == _ids(expected_no_decay)
    assert _ids(decay["params"]) | _ids(no_decay["params"]) == _ids(model.parameters())


def test_same_split_as_timm_filter_on_a_timm_resnet():
    timm = pytest.importorskip("timm")
    from timm.optim import param_groups_weight_decay

    model = timm.create_model("resnet18", pretrained=False, num_classes=10)
    ours = {g["weight_decay"]: _ids(g["params"]) for g in no_bias_decay_param_groups(model, 0.05)}
    theirs = {g["weight_decay"]: _ids(g["params"]) for g in param_groups_weight_decay(model, 0.05)}
    assert ours == theirs


class _MyNorm(nn.Module):  # stands for a framework's own norm class (mmcv, Detectron2)
    def __init__(self, channels):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))


class _Zoo(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)  # weight -> decay, bias -> no decay
        self.gn = nn.GroupNorm(2, 4)
        self.ln = nn.LayerNorm(4)
        self.custom = _MyNorm(4)
        self.embed = nn.Embedding(5, 4)  # 2-D, other module -> decay
        self.scale = nn.Parameter(torch.ones(1))  # 1-D, other -> no decay
        self.frozen = nn.Linear(4, 4)
        self.frozen.requires_grad_(False)
        self.head = nn.Linear(4, 2, bias=False)
        self.tied = nn.Linear(4, 2, bias=False)
        self.tied.weight = self.head.weight  # shared: counted once


def test_norms_biases_others_frozen_and_shared():
    model = _Zoo()
    decay, no_decay = no_bias_decay_param_groups(model, 0.1)
    assert _ids(decay["params"]) == _ids([model.conv.weight, model.embed.weight, model.head.weight])
    expected = [model.conv.bias, model.gn.weight, model.gn.bias, model.ln.weight, model.ln.bias]
    expected += [model.custom.weight, model.custom.bias, model.scale]
    assert _ids(no_decay["params"]) == _ids(expected)
    assert len(decay["params"]) == 3, "the tied weight appears once"


def test_groups_work_in_an_optimizer_and_describe():
    model = _Zoo()
    groups = no_bias_decay_param_groups(model, 0.1)
    optimizer = torch.optim.SGD(groups, lr=0.1, momentum=0.9)
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.1, 0.0]
    text = describe_param_groups(groups)
    assert "decay: weight_decay=0.1, 3 tensors" in text
    assert "no_decay: weight_decay=0.0, 8 tensors" in text


@pytest.mark.parametrize("bad", [-1e-4, float("nan"), "1e-4", True])
def test_bad_weight_decay_is_rejected(bad):
    with pytest.raises(ValueError, match="weight_decay"):
        no_bias_decay_param_groups(nn.Linear(2, 2), bad)
