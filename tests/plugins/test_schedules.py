import io
import math
import warnings

import pytest
import torch
from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, MultiStepLR, SequentialLR

from plugins.recipe.plan import LrSchedule, ScheduleLR
from plugins.tricks.lr_schedule import (
    linear_warmup_factor,
    lr_factor,
    scale_lr,
    warmup_cosine_factor,
    warmup_step_factor,
)

BASE_LRS = (0.4, 0.1)


def WarmupCosineLR(optimizer, total_steps, warmup_steps, min_lr_ratio=0.0):  # noqa: N802 (reads as a class)
    return ScheduleLR(optimizer, LrSchedule("cosine", total_steps, warmup_steps, min_lr_ratio))


def WarmupStepLR(optimizer, total_steps, warmup_steps, milestones, gamma=0.1):  # noqa: N802
    return ScheduleLR(optimizer, LrSchedule("step", total_steps, warmup_steps, milestones=milestones, gamma=gamma))


def _optimizer():
    params = [torch.nn.Parameter(torch.zeros(1)) for _ in BASE_LRS]
    groups = [{"params": [p], "lr": lr} for p, lr in zip(params, BASE_LRS)]
    return torch.optim.SGD(groups, lr=1.0, momentum=0.9)


def _lrs(optimizer):
    return torch.tensor([g["lr"] for g in optimizer.param_groups], dtype=torch.float64)


def _run(optimizer, scheduler, steps):
    """lr of each group for updates 1..steps (the lr in effect when optimizer.step() runs)."""
    seen = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns about SequentialLR internals
        for _ in range(steps):
            seen.append(_lrs(optimizer))
            optimizer.step()
            scheduler.step()
    return torch.stack(seen)


def test_scale_lr_is_linear():
    assert scale_lr(0.1, 1024) == pytest.approx(0.4, rel=1e-12)
    assert scale_lr(0.1, 64, base_batch_size=256) == pytest.approx(0.025, rel=1e-12)


@pytest.mark.parametrize(
    ("i", "expected"),
    [
        (1, 0.5),  # first update: 1 / m
        (2, 1.0),  # warmup end: full lr
        (3, 0.5 * (1 + math.cos(math.pi / 8))),  # first cosine update
        (6, 0.5),  # middle of the cosine: t = T / 2
        (10, 0.0),  # last update: min_lr_ratio
    ],
)
def test_warmup_cosine_hand_values(i, expected):
    got = warmup_cosine_factor(i, total_steps=10, warmup_steps=2)
    assert got == pytest.approx(expected, abs=1e-12), f"update {i}"


def test_warmup_cosine_min_lr_ratio_and_no_warmup():
    assert warmup_cosine_factor(10, 10, 2, min_lr_ratio=0.1) == pytest.approx(0.1, abs=1e-12)
    assert warmup_cosine_factor(6, 10, 2, min_lr_ratio=0.1) == pytest.approx(0.55, abs=1e-12)
    assert warmup_cosine_factor(1, 4, 0) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)), abs=1e-12)
    assert [warmup_cosine_factor(i, 4, 4) for i in range(1, 5)] == pytest.approx([0.25, 0.5, 0.75, 1.0])


@pytest.mark.parametrize(
    ("i", "expected"),
    [(1, 1 / 3), (3, 1.0), (6, 1.0), (7, 0.1), (9, 0.1), (10, 0.01), (12, 0.01)],
)
def test_warmup_step_hand_values(i, expected):
    got = warmup_step_factor(i, total_steps=12, warmup_steps=3, milestones=(6, 9), gamma=0.1)
    assert got == pytest.approx(expected, rel=1e-12), f"update {i}"


