"""WarmupCosineLR in a real MMEngine Runner: the lr of every update equals plugins.tricks.lr_schedule, also after resume."""

# ruff: noqa: E402  (imports follow pytest.importorskip)

import pytest

pytest.importorskip("mmengine")

import torch
from mmengine.registry import PARAM_SCHEDULERS
from mmengine.runner import Runner

import mm_ext
from plugins.tricks.lr_schedule import warmup_cosine_factor

BASE_LR = 0.1
HEAD_LR_MULT = 0.5  # fc2 gets another base lr: the param groups do not share one
ITERS_PER_EPOCH = 4  # 16 samples, batch 4


def _run(toy, work_dir, scheduler, train_cfg, resume=False, name="run"):
    recorder = toy.LrRecorder()
    runner = Runner(
        model=toy.Model(),
        work_dir=str(work_dir),
        train_dataloader=dict(
            dataset=toy.Dataset(),
            batch_size=4,
            sampler=dict(type="DefaultSampler", shuffle=True),
            collate_fn=dict(type="default_collate"),
        ),
        optim_wrapper=dict(
            optimizer=dict(type="SGD", lr=BASE_LR, momentum=0.9, weight_decay=1e-4),
            paramwise_cfg=dict(custom_keys={"fc2": dict(lr_mult=HEAD_LR_MULT)}),
        ),
        param_scheduler=[scheduler],
        train_cfg=train_cfg,
        custom_hooks=[recorder],
        default_hooks=dict(checkpoint=dict(type="CheckpointHook", interval=1, by_epoch=train_cfg["by_epoch"])),
        resume=resume,
        randomness=dict(seed=0),
        experiment_name=f"{name}_{id(recorder)}",
    )
    runner.train()
    return recorder.lrs, runner


def _expected(lrs, total, warmup, min_lr_ratio, runner):
    bases = [group["initial_lr"] for group in runner.optim_wrapper.optimizer.param_groups]
    assert sorted(set(bases)) == [BASE_LR * HEAD_LR_MULT, BASE_LR], "the run must have two different base lrs"
    return {i: [b * warmup_cosine_factor(i, total, warmup, min_lr_ratio) for b in bases] for i in lrs}


def _check(lrs, expected, case):
    for i in sorted(expected):
        torch.testing.assert_close(
            torch.tensor(lrs[i], dtype=torch.float64),
            torch.tensor(expected[i], dtype=torch.float64),
            rtol=1e-12,
            atol=0.0,
            msg=lambda m, i=i: f"{case}: lr of update {i}: {m}",
        )


def test_registered_in_root_registry():
    assert PARAM_SCHEDULERS.get("WarmupCosineLR") is mm_ext.WarmupCosineLR


def test_by_epoch_converted_to_iterations_with_resume(toy, tmp_path):
    # 4 epochs of 4 iterations, 1 warmup epoch: per-update warmup over 4 updates, cosine over the other 12.
    scheduler = dict(
        type="WarmupCosineLR", warmup_steps=1, min_lr_ratio=0.01, by_epoch=True, convert_to_iter_based=True
    )
    full, runner = _run(toy, tmp_path / "full", scheduler, dict(by_epoch=True, max_epochs=4), name="full")
    total = 4 * ITERS_PER_EPOCH
    assert sorted(full) == list(range(1, total + 1))
    _check(full, _expected(full, total, ITERS_PER_EPOCH, 0.01, runner), "by epoch, uninterrupted")

    # The same schedule stopped after 2 epochs (end given explicitly), then resumed to 4 epochs.
    stopped = dict(scheduler, end=4)
    first, _ = _run(toy, tmp_path / "part", stopped, dict(by_epoch=True, max_epochs=2), name="first")
    second, runner = _run(toy, tmp_path / "part", stopped, dict(by_epoch=True, max_epochs=4), resume=True, name="second")
    assert sorted(first) == list(range(1, 9)) and sorted(second) == list(range(9, total + 1))
    _check({**first, **second}, _expected(full, total, ITERS_PER_EPOCH, 0.01, runner), "by epoch, resumed")


