"""The step plan: epochs to updates (one conversion, one rounding rule) and a run's lr schedule in updates.

:func:`epochs_to_steps` is the only place where epochs become updates; :class:`LrSchedule` holds a run's
schedule in updates (built by ``Recipe.lr_schedule``, or by an adapter from its framework's keys) and its
:meth:`LrSchedule.lrs` is the one binding of the paper's factors (``plugins.tricks.lr_schedule``) to a
scheduler protocol, which each adapter wraps in a few lines. The convention everywhere: right after
construction each param group's lr is ``initial_lr * factor(1)``; after ``k`` completed updates it is
``initial_lr * factor(k + 1)``; updates beyond ``total_steps`` stay at ``factor(total_steps)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Real
from typing import Any

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from plugins.tricks.lr_schedule import SCHEDULES, _check_int, lr_factor

__all__ = ["LrSchedule", "ScheduleLR", "epochs_to_steps"]


def epochs_to_steps(epochs: float, steps_per_epoch: int) -> int:
    """Updates in ``epochs`` epochs of ``steps_per_epoch`` updates: the one conversion every adapter uses.

    Rule: the nearest whole update, halves to even (Python's ``round``), so ``0.5`` epoch of 5 updates is 2,
    ``1.5`` epochs of 5 is 8, and ``2.3`` epochs of 10 is 23 (truncation would give 22: ``2.3 * 10`` is
    ``22.999999999999996`` in floating point). Whole epochs convert exactly.
    """
    steps_per_epoch = _check_int("steps_per_epoch", steps_per_epoch, 1)
    if isinstance(epochs, bool) or not isinstance(epochs, Real) or not math.isfinite(epochs) or epochs < 0:
        raise ValueError(f"epochs must be a finite number >= 0, got {epochs!r}")
    return round(epochs * steps_per_epoch)


@dataclass(frozen=True)
class LrSchedule:
    """One run's lr schedule in updates, validated once: what every adapter's scheduler is built from.

    The one binding of the paper's factors to a scheduler protocol is :meth:`lrs`: given the number of updates
    a framework has completed, the lr of each param group for the next update. timm's ``step_update(n)``,
    MMEngine's ``last_step``, torch's ``last_epoch`` and Detectron2's iteration all count completed updates, so
    each adapter's scheduler is this call behind its framework's class (``timm_ext.TricksScheduler``,
    ``mm_ext.TricksLR``, ``d2_ext.solver.TricksParamScheduler``, :class:`ScheduleLR` for plain torch).

    Args:
        schedule: one of :data:`SCHEDULES`.
        total_steps: updates of the run (>= 1); updates past it keep the last factor.
        warmup_steps: linear-warmup updates, 0 <= warmup_steps <= total_steps.
        min_lr_ratio: "cosine" final lr as a fraction of the peak, in [0, 1].
        milestones: "step" decay points in updates (strictly increasing, in [1, total_steps]).
        gamma: "step" decay factor per milestone, in (0, 1].
    """

    schedule: str
    total_steps: int
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        # the factor validates every field this schedule reads (milestones and gamma only for "step")
        lr_factor(self.schedule, 1, self.total_steps, self.warmup_steps, self.min_lr_ratio, self.milestones, self.gamma)
        for name, kind in (("total_steps", int), ("warmup_steps", int), ("min_lr_ratio", float), ("gamma", float)):
            object.__setattr__(self, name, kind(getattr(self, name)))
        object.__setattr__(self, "milestones", tuple(int(m) for m in self.milestones))

    def factor(self, i: int) -> float:
        """Lr factor of update ``i`` (from 1); updates past ``total_steps`` keep ``factor(total_steps)``."""
        i = min(max(int(i), 1), self.total_steps)
        return lr_factor(self.schedule, i, self.total_steps, self.warmup_steps, self.min_lr_ratio,
                         self.milestones, self.gamma)

    def to_state(self) -> dict[str, Any]:
        """The fields as plain numbers, strings and a list (a scheduler's state_dict under weights_only=True)."""
        return {"schedule": self.schedule, "total_steps": self.total_steps, "warmup_steps": self.warmup_steps,
                "min_lr_ratio": self.min_lr_ratio, "milestones": list(self.milestones), "gamma": self.gamma}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> LrSchedule | None:
        """The plan stored by :meth:`to_state` in ``state``, or None when ``state`` lacks its fields."""
        names = ("schedule", "total_steps", "warmup_steps", "min_lr_ratio", "milestones", "gamma")
        return cls(**{k: state[k] for k in names}) if all(k in state for k in names) else None

    def lrs(self, base_values: Sequence[float], done: int) -> list[float]:
        """Each group's lr for the update after ``done`` completed ones: ``base * factor(done + 1)``."""
        f = self.factor(done + 1)
        return [base * f for base in base_values]


class ScheduleLR(LRScheduler):
    """An :class:`LrSchedule` as a plain torch scheduler: call ``step()`` once per update (not per epoch).

    Right after construction each group's lr is ``initial_lr * factor(1)``; after ``k`` calls to ``step()`` it
    is ``initial_lr * factor(k + 1)``. Each param group keeps its own ``initial_lr``. ``state_dict()`` holds
    numbers only; give the same schedule again when restoring.
    """

    def __init__(self, optimizer: Optimizer, schedule: LrSchedule, last_epoch: int = -1) -> None:
        if not isinstance(schedule, LrSchedule):
            raise TypeError(f"schedule must be a plugins.recipe.plan.LrSchedule, got {type(schedule).__name__}")
        self.schedule = schedule
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        return self.schedule.lrs(self.base_lrs, self.last_epoch)

    _get_closed_form_lr = get_lr

    def state_dict(self) -> dict[str, Any]:
        return {k: v for k, v in super().state_dict().items() if k != "schedule"}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict({k: v for k, v in state_dict.items() if k != "schedule"})
