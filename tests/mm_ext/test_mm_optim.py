"""NoBiasDecayOptimWrapperConstructor: two groups on mmdet's ResNet-50, optimizer settings kept, auto_scale_lr."""

# ruff: noqa: E402  (imports follow pytest.importorskip)

import pytest

pytest.importorskip("mmengine")
mmdet_backbones = pytest.importorskip("mmdet.models.backbones")

import torch
from mmengine.optim import OptimWrapper, build_optim_wrapper
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS
from mmengine.runner import Runner
from torch import nn

import mm_ext
from plugins.tricks.lr_schedule import scale_lr

OPTIMIZER = dict(type="SGD", lr=0.02, momentum=0.9, weight_decay=1e-4, nesterov=True)


def _by_definition(model):
    """Decay: conv and linear weights; no decay: biases and norm parameters; frozen parameters left out."""
    decay, no_decay = set(), set()
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad:
                continue
            if isinstance(module, nn.Conv2d | nn.Linear) and name == "weight":
                decay.add(id(param))
            else:
                no_decay.add(id(param))
    return decay, no_decay


@pytest.mark.parametrize("frozen_stages", [-1, 1])
def test_groups_on_mmdet_resnet50(frozen_stages):
    model = mmdet_backbones.ResNet(depth=50, frozen_stages=frozen_stages)
    wrapper = build_optim_wrapper(
        model, dict(constructor="NoBiasDecayOptimWrapperConstructor", optimizer=dict(OPTIMIZER), clip_grad=None)
    )
    assert isinstance(wrapper, OptimWrapper)
    groups = wrapper.optimizer.param_groups
    assert len(groups) == 2, "two groups, not one per parameter"
    decay, no_decay = _by_definition(model)
    assert {id(p) for p in groups[0]["params"]} == decay
    assert {id(p) for p in groups[1]["params"]} == no_decay
    if frozen_stages == -1:
        # ResNet-50: 53 convolutions (stem, 16 bottlenecks x 3, 4 downsamples), each followed by a BN (2 params).
        assert (len(decay), len(no_decay)) == (53, 106)
    assert groups[0]["weight_decay"] == 1e-4 and groups[1]["weight_decay"] == 0.0
    for group in groups:
        assert (group["lr"], group["momentum"], group["nesterov"]) == (0.02, 0.9, True), "optimizer settings kept"


def test_registered_and_refuses_paramwise_cfg():
    assert OPTIM_WRAPPER_CONSTRUCTORS.get("NoBiasDecayOptimWrapperConstructor") is (
        mm_ext.NoBiasDecayOptimWrapperConstructor
    )
    with pytest.raises(ValueError, match="paramwise_cfg"):
        mm_ext.NoBiasDecayOptimWrapperConstructor(dict(optimizer=dict(OPTIMIZER)), dict(norm_decay_mult=0.0))


def test_optimizer_default_weight_decay_is_used_when_config_has_none(toy):
    wrapper = build_optim_wrapper(
        toy.Model(), dict(constructor="NoBiasDecayOptimWrapperConstructor", optimizer=dict(type="AdamW", lr=1e-3))
    )
    assert [g["weight_decay"] for g in wrapper.optimizer.param_groups] == [1e-2, 0.0]  # AdamW's default


def _first_lrs(toy, tmp_path, constructor, auto_scale_lr):
    recorder = toy.LrRecorder()
    runner = Runner(
        model=toy.Model(),
        work_dir=str(tmp_path),
        train_dataloader=dict(
            dataset=toy.Dataset(),
            batch_size=4,
            sampler=dict(type="DefaultSampler", shuffle=False),
            collate_fn=dict(type="default_collate"),
        ),
        optim_wrapper=dict(constructor=constructor, optimizer=dict(OPTIMIZER)),
        train_cfg=dict(by_epoch=False, max_iters=1),
        auto_scale_lr=auto_scale_lr,
        custom_hooks=[recorder],
        default_hooks=dict(checkpoint=None),
        experiment_name=f"{constructor}_{id(recorder)}",
    )
    runner.train()
    return recorder.lrs[1]


def test_auto_scale_lr_scales_both_groups_like_mmengine(toy, tmp_path):
    ours_plain = _first_lrs(toy, tmp_path / "a", "NoBiasDecayOptimWrapperConstructor", None)
    assert ours_plain == [0.02, 0.02]
    scaling = dict(enable=True, base_batch_size=16)  # global batch 4 (one process x batch 4)
    ours = _first_lrs(toy, tmp_path / "b", "NoBiasDecayOptimWrapperConstructor", scaling)
    mmengine_default = _first_lrs(toy, tmp_path / "c", "DefaultOptimWrapperConstructor", scaling)
    expected = scale_lr(0.02, batch_size=4, base_batch_size=16)
    torch.testing.assert_close(ours, [expected] * 2, rtol=1e-12, atol=0.0, msg="auto_scale_lr: linear rule")
    torch.testing.assert_close(ours, mmengine_default * 2, rtol=1e-12, atol=0.0, msg="auto_scale_lr vs MMEngine")