def test_by_iteration_with_resume(toy, tmp_path):
    scheduler = dict(type="WarmupCosineLR", warmup_steps=3, by_epoch=False, end=10)
    full, runner = _run(toy, tmp_path / "full", scheduler, dict(by_epoch=False, max_iters=10), name="full")
    assert sorted(full) == list(range(1, 11))
    expected = _expected(full, 10, 3, 0.0, runner)
    _check(full, expected, "by iteration, uninterrupted")
    assert full[10] == [0.0] * len(full[10]), "the last update of a min_lr_ratio=0 cosine has lr 0"

    _, _ = _run(toy, tmp_path / "part", scheduler, dict(by_epoch=False, max_iters=6, val_interval=100), name="first")
    second, _ = _run(toy, tmp_path / "part", scheduler, dict(by_epoch=False, max_iters=10), resume=True, name="second")
    assert sorted(second) == list(range(7, 11))
    _check(second, {i: expected[i] for i in second}, "by iteration, resumed at update 7")


def _optimizer():
    weights = [torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))]
    return torch.optim.SGD([{"params": [weights[0]], "lr": 0.2}, {"params": [weights[1]], "lr": 0.05}], lr=0.1)


def test_begin_offset_and_state_dict_round_trip():
    optimizer = _optimizer()
    scheduler = mm_ext.WarmupCosineLR(optimizer, warmup_steps=2, begin=3, end=11, by_epoch=False)
    seen = []
    for _ in range(12):
        seen.append([group["lr"] for group in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    for step, lrs in enumerate(seen):
        if step < 3:
            expected = [0.2, 0.05]  # before begin the scheduler leaves the lr alone
        else:
            i = min(step - 3 + 1, 8)
            expected = [b * warmup_cosine_factor(i, 8, 2) for b in (0.2, 0.05)]
        torch.testing.assert_close(lrs, expected, rtol=1e-12, atol=0.0, msg=lambda m, s=step: f"step {s}: {m}")

    # A scheduler restored from state_dict onto a fresh optimizer continues the same curve.
    optimizer = _optimizer()
    reference = mm_ext.WarmupCosineLR(optimizer, warmup_steps=2, begin=0, end=8, by_epoch=False)
    for _ in range(4):
        optimizer.step()
        reference.step()
    state = reference.state_dict()
    restored_optimizer = _optimizer()
    restored_optimizer.load_state_dict(optimizer.state_dict())
    restored = mm_ext.WarmupCosineLR(restored_optimizer, warmup_steps=2, begin=0, end=8, by_epoch=False)
    restored.load_state_dict(state)
    for _ in range(3):
        for opt, sched in ((optimizer, reference), (restored_optimizer, restored)):
            opt.step()
            sched.step()
        torch.testing.assert_close(
            [g["lr"] for g in restored_optimizer.param_groups],
            [g["lr"] for g in optimizer.param_groups],
            rtol=0.0,
            atol=0.0,
            msg="restored scheduler drifted from the original",
        )


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        (dict(warmup_steps=5, end=4), "warmup_steps"),
        (dict(warmup_steps=-1, end=4), "warmup_steps"),
        (dict(min_lr_ratio=1.5, end=4), "min_lr_ratio"),
        (dict(), "end"),
        (dict(begin=4, end=4), "end"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        mm_ext.WarmupCosineLR(_optimizer(), by_epoch=False, **kwargs)


def test_convert_to_iter_based_needs_by_epoch():
    with pytest.raises(ValueError, match="by_epoch"):
        mm_ext.WarmupCosineLR.build_iter_from_epoch(_optimizer(), end=2, by_epoch=False, epoch_length=4)


def test_epoch_based_config_converts_epochs_as_the_recipe_does():
    from plugins.recipe import Recipe

    recipe = Recipe.preset("paper").with_overrides(epochs=10, warmup_epochs=2.3, schedule="cosine")
    sched = mm_ext.WarmupCosineLR.build_iter_from_epoch(_optimizer(), warmup_steps=2.3, begin=0, end=10,
                                                        epoch_length=10)
    assert (sched.plan.warmup_steps, sched.plan.total_steps) == (recipe.warmup_steps(10), recipe.total_steps(10)) == (23, 100)
