"""The paper's lr schedules behind timm's scheduler protocol (``timm.scheduler.scheduler.Scheduler``).

A timm training loop calls ``scheduler.step_update(num_updates)`` after every optimizer update (with the number
of updates done so far) and ``scheduler.step(epoch)`` at the end of every epoch. :class:`TricksScheduler`
answers with ``plugins.tricks.lr_schedule.lr_factor`` (formulas and paper references there), keeping the project's
convention: update ``i`` (counted from 1) runs at ``base_lr * factor(i)``. So right after construction every
group's lr is ``base_lr * factor(1)`` and ``step_update(k)`` sets ``base_lr * factor(k + 1)``, the lr of the
next update. (timm's own ``CosineLRScheduler`` runs update ``i`` at its ``t = i - 1`` value, which starts the
warmup at ``warmup_lr_init`` instead of ``base_lr / m``.)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from timm.scheduler.scheduler import Scheduler

from plugins.recipe.plan import LrSchedule
from plugins.tricks.lr_schedule import SCHEDULES

__all__ = ["TIMM_SCHEDULES", "TRICKS_SCHEDULES", "TricksScheduler", "create_scheduler", "create_tricks_scheduler"]

# timm's --sched values (timm.scheduler.create_scheduler_v2) and ours: tricks_<schedule> is the paper's closed form.
TIMM_SCHEDULES = ("cosine", "tanh", "step", "multistep", "plateau", "poly", "wsd", "rsqrt", "constant", "none")
TRICKS_SCHEDULES = {"tricks_cosine": "cosine", "tricks_step": "step", "tricks_constant": "constant"}


class TricksScheduler(Scheduler):
    """timm-protocol scheduler for the paper's warmup + cosine / step / constant lr.

    Each param group keeps its own base lr (timm's ``initial_lr`` key, set from the group's ``lr`` at
    construction); ``lr_scale`` in a group is honoured as in timm. ``state_dict()`` holds only numbers,
    strings and lists.

    Args:
        optimizer: the optimizer whose groups' ``lr`` is driven.
        total_steps: length of the run in scheduler units (updates, or epochs with ``t_in_epochs=True``).
        warmup_steps: linear warmup length in the same units (default 0, no warmup).
        schedule: one of ``plugins.tricks.lr_schedule.SCHEDULES``: "cosine" (default), "step" or "constant".
        min_lr_ratio: final lr of "cosine" as a fraction of the base lr (default 0.0).
        milestones: "step" decay points in the same units (default (), no decay).
        gamma: "step" decay factor per milestone (default 0.1).
        t_in_epochs: False (default) to follow ``step_update`` (per update, as the paper), True to follow
            ``step`` (per epoch).
        initialize: as timm's ``Scheduler`` (default True: record each group's lr as its base lr).
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        total_steps: int,
        warmup_steps: int = 0,
        schedule: str = "cosine",
        min_lr_ratio: float = 0.0,
        milestones: Sequence[int] = (),
        gamma: float = 0.1,
        t_in_epochs: bool = False,
        initialize: bool = True,
    ) -> None:
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule={schedule!r} is not supported; accepted: {SCHEDULES}")
        self.plan = LrSchedule(schedule, total_steps, warmup_steps, min_lr_ratio, tuple(milestones), gamma)
        super().__init__(optimizer, param_group_field="lr", t_in_epochs=t_in_epochs, initialize=initialize)
        self.update_groups(self._get_lr(0))

    @classmethod
    def from_plan(cls, optimizer: torch.optim.Optimizer, plan: LrSchedule, **kwargs) -> TricksScheduler:
        """The scheduler of a ``plugins.recipe.plan.LrSchedule`` (``Recipe.lr_schedule``)."""
        return cls(optimizer, plan.total_steps, plan.warmup_steps, plan.schedule, plan.min_lr_ratio,
                   plan.milestones, plan.gamma, **kwargs)

    def factor(self, i: int) -> float:
        """Lr factor of unit ``i`` (from 1); units past ``total_steps`` keep the last factor."""
        return self.plan.factor(i)

    def state_dict(self) -> dict:
        """timm's state (numbers) with the plan's fields in place of the plan object."""
        return {**{k: v for k, v in super().state_dict().items() if k != "plan"}, **self.plan.to_state()}

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        self.plan = LrSchedule.from_state(state_dict) or self.plan

    def _get_lr(self, t: int) -> list[float]:
        """Lrs of the unit after ``t`` completed ones (timm calls this with the count done so far)."""
        return self.plan.lrs(self.base_values, t)


def create_tricks_scheduler(optimizer: torch.optim.Optimizer, recipe, steps_per_epoch: int) -> TricksScheduler:
    """Per-update :class:`TricksScheduler` for a ``plugins.recipe.Recipe`` run at ``steps_per_epoch`` updates per epoch.

    Set every group's ``lr`` to ``recipe.scaled_lr()`` before calling this; update ``i`` then runs at
    ``recipe.lr_at(i, steps_per_epoch)``.
    """
    return TricksScheduler.from_plan(optimizer, recipe.lr_schedule(steps_per_epoch))


def create_scheduler(args, optimizer: torch.optim.Optimizer, updates_per_epoch: int, recipe=None,
                     decreasing_metric: bool = False):
    """timm's scheduler factory path, with ``--sched tricks_*`` answered by :class:`TricksScheduler`.

    ``recipe`` is the run's resolved ``plugins.recipe.Recipe`` (``timm_ext._recipe_flags.recipe_from_args``): a
    ``tricks_*`` schedule runs its plan per update, so update ``i`` is at ``recipe.lr_at(i, updates_per_epoch)``
    when the groups start at ``recipe.scaled_lr()``. Other values go to timm's ``create_scheduler_v2``.
    Returns ``(scheduler, num_epochs)`` as timm's factory does.
    """
    if args.sched in TRICKS_SCHEDULES:
        return create_tricks_scheduler(optimizer, recipe, updates_per_epoch), int(recipe.epochs)
    from timm.scheduler import create_scheduler_v2, scheduler_kwargs

    return create_scheduler_v2(optimizer, **scheduler_kwargs(args, decreasing_metric=decreasing_metric),
                               updates_per_epoch=updates_per_epoch)
