"""One recipe, three ecosystems, one learning-rate curve.

timm_ext's ``TricksScheduler`` (stepped with timm's ``step_update``), mm_ext's ``WarmupCosineLR`` (stepped as
MMEngine's ``ParamSchedulerHook`` does) and d2_ext's ``build_tricks_lr_scheduler`` (stepped as Detectron2's
``LRScheduler`` hook does) must give every update the lr of ``plugins.schedules.warmup_cosine_factor``, for
two param groups with different base lrs. This is the numerical check behind the report's lr_curves.png.
"""

import pytest
import torch

from plugins.schedules import warmup_cosine_factor

TOTAL, WARMUP, MIN_RATIO = 97, 13, 0.05
BASE_LRS = (0.1, 0.02)


def _optimizer():
    a, b = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))
    return torch.optim.SGD([{"params": [a], "lr": BASE_LRS[0]}, {"params": [b], "lr": BASE_LRS[1]}], momentum=0.9)


def _expected():
    return [[lr * warmup_cosine_factor(i, TOTAL, WARMUP, MIN_RATIO) for lr in BASE_LRS] for i in range(1, TOTAL + 1)]


def _check(name, recorded):
    expected = _expected()
    assert len(recorded) == TOTAL, f"{name}: {len(recorded)} updates recorded"
    for i, (got, want) in enumerate(zip(recorded, expected, strict=True), start=1):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=0.0, msg=lambda m, i=i: f"{name}, update {i}: {m}")


def test_timm_ext_scheduler():
    pytest.importorskip("timm")
    from timm_ext.scheduler import TricksScheduler

    opt = _optimizer()
    sched = TricksScheduler(opt, total_steps=TOTAL, warmup_steps=WARMUP, schedule="cosine", min_lr_ratio=MIN_RATIO)
    recorded = []
    for i in range(1, TOTAL + 1):
        recorded.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step_update(num_updates=i)  # as timm's train loop: after each update, with the count done
    _check("timm_ext", recorded)


def test_mm_ext_scheduler():
    pytest.importorskip("mmengine")
    from mmengine.optim import OptimWrapper

    from mm_ext import WarmupCosineLR

    wrapper = OptimWrapper(_optimizer())
    sched = WarmupCosineLR(wrapper, warmup_steps=WARMUP, min_lr_ratio=MIN_RATIO, begin=0, end=TOTAL, by_epoch=False)
    recorded = []
    for _ in range(TOTAL):
        recorded.append([g["lr"] for g in wrapper.optimizer.param_groups])
        wrapper.optimizer.step()
        sched.step()  # ParamSchedulerHook.after_train_iter
    _check("mm_ext", recorded)


def test_d2_ext_scheduler():
    pytest.importorskip("detectron2")
    from detectron2.config import get_cfg

    from d2_ext import add_tricks_config
    from d2_ext.solver import build_tricks_lr_scheduler

    cfg = get_cfg()
    add_tricks_config(cfg)
    cfg.SOLVER.MAX_ITER = TOTAL
    cfg.TRICKS.LR_SCHEDULE = "warmup_cosine"
    cfg.TRICKS.WARMUP_ITERS = WARMUP
    cfg.TRICKS.MIN_LR_RATIO = MIN_RATIO
    opt = _optimizer()
    sched = build_tricks_lr_scheduler(cfg, opt)
    recorded = []
    for _ in range(TOTAL):
        recorded.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()  # detectron2.engine.hooks.LRScheduler.after_step
    _check("d2_ext", recorded)
