"""Optimizer and lr scheduler from ``cfg.TRICKS``; the formulas are ``plugins.tricks.lr_schedule`` and
``plugins.tricks.no_bias_decay``, this module binds them to Detectron2's solver.

Detectron2's own route: the same two signatures as ``detectron2.solver``, for the ``build_optimizer`` /
``build_lr_scheduler`` classmethods of any ``DefaultTrainer`` subclass (``d2_ext.Trainer`` uses them too)::

    class MyTrainer(DefaultTrainer):
        @classmethod
        def build_optimizer(cls, cfg, model):
            return d2_ext.build_optimizer(cfg, model)

        @classmethod
        def build_lr_scheduler(cls, cfg, optimizer):
            return d2_ext.build_lr_scheduler(cfg, optimizer)

or ``class MyTrainer(d2_ext.TricksSolverMixin, DefaultTrainer)``, which defines exactly those two.

- :func:`scaled_base_lr`: ``SOLVER.BASE_LR``, linearly scaled to the global ``SOLVER.IMS_PER_BATCH`` when
  ``TRICKS.BASE_BATCH_SIZE > 0``.
- :func:`build_optimizer`: SGD over ``no_bias_decay_param_groups`` when ``TRICKS.NO_BIAS_DECAY``, else
  Detectron2's ``build_optimizer``; gradient clipping from ``SOLVER.CLIP_GRADIENTS`` either way.
- :func:`build_lr_scheduler`: Detectron2's ``LRMultiplier`` over :class:`TricksParamScheduler` when
  ``TRICKS.LR_SCHEDULE`` is ``"warmup_cosine"`` or ``"warmup_step"``, else Detectron2's ``build_lr_scheduler``.
"""

from __future__ import annotations

import logging

import torch
from detectron2.solver import build_lr_scheduler as _d2_build_lr_scheduler
from detectron2.solver import build_optimizer as _d2_build_optimizer
from detectron2.solver import lr_scheduler as _d2_lr_scheduler
from detectron2.solver.build import maybe_add_gradient_clipping

from plugins.recipe.plan import LrSchedule
from plugins.tricks.lr_schedule import scale_lr
from plugins.tricks.no_bias_decay import no_bias_decay_param_groups

from .config import tricks_lr_schedule, validate_tricks_config

__all__ = [
    "TricksParamScheduler",
    "TricksSolverMixin",
    "WarmupCosineParamScheduler",
    "build_lr_scheduler",
    "build_optimizer",
    "build_tricks_lr_scheduler",
    "build_tricks_optimizer",
    "scaled_base_lr",
]

logger = logging.getLogger(__name__)

# LRMultiplier checks isinstance(multiplier, ParamScheduler) against the class its own module imported;
# take it from there (fvcore's in v0.6 and main), falling back to fvcore directly.
try:
    ParamScheduler = _d2_lr_scheduler.ParamScheduler
except AttributeError:  # a Detectron2 whose lr_scheduler no longer imports it
    from fvcore.common.param_scheduler import ParamScheduler


class TricksParamScheduler(ParamScheduler):
    """A ``plugins.recipe.plan.LrSchedule`` as a stateless fvcore ``ParamScheduler``.

    Detectron2's ``LRMultiplier(optimizer, multiplier, max_iter)`` sets the lr of iteration ``k`` (counted from
    0, i.e. after ``k`` completed updates) to ``base_lr * multiplier(k / max_iter)``. With
    ``max_iter == plan.total_steps`` this returns ``plan.factor(k + 1)``: Detectron2's iteration ``k`` is the
    project's update ``k + 1``. The extra call at ``k = max_iter`` (after the last iteration) keeps the last factor.
    """

    def __init__(self, plan: LrSchedule) -> None:
        if not isinstance(plan, LrSchedule):
            raise TypeError(f"plan must be a plugins.recipe.plan.LrSchedule, got {type(plan).__name__}")
        self.plan = plan

    def __call__(self, where: float) -> float:
        return self.plan.factor(round(where * self.plan.total_steps) + 1)


class WarmupCosineParamScheduler(TricksParamScheduler):
    """:class:`TricksParamScheduler` of warmup + cosine over ``total_steps`` (``SOLVER.MAX_ITER``) iterations."""

    def __init__(self, total_steps: int, warmup_steps: int, min_lr_ratio: float = 0.0) -> None:
        super().__init__(LrSchedule("cosine", total_steps, warmup_steps, min_lr_ratio))