def test_lr_factor_dispatch():
    assert lr_factor("cosine", 5, 10, 2, min_lr_ratio=0.2) == warmup_cosine_factor(5, 10, 2, 0.2)
    assert lr_factor("step", 7, 12, 3, milestones=(6,), gamma=0.5) == warmup_step_factor(7, 12, 3, (6,), 0.5)
    assert lr_factor("constant", 1, 12, 4) == linear_warmup_factor(1, 4) == 0.25
    assert lr_factor("constant", 12, 12, 4) == 1.0


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: warmup_cosine_factor(0, 10, 2), "i"),
        (lambda: warmup_cosine_factor(11, 10, 2), "i"),
        (lambda: warmup_cosine_factor(1, 0, 0), "total_steps"),
        (lambda: warmup_cosine_factor(1, 10, 11), "warmup_steps"),
        (lambda: warmup_cosine_factor(1, 10, -1), "warmup_steps"),
        (lambda: warmup_cosine_factor(1, 10, 2, min_lr_ratio=1.5), "min_lr_ratio"),
        (lambda: warmup_step_factor(1, 10, 2, milestones=(5, 3)), "milestones"),
        (lambda: warmup_step_factor(1, 10, 2, milestones=(11,)), "milestones"),
        (lambda: warmup_step_factor(1, 10, 2, milestones=(5,), gamma=0.0), "gamma"),
        (lambda: lr_factor("linear", 1, 10, 2), "schedule"),
        (lambda: scale_lr(-0.1, 256), "base_lr"),
        (lambda: scale_lr(0.1, 0), "batch_size"),
        (lambda: WarmupCosineLR(_optimizer(), 10, 20), "warmup_steps"),
    ],
)
def test_invalid_arguments_name_the_argument(call, name):
    with pytest.raises(ValueError, match=name):
        call()


def test_warmup_cosine_scheduler_matches_torch_linear_then_cosine():
    # torch's LinearLR(1/m, total_iters=m-1) followed at step m-1 by CosineAnnealingLR(T) is our schedule:
    # after k steps, (k+1)/m in warmup and 0.5 * (1 + cos(pi * (k + 1 - m) / T)) after it.
    warmup, decay = 5, 20
    total = warmup + decay
    ours_opt, ref_opt = _optimizer(), _optimizer()
    ours = WarmupCosineLR(ours_opt, total_steps=total, warmup_steps=warmup)
    ref = SequentialLR(
        ref_opt,
        [LinearLR(ref_opt, 1 / warmup, 1.0, total_iters=warmup - 1), CosineAnnealingLR(ref_opt, T_max=decay)],
        milestones=[warmup - 1],
    )
    got, expected = _run(ours_opt, ours, total), _run(ref_opt, ref, total)
    for step in range(total):
        torch.testing.assert_close(got[step], expected[step], rtol=1e-9, atol=1e-12, msg=f"update {step + 1}")
    torch.testing.assert_close(
        got[0], torch.tensor(BASE_LRS, dtype=torch.float64) / warmup, rtol=1e-12, atol=0
    )
    torch.testing.assert_close(got[-1], torch.zeros(2, dtype=torch.float64), rtol=0, atol=1e-12)


def test_cosine_without_warmup_is_torch_cosine_one_step_ahead():
    total = 12
    ours_opt, ref_opt = _optimizer(), _optimizer()
    ours = WarmupCosineLR(ours_opt, total_steps=total, warmup_steps=0)
    ref = CosineAnnealingLR(ref_opt, T_max=total)
    expected = _run(ref_opt, ref, total + 1)[1:]  # torch starts at factor(0) = 1; we start at update 1
    got = _run(ours_opt, ours, total)
    for step in range(total):
        torch.testing.assert_close(got[step], expected[step], rtol=1e-9, atol=1e-12, msg=f"update {step + 1}")


def test_warmup_step_scheduler_matches_torch_linear_then_multistep():
    warmup, total, milestones = 4, 30, (10, 20)
    ours_opt, ref_opt = _optimizer(), _optimizer()
    ours = WarmupStepLR(ours_opt, total, warmup, milestones, gamma=0.1)
    shifted = [m - warmup + 1 for m in milestones]
    ref = SequentialLR(
        ref_opt,
        [
            LinearLR(ref_opt, 1 / warmup, 1.0, total_iters=warmup - 1),
            MultiStepLR(ref_opt, shifted, gamma=0.1),
        ],
        milestones=[warmup - 1],
    )
    got, expected = _run(ours_opt, ours, total), _run(ref_opt, ref, total)
    for step in range(total):
        torch.testing.assert_close(got[step], expected[step], rtol=1e-9, atol=1e-12, msg=f"update {step + 1}")


