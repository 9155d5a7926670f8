"""The paper's lr schedules behind timm's scheduler protocol (``timm.scheduler.scheduler.Scheduler``).

A timm training loop calls ``scheduler.step_update(num_updates)`` after every optimizer update (with the number
of updates done so far) and ``scheduler.step(epoch)`` at the end of every epoch. :class:`TricksScheduler`
answers with ``plugins.schedules.lr_factor`` (formulas and paper references there), keeping the project's
convention: update ``i`` (counted from 1) runs at ``base_lr * factor(i)``. So right after construction every
group's lr is ``base_lr * factor(1)`` and ``step_update(k)`` sets ``base_lr * factor(k + 1)``, the lr of the
next update. (timm's own ``CosineLRScheduler`` runs update ``i`` at its ``t = i - 1`` value, which starts the
warmup at ``warmup_lr_init`` instead of ``base_lr / m``.)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from timm.scheduler.scheduler import Scheduler

from plugins.schedules import SCHEDULES, lr_factor

__all__ = ["TricksScheduler", "create_tricks_scheduler"]


class TricksScheduler(Scheduler):
    """timm-protocol scheduler for the paper's warmup + cosine / step / constant lr.

    Each param group keeps its own base lr (timm's ``initial_lr`` key, set from the group's ``lr`` at
    construction); ``lr_scale`` in a group is honoured as in timm. ``state_dict()`` holds only numbers,
    strings and lists.

    Args:
        optimizer: the optimizer whose groups' ``lr`` is driven.
        total_steps: length of the run in scheduler units (updates, or epochs with ``t_in_epochs=True``).
        warmup_steps: linear warmup length in the same units (default 0, no warmup).
        schedule: one of ``plugins.schedules.SCHEDULES``: "cosine" (default), "step" or "constant".
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
        lr_factor(schedule, 1, total_steps, warmup_steps, min_lr_ratio, milestones, gamma)  # validates
        self.schedule = schedule
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)
        self.min_lr_ratio = float(min_lr_ratio)
        self.milestones = [int(m) for m in milestones]
        self.gamma = float(gamma)
        super().__init__(optimizer, param_group_field="lr", t_in_epochs=t_in_epochs, initialize=initialize)
        self.update_groups(self._get_lr(0))

    def factor(self, i: int) -> float:
        """Lr factor of unit ``i`` (from 1); units past ``total_steps`` keep the last factor."""
        i = min(max(int(i), 1), self.total_steps)
        return lr_factor(
            self.schedule, i, self.total_steps, self.warmup_steps, self.min_lr_ratio, self.milestones, self.gamma
        )

    def _get_lr(self, t: int) -> list[float]:
        """Lrs of the unit after ``t`` completed ones (timm calls this with the count done so far)."""
        f = self.factor(t + 1)
        return [base * f for base in self.base_values]


def create_tricks_scheduler(optimizer: torch.optim.Optimizer, recipe, steps_per_epoch: int) -> TricksScheduler:
    """Per-update :class:`TricksScheduler` for a ``plugins.recipe.Recipe`` run at ``steps_per_epoch`` updates per epoch.

    Set every group's ``lr`` to ``recipe.scaled_lr()`` before calling this; update ``i`` then runs at
    ``recipe.lr_at(i, steps_per_epoch)``.
    """
    return TricksScheduler(
        optimizer,
        total_steps=recipe.total_steps(steps_per_epoch),
        warmup_steps=recipe.warmup_steps(steps_per_epoch),
        schedule=recipe.schedule,
        min_lr_ratio=recipe.min_lr_ratio,
        milestones=recipe.milestone_steps(steps_per_epoch) if recipe.schedule == "step" else (),
        gamma=recipe.step_gamma,
    )
