"""d2_ext.check: set cfg.TRICKS keys that a trainer's optimizer, scheduler or model do not apply are named,
and importing d2_ext makes TrainerBase.train fail with them before any hook or iteration runs."""

import pytest

pytest.importorskip("detectron2")

import torch  # noqa: E402
from detectron2.config import get_cfg  # noqa: E402
from detectron2.engine import HookBase, SimpleTrainer, TrainerBase  # noqa: E402
from detectron2.solver import build_lr_scheduler as d2_build_lr_scheduler  # noqa: E402
from detectron2.solver import build_optimizer as d2_build_optimizer  # noqa: E402
from detectron2.solver.lr_scheduler import LRMultiplier  # noqa: E402
from torch import nn  # noqa: E402

import d2_ext  # noqa: E402
from d2_ext.check import check_tricks_applied, install_tricks_check, tricks_not_applied  # noqa: E402
from d2_ext.solver import TricksParamScheduler, WarmupCosineParamScheduler  # noqa: E402
from plugins.tricks.no_bias_decay import no_bias_decay_param_groups  # noqa: E402

MAX_ITER = 20


class _Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.norm = nn.BatchNorm2d(4)
        self.head = nn.Linear(4, 2)

    def forward(self, batch):
        return {"loss": self.head(self.norm(self.conv(batch)).mean(dim=(2, 3))).pow(2).mean()}


def _cfg(**tricks):
    cfg = get_cfg()
    d2_ext.add_tricks_config(cfg)
    cfg.SOLVER.MAX_ITER, cfg.SOLVER.BASE_LR, cfg.SOLVER.IMS_PER_BATCH = MAX_ITER, 0.1, 4
    cfg.SOLVER.WEIGHT_DECAY, cfg.SOLVER.STEPS = 1e-4, (10,)
    for key, value in tricks.items():
        cfg.TRICKS[key] = value
    return cfg


def _built(cfg, optimizer_builder, scheduler_builder):
    model = _Tiny()
    optimizer = optimizer_builder(cfg, model)
    return model, optimizer, scheduler_builder(cfg, optimizer)


SOLVER = {
    "NO_BIAS_DECAY": True,
    "BASE_BATCH_SIZE": 16,
    "LR_SCHEDULE": "warmup_cosine",
    "WARMUP_ITERS": 5,
    "MIN_LR_RATIO": 0.1,
}


def test_defaults_and_d2_ext_builders_leave_nothing_unapplied():
    assert tricks_not_applied(_cfg(), *_built(_cfg(), d2_build_optimizer, d2_build_lr_scheduler)) == {}
    cfg = _cfg(**SOLVER)
    assert tricks_not_applied(cfg, *_built(cfg, d2_ext.build_optimizer, d2_ext.build_lr_scheduler)) == {}


def test_detectron2s_builders_leave_the_solver_keys_unapplied():
    cfg = _cfg(**SOLVER)
    found = tricks_not_applied(cfg, *_built(cfg, d2_build_optimizer, d2_build_lr_scheduler))
    assert set(found) == {"NO_BIAS_DECAY", "BASE_BATCH_SIZE", "LR_SCHEDULE"}
    # Detectron2 leaves norms undecayed (WEIGHT_DECAY_NORM 0) and decays the two biases
    assert (
        found["NO_BIAS_DECAY"]
        == "2 of 4 biases and norm parameters are decayed, e.g. 'conv.bias' at weight_decay 0.0001"
    )
    assert found["BASE_BATCH_SIZE"] == (
        "no group of conv/linear weights starts at the scaled lr 0.025 (SOLVER.BASE_LR "
        "0.1 x SOLVER.IMS_PER_BATCH 4 / 16); their lr: 0.1"
    )
    assert found["LR_SCHEDULE"].startswith(
        "the lr scheduler is LRMultiplier over WarmupParamScheduler whose factor at "
        "iteration 0 is 0.001, not warmup + cosine's 0.2"
    ), found["LR_SCHEDULE"]


def test_a_trainers_own_equivalent_solver_passes():
    """Compared, not marked: no-bias-decay groups and a scaled lr built by the user's own code are applied."""
    cfg = _cfg(**SOLVER)
    model = _Tiny()
    optimizer = torch.optim.SGD(no_bias_decay_param_groups(model, 1e-4), lr=0.025, momentum=0.9)
    multiplier = WarmupCosineParamScheduler(MAX_ITER, 5, 0.1)
    scheduler = LRMultiplier(optimizer, multiplier=multiplier, max_iter=MAX_ITER)
    assert tricks_not_applied(cfg, model, optimizer, scheduler) == {}
    other = LRMultiplier(
        optimizer, multiplier=WarmupCosineParamScheduler(MAX_ITER, 5, 0.0), max_iter=MAX_ITER
    )
    assert "MIN_LR_RATIO=0.1" in tricks_not_applied(cfg, model, optimizer, other)["LR_SCHEDULE"]
    longer = LRMultiplier(
        optimizer, multiplier=WarmupCosineParamScheduler(2 * MAX_ITER, 5, 0.1), max_iter=2 * MAX_ITER
    )
    assert (
        "over 40 iterations, not SOLVER.MAX_ITER=20"
        in tricks_not_applied(cfg, model, optimizer, longer)["LR_SCHEDULE"]
    )


