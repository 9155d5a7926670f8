"""``TricksLR`` and ``WarmupCosineLR`` for MMEngine's ``param_scheduler``: ``plugins.recipe.plan.LrSchedule`` bound
to MMEngine's scheduler protocol.

Registry contract (PARAM_SCHEDULERS, keys ``TricksLR`` and ``WarmupCosineLR``): built by the Runner with the
optimizer wrapper and, when ``convert_to_iter_based=True``, through :meth:`TricksLR.build_iter_from_epoch`. The
formulas and their paper references are in ``plugins.tricks.lr_schedule``.
"""

from __future__ import annotations

from collections.abc import Sequence

from mmengine.optim.scheduler.lr_scheduler import LRSchedulerMixin
from mmengine.optim.scheduler.param_scheduler import INF, _ParamScheduler

from plugins.recipe.plan import LrSchedule, epochs_to_steps


class TricksLR(LRSchedulerMixin, _ParamScheduler):
    """The paper's linear warmup then cosine, step or constant lr, as a closed form of the step.

    Step convention: MMEngine sets the first value at construction (``last_step = 0``) and calls
    :meth:`step` after every iteration (epoch when ``by_epoch=True``), so ``last_step`` is the number of
    completed steps since ``begin``. The lr of the ``i``-th update in ``[begin, end)`` (``i`` from 1, i.e.
    ``i = last_step + 1``) is ``initial_lr * LrSchedule(schedule, end - begin, ...).factor(i)`` for each param
    group, with the group's own ``initial_lr``. A resumed run restores ``last_step`` and ``base_values`` and so
    gets the same lr at every later step. The value replaces the lr, so this scheduler is meant to be the only
    lr scheduler of its range (it is not chainable).

    Args:
        optimizer: the optimizer wrapper or torch optimizer (given by the Runner).
        schedule: ``"cosine"`` (default), ``"step"`` or ``"constant"`` (``plugins.tricks.lr_schedule.SCHEDULES``).
        warmup_steps: number of warmup steps, in the scheduler's own unit like ``begin`` and ``end``
            (epochs when ``by_epoch=True``, iterations otherwise); 0 (default) means no warmup.
            ``convert_to_iter_based=True`` converts it with the epoch length, as it does ``begin`` and ``end``.
        min_lr_ratio: "cosine" final lr as a fraction of each group's initial lr, in [0, 1] (default 0.0).
        milestones: "step" decay points, counted from ``begin`` in the same unit (default (): none).
        gamma: "step" decay factor per milestone, in (0, 1] (default 0.1).
        begin: first step of the schedule (default 0).
        end: step at which the schedule ends; must be finite. The Runner sets it to ``max_epochs`` or
            ``max_iters`` when the config leaves it out. Default ``INF`` (an error outside a Runner).
        last_step: MMEngine's resume-without-state-dict index (default -1: fresh start).
        by_epoch: whether ``begin``, ``end``, ``warmup_steps`` and ``milestones`` count epochs (default True).
        verbose: log every new value (default False).
    """

    def __init__(
        self,
        optimizer,
        schedule: str = "cosine",
        warmup_steps: int = 0,
        min_lr_ratio: float = 0.0,
        milestones: Sequence[int] = (),
        gamma: float = 0.1,
        begin: int = 0,
        end: int = INF,
        last_step: int = -1,
        by_epoch: bool = True,
        verbose: bool = False,
    ) -> None:
        if end >= INF:
            raise ValueError(
                f"end={end!r}: {type(self).__name__} needs a finite end (the step where the schedule ends); set "
                "end, or build it through a Runner, which defaults it to max_epochs/max_iters"
            )
        if end <= begin:
            raise ValueError(f"end={end!r} must be larger than begin={begin!r}")
        self.plan = LrSchedule(schedule, end - begin, warmup_steps, min_lr_ratio, tuple(milestones), gamma)
        super().__init__(optimizer, begin=begin, end=end, last_step=last_step, by_epoch=by_epoch, verbose=verbose)

    @classmethod
    def build_iter_from_epoch(
        cls,
        *args,
        warmup_steps: float = 0,
        milestones: Sequence[float] = (),
        begin: float = 0,
        end: float = INF,
        by_epoch: bool = True,
        epoch_length: int | None = None,
        **kwargs,
    ) -> TricksLR:
        """Build the iteration-based scheduler from an epoch-based config (``convert_to_iter_based=True``).

        ``begin``, ``end``, ``warmup_steps`` and ``milestones`` (epochs) become iterations with ``epoch_length``
        (given by the Runner) through :func:`plugins.recipe.plan.epochs_to_steps`, the project's one conversion
        (nearest iteration, halves to even), so the recipe engine and this scheduler agree at fractional epochs.
        MMEngine's own schedulers truncate instead (``int(2.3 * 10)`` is 22); whole epochs give the same.
        """
        if not by_epoch:
            raise ValueError("convert_to_iter_based=True needs by_epoch=True (the config's values are in epochs)")
        if isinstance(epoch_length, bool) or not isinstance(epoch_length, int) or epoch_length <= 0:
            raise ValueError(f"epoch_length must be a positive int, got {epoch_length!r}")
        end = epochs_to_steps(end, epoch_length) if end != INF else INF
        return cls(
            *args,
            warmup_steps=epochs_to_steps(warmup_steps, epoch_length),
            milestones=[epochs_to_steps(m, epoch_length) for m in milestones],
            begin=epochs_to_steps(begin, epoch_length),
            end=end,
            by_epoch=False,
            **kwargs,
        )

    def _get_value(self) -> list[float]:
        return self.plan.lrs(self.base_values, self.last_step)

    def state_dict(self) -> dict:
        """MMEngine's state (numbers) with the plan's fields in place of the plan object (weights_only loads)."""
        return {**{k: v for k, v in super().state_dict().items() if k != "plan"}, **self.plan.to_state()}

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        self.plan = LrSchedule.from_state(state_dict) or self.plan


class WarmupCosineLR(TricksLR):
    """:class:`TricksLR` with ``schedule='cosine'``: linear warmup then half-cosine decay (the paper's 5.1).

    Takes the same arguments as :class:`TricksLR` except ``schedule``, ``milestones`` and ``gamma``.
    """

    def __init__(self, optimizer, warmup_steps: int = 0, min_lr_ratio: float = 0.0, **kwargs) -> None:
        super().__init__(optimizer, "cosine", warmup_steps, min_lr_ratio, **kwargs)