def test_scheduler_convention_clamp_and_per_group_base_lr():
    optimizer = _optimizer()
    scheduler = WarmupCosineLR(optimizer, total_steps=6, warmup_steps=2, min_lr_ratio=0.1)
    expected = [[lr * warmup_cosine_factor(min(k + 1, 6), 6, 2, 0.1) for lr in BASE_LRS] for k in range(9)]
    got = _run(optimizer, scheduler, 9)  # three steps beyond the end stay at the last value
    torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float64), rtol=1e-12, atol=0)
    assert [g["initial_lr"] for g in optimizer.param_groups] == list(BASE_LRS)


@pytest.mark.parametrize(
    "make",
    [
        lambda opt: WarmupCosineLR(opt, total_steps=20, warmup_steps=3, min_lr_ratio=0.05),
        lambda opt: WarmupStepLR(opt, total_steps=20, warmup_steps=3, milestones=(8, 15)),
    ],
    ids=["cosine", "step"],
)
def test_state_dict_round_trip(make):
    optimizer = _optimizer()
    scheduler = make(optimizer)
    _run(optimizer, scheduler, 7)
    buffer = io.BytesIO()
    torch.save({"scheduler": scheduler.state_dict(), "optimizer": optimizer.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)  # only plain types in the state

    resumed_opt = _optimizer()
    resumed = make(resumed_opt)
    resumed_opt.load_state_dict(saved["optimizer"])
    resumed.load_state_dict(saved["scheduler"])
    torch.testing.assert_close(_lrs(resumed_opt), _lrs(optimizer), rtol=0, atol=0, msg="right after resume")
    torch.testing.assert_close(_run(resumed_opt, resumed, 13), _run(optimizer, scheduler, 13), rtol=0, atol=0)


def test_lr_schedule_is_validated_once_and_clamps_past_the_end():
    plan = LrSchedule("step", 10, 2, milestones=[5, 8], gamma=0.5)
    assert plan.milestones == (5, 8) and hash(plan) == hash(LrSchedule("step", 10, 2, milestones=(5, 8), gamma=0.5))
    assert [plan.factor(i) for i in (1, 2, 5, 6, 9, 10, 11, 99)] == [0.5, 1, 1, 0.5, 0.25, 0.25, 0.25, 0.25]
    assert plan.lrs([0.4, 0.1], 5) == [0.4 * 0.5, 0.1 * 0.5], "done=5 completed updates: the lr of update 6"
    for kwargs, name in [(dict(schedule="linear", total_steps=5), "schedule"),
                         (dict(schedule="cosine", total_steps=0), "total_steps"),
                         (dict(schedule="cosine", total_steps=5, warmup_steps=6), "warmup_steps"),
                         (dict(schedule="step", total_steps=5, milestones=(6,)), "milestones")]:
        with pytest.raises(ValueError, match=name):
            LrSchedule(**kwargs)
    with pytest.raises(TypeError, match="LrSchedule"):
        ScheduleLR(_optimizer(), 10)


def test_epochs_to_steps_is_the_one_conversion_and_pins_its_rounding():
    from plugins.recipe import Recipe
    from plugins.recipe.plan import epochs_to_steps

    # nearest update, halves to even; floating-point products such as 2.3 * 10 = 22.999... still give 23
    cases = [(0.5, 5, 2), (1.5, 5, 8), (2.5, 5, 12), (2.3, 10, 23), (0.1, 30, 3), (3, 7, 21), (0, 9, 0)]
    for epochs, per_epoch, steps in cases:
        assert epochs_to_steps(epochs, per_epoch) == steps, (epochs, per_epoch)
    for bad in (-1, float("nan"), float("inf"), True, "2"):
        with pytest.raises(ValueError, match="epochs must be a finite number"):
            epochs_to_steps(bad, 5)
    with pytest.raises(ValueError, match="steps_per_epoch"):
        epochs_to_steps(1, 0)
    recipe = Recipe.preset("paper").with_overrides(epochs=10, warmup_epochs=2.3, schedule="cosine")
    assert recipe.warmup_steps(10) == 23 and recipe.total_steps(10) == 100  # the recipe converts through it