def test_keys_that_change_nothing_are_not_reported():
    cfg = _cfg(NO_BIAS_DECAY=True, BASE_BATCH_SIZE=4)  # batch 4 = base batch; no weight decay at all
    cfg.SOLVER.WEIGHT_DECAY = 0.0
    assert tricks_not_applied(cfg, *_built(cfg, d2_build_optimizer, d2_build_lr_scheduler)) == {}


def test_model_keys_name_what_to_set():
    cfg = _cfg(LABEL_SMOOTHING=0.1, ZERO_GAMMA=True)
    found = tricks_not_applied(cfg, *_built(cfg, d2_build_optimizer, d2_build_lr_scheduler))
    assert found == {
        "LABEL_SMOOTHING": "no box predictor smooths with it (MODEL.ROI_HEADS.NAME='Res5ROIHeads'); set "
        "MODEL.ROI_HEADS.NAME to 'LabelSmoothingStandardROIHeads'",
        "ZERO_GAMMA": "the backbone is not d2_ext's timm one (MODEL.BACKBONE.NAME='build_resnet_backbone'); set "
        "MODEL.BACKBONE.NAME to 'build_timm_fpn_backbone' or 'build_timm_backbone'",
    }


class _Recorder(HookBase):
    def __init__(self):
        self.calls = []

    def before_train(self):
        self.calls.append("before_train")

    def before_step(self):
        self.calls.append("before_step")


class _CfgTrainer(TrainerBase):
    """A trainer with DefaultTrainer's attributes (cfg, model, optimizer, scheduler) and no data."""

    def __init__(self, cfg, optimizer_builder, scheduler_builder):
        super().__init__()
        self.cfg = cfg
        self.model, self.optimizer, self.scheduler = _built(cfg, optimizer_builder, scheduler_builder)
        self.recorder = _Recorder()
        self.register_hooks([self.recorder])

    def run_step(self):
        pass


def test_trainer_base_train_fails_before_any_hook():
    trainer = _CfgTrainer(_cfg(**SOLVER), d2_build_optimizer, d2_build_lr_scheduler)
    with pytest.raises(ValueError) as info:
        trainer.train(0, 2)
    message = str(info.value)
    assert message.startswith(
        "_CfgTrainer does not apply cfg.TRICKS keys that are set: cfg.TRICKS.NO_BIAS_DECAY=True: "
        "2 of 4 biases"
    ), message
    assert (
        "cfg.TRICKS.BASE_BATCH_SIZE=16: " in message and "cfg.TRICKS.LR_SCHEDULE='warmup_cosine': " in message
    )
    assert (
        "return d2_ext.build_optimizer(cfg, model) from _CfgTrainer.build_optimizer and "
        "d2_ext.build_lr_scheduler(cfg, optimizer) from _CfgTrainer.build_lr_scheduler"
    ) in message
    assert "d2_ext.TricksSolverMixin" in message and len(message.splitlines()) == 1
    assert trainer.recorder.calls == [], "raised before before_train"

    applied = _CfgTrainer(_cfg(**SOLVER), d2_ext.build_optimizer, d2_ext.build_lr_scheduler)
    applied.train(0, 2)
    assert applied.recorder.calls == ["before_train", "before_step", "before_step"]


def test_trainers_without_tricks_are_untouched():
    model = _Tiny()
    trainer = SimpleTrainer(
        model, iter(lambda: torch.randn(2, 3, 6, 6), None), torch.optim.SGD(model.parameters(), 0.1)
    )
    trainer.train(0, 2)  # no cfg: the check does nothing
    assert trainer.iter == 2  # one past the last iteration
    check_tricks_applied(object())  # nothing to read: nothing to check


def test_importing_d2_ext_installed_the_check_once():
    wrapped = TrainerBase.train
    assert wrapped.__wrapped__.__qualname__ == "TrainerBase.train", "installed by import d2_ext"
    install_tricks_check()  # a second install (e.g. after importlib.reload) wraps nothing again
    assert TrainerBase.train is wrapped


def test_d2_ext_trainer_uses_the_public_builders():
    assert d2_ext.Trainer.build_optimizer.__func__ is d2_ext.TricksSolverMixin.build_optimizer.__func__
    assert d2_ext.Trainer.build_lr_scheduler.__func__ is d2_ext.TricksSolverMixin.build_lr_scheduler.__func__
    cfg = _cfg(**SOLVER)
    model = _Tiny()
    optimizer = d2_ext.Trainer.build_optimizer(cfg, model)
    assert [g["name"] for g in optimizer.param_groups] == ["decay", "no_decay"]
    multiplier = d2_ext.Trainer.build_lr_scheduler(cfg, optimizer)._multiplier
    assert isinstance(multiplier, TricksParamScheduler) and multiplier.plan.schedule == "cosine"