def scaled_base_lr(cfg) -> float:
    """``SOLVER.BASE_LR``, or ``scale_lr(SOLVER.BASE_LR, SOLVER.IMS_PER_BATCH, TRICKS.BASE_BATCH_SIZE)`` when
    ``TRICKS.BASE_BATCH_SIZE > 0`` (``IMS_PER_BATCH`` is already the global batch in Detectron2)."""
    validate_tricks_config(cfg)
    if cfg.TRICKS.BASE_BATCH_SIZE == 0:
        return cfg.SOLVER.BASE_LR
    lr = scale_lr(cfg.SOLVER.BASE_LR, cfg.SOLVER.IMS_PER_BATCH, cfg.TRICKS.BASE_BATCH_SIZE)
    logger.info(
        "linear scaling: lr %g = SOLVER.BASE_LR %g x SOLVER.IMS_PER_BATCH %d / TRICKS.BASE_BATCH_SIZE %d",
        lr,
        cfg.SOLVER.BASE_LR,
        cfg.SOLVER.IMS_PER_BATCH,
        cfg.TRICKS.BASE_BATCH_SIZE,
    )
    return lr


def build_optimizer(cfg, model: torch.nn.Module) -> torch.optim.Optimizer:
    """SGD (``SOLVER.MOMENTUM``, ``NESTEROV``, ``WEIGHT_DECAY``) at :func:`scaled_base_lr`.

    With ``TRICKS.NO_BIAS_DECAY`` its param groups are ``no_bias_decay_param_groups(model, WEIGHT_DECAY)``
    (decay on conv/linear weights only); otherwise Detectron2's ``build_optimizer`` builds it (its groups,
    ``WEIGHT_DECAY_NORM``, ``BIAS_LR_FACTOR``...). ``SOLVER.CLIP_GRADIENTS`` applies in both cases.
    """
    lr = scaled_base_lr(cfg)
    if not cfg.TRICKS.NO_BIAS_DECAY:
        cfg = cfg.clone()
        cfg.defrost()
        cfg.SOLVER.BASE_LR = lr
        return _d2_build_optimizer(cfg, model)
    groups = no_bias_decay_param_groups(model, cfg.SOLVER.WEIGHT_DECAY)
    return maybe_add_gradient_clipping(cfg, torch.optim.SGD)(
        groups,
        lr=lr,
        momentum=cfg.SOLVER.MOMENTUM,
        nesterov=cfg.SOLVER.NESTEROV,
        weight_decay=cfg.SOLVER.WEIGHT_DECAY,
    )


def build_lr_scheduler(cfg, optimizer: torch.optim.Optimizer):
    """Per-iteration scheduler: the plugin's warmup + cosine (``TRICKS.WARMUP_ITERS``, ``MIN_LR_RATIO``) or
    warmup + step (``SOLVER.STEPS``, ``SOLVER.GAMMA``) over ``SOLVER.MAX_ITER`` when ``TRICKS.LR_SCHEDULE`` names
    one (``d2_ext.config.tricks_lr_schedule``), else Detectron2's own from ``SOLVER.LR_SCHEDULER_NAME`` (then
    ``SOLVER.WARMUP_*`` apply; with the plugin schedules they are unused)."""
    validate_tricks_config(cfg)
    plan = tricks_lr_schedule(cfg)
    if plan is None:
        return _d2_build_lr_scheduler(cfg, optimizer)
    return _d2_lr_scheduler.LRMultiplier(optimizer, multiplier=TricksParamScheduler(plan), max_iter=plan.total_steps)


# The earlier names, kept for code that imports them.
build_tricks_optimizer = build_optimizer
build_tricks_lr_scheduler = build_lr_scheduler


class TricksSolverMixin:
    """``build_optimizer`` and ``build_lr_scheduler`` classmethods that apply ``cfg.TRICKS``.

    Put it before ``DefaultTrainer`` (``class MyTrainer(TricksSolverMixin, DefaultTrainer)``) so that its two
    classmethods are the ones ``DefaultTrainer.__init__`` calls; they return :func:`build_optimizer` and
    :func:`build_lr_scheduler`. Nothing else of the trainer changes.
    """

    @classmethod
    def build_optimizer(cls, cfg, model):
        return build_optimizer(cfg, model)

    @classmethod
    def build_lr_scheduler(cls, cfg, optimizer):
        return build_lr_scheduler(cfg, optimizer)
