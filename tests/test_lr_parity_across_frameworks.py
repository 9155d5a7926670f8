"""One recipe, three ecosystems, one learning-rate curve.

timm_ext's ``TricksScheduler`` (stepped with timm's ``step_update``), mm_ext's ``WarmupCosineLR`` (stepped as
MMEngine's ``ParamSchedulerHook`` does) and d2_ext's ``build_tricks_lr_scheduler`` (stepped as Detectron2's
``LRScheduler`` hook does) must give every update the lr of ``plugins.tricks.lr_schedule.warmup_cosine_factor``, for
two param groups with different base lrs. This is the numerical check behind the report's lr_curves.png.
"""

import pytest
import torch

from plugins.tricks.lr_schedule import warmup_cosine_factor

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


def test_one_recipe_file_gives_the_three_adapters_the_same_lr_at_every_update(tmp_path):
    """The same recipe yaml, laid over each framework's own config by its adapter (tricks-train's recipe defaults,
    mm_ext.recipe.apply_recipe, d2_ext.apply_recipe), at 10 epochs of 4 updates of batch 8: every update's lr
    equals the recipe's closed form ``Recipe.lr_at``."""
    pytest.importorskip("timm")
    pytest.importorskip("mmengine")
    pytest.importorskip("detectron2")
    from mmengine.config import Config
    from mmengine.registry import PARAM_SCHEDULERS

    import d2_ext
    import mm_ext  # noqa: F401  (registers WarmupCosineLR)
    from mm_ext.recipe import apply_recipe as mm_apply
    from plugins.recipe import Recipe
    from timm_ext.scheduler import create_tricks_scheduler

    path = tmp_path / "r.yaml"
    path.write_text("base_lr: 0.1\nbase_batch_size: 256\nbatch_size: 8\nepochs: 10\nwarmup_epochs: 1.5\n"
                    "schedule: cosine\nmin_lr_ratio: 0.05\n")
    recipe, per_epoch, total = Recipe.from_yaml(path), 4, 40
    expected = [recipe.lr_at(i, per_epoch) for i in range(1, total + 1)]

    def one_group():
        return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=recipe.scaled_lr())

    opt = one_group()  # timm: tricks-train's --sched tricks_cosine, stepped per update
    sched, timm_lrs = create_tricks_scheduler(opt, recipe, per_epoch), []
    for i in range(1, total + 1):
        timm_lrs.append(opt.param_groups[0]["lr"])
        sched.step_update(i)

    cfg = Config(dict(train_cfg=dict(type="IterBasedTrainLoop", max_iters=total), optim_wrapper=dict(
        optimizer=dict(type="SGD", lr=0.01)), model=dict(type="X")))
    mm_apply(cfg, str(path), iters_per_epoch=per_epoch, log=lambda *_: None)
    opt = one_group()  # MMEngine: the scaled lr as its auto_scale_lr leaves it, the recipe's param_scheduler
    sched, mm_lrs = PARAM_SCHEDULERS.build({**cfg.param_scheduler[0], "optimizer": opt}), []
    for _ in range(total):
        mm_lrs.append(opt.param_groups[0]["lr"])
        sched.step()

    from detectron2.config import get_cfg

    d2 = get_cfg()
    d2_ext.add_tricks_config(d2)
    d2.merge_from_list(["TRICKS.RECIPE", str(path), "TRICKS.ITERS_PER_EPOCH", str(per_epoch), "SOLVER.MAX_ITER",
                        str(total), "SOLVER.IMS_PER_BATCH", "8"])
    d2_ext.apply_recipe(d2)
    model = torch.nn.Linear(1, 1, bias=False)
    opt = d2_ext.build_optimizer(d2, model)
    sched, d2_lrs = d2_ext.build_lr_scheduler(d2, opt), []
    for _ in range(total):
        d2_lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()

    assert timm_lrs == expected
    assert d2_lrs == expected
    assert mm_lrs == expected
