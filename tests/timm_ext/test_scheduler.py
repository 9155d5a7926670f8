"""TricksScheduler against plugins.tricks.lr_schedule at every update, and against timm's own CosineLRScheduler.

Convention: update i (from 1) runs at ``base_lr * factor(i)``. A timm loop calls ``step_update(k)`` after k
updates, so TricksScheduler answers ``factor(k + 1)`` there. timm's CosineLRScheduler (warmup_prefix=True,
warmup_lr_init=0, t_in_epochs=False) computes the paper's lr of update i at its ``t = i``; in timm's own loop
it runs update i at ``t = i - 1`` (the first update at warmup_lr_init). The comparison maps ``t = i``.
"""

import pytest
import torch
from timm.scheduler import CosineLRScheduler

from plugins.recipe import Recipe
from plugins.recipe.plan import LrSchedule, ScheduleLR
from plugins.tricks.lr_schedule import lr_factor
from timm_ext import TricksScheduler, create_tricks_scheduler

BASE_LRS = (0.4, 0.1)


def _optimizer(lrs=BASE_LRS):
    groups = [{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": lr} for lr in lrs]
    return torch.optim.SGD(groups, lr=1.0, momentum=0.9)


def _lrs(optimizer):
    return torch.tensor([g["lr"] for g in optimizer.param_groups], dtype=torch.float64)


def _timm_loop(scheduler, optimizer, steps):
    """lrs in effect at updates 1..steps when driven the timm way: step_update(k) after k updates."""
    seen = []
    for k in range(1, steps + 1):
        seen.append(_lrs(optimizer))
        optimizer.step()
        scheduler.step_update(k)
    return seen


CASES = [
    dict(schedule="cosine", total_steps=50, warmup_steps=10, min_lr_ratio=0.0),
    dict(schedule="cosine", total_steps=37, warmup_steps=0, min_lr_ratio=0.05),
    dict(schedule="step", total_steps=40, warmup_steps=5, milestones=(15, 30), gamma=0.1),
    dict(schedule="constant", total_steps=20, warmup_steps=8),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c['schedule']}-w{c['warmup_steps']}")
def test_every_update_matches_plugins_lr_factor(case):
    optimizer = _optimizer()
    scheduler = TricksScheduler(optimizer, **case)
    seen = _timm_loop(scheduler, optimizer, case["total_steps"])
    args = (case["total_steps"], case["warmup_steps"], case.get("min_lr_ratio", 0.0), case.get("milestones", ()),
            case.get("gamma", 0.1))
    for i, lrs in enumerate(seen, start=1):
        expected = torch.tensor([lr * lr_factor(case["schedule"], i, *args) for lr in BASE_LRS], dtype=torch.float64)
        torch.testing.assert_close(lrs, expected, rtol=0, atol=0, msg=f"{case['schedule']}: update {i}")


def _torch_loop(scheduler, optimizer, steps):
    seen = []
    for _ in range(steps):
        seen.append(_lrs(optimizer))
        optimizer.step()
        scheduler.step()
    return seen


def test_matches_plugins_torch_schedulers_with_two_groups():
    steps = 60
    reference_opt = _optimizer()
    reference = _torch_loop(ScheduleLR(reference_opt, LrSchedule("cosine", steps, 12, 0.1)), reference_opt, steps)
    optimizer = _optimizer()
    ours = _timm_loop(TricksScheduler(optimizer, steps, 12, "cosine", min_lr_ratio=0.1), optimizer, steps)
    for i, (a, b) in enumerate(zip(ours, reference, strict=True), start=1):
        torch.testing.assert_close(a, b, rtol=1e-15, atol=0, msg=f"cosine update {i}")
    reference_opt = _optimizer()
    reference = _torch_loop(ScheduleLR(reference_opt, LrSchedule("step", steps, 6, milestones=(20, 40), gamma=0.5)),
                            reference_opt, steps)
    optimizer = _optimizer()
    ours = _timm_loop(TricksScheduler(optimizer, steps, 6, "step", milestones=[20, 40], gamma=0.5), optimizer, steps)
    for i, (a, b) in enumerate(zip(ours, reference, strict=True), start=1):
        torch.testing.assert_close(a, b, rtol=1e-15, atol=0, msg=f"step update {i}")


def test_factory_gives_recipe_lr_at_every_update():
    recipe = Recipe.preset("paper").with_overrides(epochs=4, warmup_epochs=1.5, batch_size=96, min_lr_ratio=0.02)
    steps_per_epoch = 7
    optimizer = _optimizer((recipe.scaled_lr(),))
    scheduler = create_tricks_scheduler(optimizer, recipe, steps_per_epoch)
    seen = _timm_loop(scheduler, optimizer, recipe.total_steps(steps_per_epoch))
    for i, lrs in enumerate(seen, start=1):
        expected = torch.tensor([recipe.lr_at(i, steps_per_epoch)], dtype=torch.float64)
        torch.testing.assert_close(lrs, expected, rtol=0, atol=0, msg=f"recipe update {i}")
    step_recipe = Recipe.preset("baseline").with_overrides(epochs=6, step_milestones=[2, 4], warmup_epochs=1)
    optimizer = _optimizer((step_recipe.scaled_lr(),))
    seen = _timm_loop(create_tricks_scheduler(optimizer, step_recipe, 5), optimizer, 30)
    for i, lrs in enumerate(seen, start=1):
        expected = torch.tensor([step_recipe.lr_at(i, 5)], dtype=torch.float64)
        torch.testing.assert_close(lrs, expected, rtol=0, atol=0, msg=f"step recipe update {i}")


def test_matches_timm_cosine_scheduler_with_the_update_index_mapped():
    total, warmup, min_lr = 45, 9, 1e-3
    optimizer = _optimizer()
    ours = _timm_loop(TricksScheduler(optimizer, total, warmup, "cosine", min_lr_ratio=min_lr / BASE_LRS[0]),
                      optimizer, total)
    timm_opt = _optimizer()
    timm_sched = CosineLRScheduler(timm_opt, t_initial=total - warmup, lr_min=min_lr, warmup_t=warmup,
                                   warmup_lr_init=0.0, warmup_prefix=True, t_in_epochs=False)
    for i in range(1, total + 1):
        timm_sched.step_update(i)  # timm's t = i is the paper's update i
        torch.testing.assert_close(ours[i - 1][0], _lrs(timm_opt)[0], rtol=1e-12, atol=1e-15,
                                   msg=f"update {i} vs timm CosineLRScheduler t={i}")


def test_epoch_mode_follows_step_not_step_update():
    optimizer = _optimizer()
    scheduler = TricksScheduler(optimizer, total_steps=10, warmup_steps=2, t_in_epochs=True)
    scheduler.step_update(5)  # ignored in epoch mode
    torch.testing.assert_close(_lrs(optimizer), torch.tensor(BASE_LRS, dtype=torch.float64) / 2, rtol=0, atol=0)
    scheduler.step(1)  # end of epoch 0 -> lr of epoch 2 (1-based)
    torch.testing.assert_close(_lrs(optimizer), torch.tensor(BASE_LRS, dtype=torch.float64), rtol=0, atol=0)


def test_state_dict_round_trip_resumes_the_same_lrs():
    optimizer = _optimizer()
    scheduler = TricksScheduler(optimizer, 30, 5, "cosine")
    reference = _timm_loop(scheduler, optimizer, 30)
    state = scheduler.state_dict()
    assert all(isinstance(v, str | int | float | bool | list | type(None)) for v in state.values())
    fresh_opt = _optimizer((9.0, 9.0))  # wrong lrs on purpose: the base lrs come from the state
    fresh = TricksScheduler(fresh_opt, 30, 5, "cosine")
    fresh.load_state_dict(state)
    fresh.step_update(12)
    torch.testing.assert_close(_lrs(fresh_opt), reference[12], rtol=0, atol=0, msg="update 13 after resume")


def test_lr_scale_of_a_group_is_honoured():
    optimizer = _optimizer()
    optimizer.param_groups[1]["lr_scale"] = 0.5
    TricksScheduler(optimizer, 10, 0, "constant")
    assert optimizer.param_groups[1]["lr"] == BASE_LRS[1] * 0.5


@pytest.mark.parametrize("kwargs, match", [
    ({"schedule": "linear"}, "schedule"),
    ({"warmup_steps": 11}, "warmup_steps"),
    ({"total_steps": 0}, "total_steps"),
    ({"schedule": "step", "milestones": [12]}, "milestones"),
])
def test_bad_arguments_raise_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TricksScheduler(_optimizer(), **{"total_steps": 10, **kwargs})
