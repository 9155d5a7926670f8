"""``WarmupCosineLR`` for MMEngine's ``param_scheduler``: the closed form of ``plugins.schedules``.

Registry contract (PARAM_SCHEDULERS, key ``WarmupCosineLR``): built by the Runner with the optimizer wrapper
and, when ``convert_to_iter_based=True``, through :meth:`WarmupCosineLR.build_iter_from_epoch`. The formula
and its paper reference are in :func:`plugins.schedules.warmup_cosine_factor`.
"""

from __future__ import annotations

from mmengine.optim.scheduler.lr_scheduler import LRSchedulerMixin
from mmengine.optim.scheduler.param_scheduler import INF, _ParamScheduler

from plugins.schedules import epochs_to_steps, warmup_cosine_factor


class WarmupCosineLR(LRSchedulerMixin, _ParamScheduler):
    """Linear warmup then half-cosine decay, as a closed form of the step (never of the current lr).

    Step convention: MMEngine sets the first value at construction (``last_step = 0``) and calls
    :meth:`step` after every iteration (epoch when ``by_epoch=True``), so ``last_step`` is the number of
    completed steps since ``begin``. The lr of the ``i``-th update in ``[begin, end)`` (``i`` from 1, i.e.
    ``i = last_step + 1``) is ``initial_lr * warmup_cosine_factor(i, end - begin, warmup_steps,
    min_lr_ratio)`` for each param group, with the group's own ``initial_lr``. A resumed run restores
    ``last_step`` and ``base_values`` and so gets the same lr at every later step. The value replaces the
    lr, so this scheduler is meant to be the only lr scheduler of its range (it is not chainable).

    Args:
        optimizer: the optimizer wrapper or torch optimizer (given by the Runner).
        warmup_steps: number of warmup steps, in the scheduler's own unit like ``begin`` and ``end``
            (epochs when ``by_epoch=True``, iterations otherwise); 0 (default) means no warmup.
            ``convert_to_iter_based=True`` multiplies it by the epoch length, as it does ``begin`` and ``end``.
        min_lr_ratio: final lr as a fraction of each group's initial lr, in [0, 1] (default 0.0).
        begin: first step of the schedule (default 0).
        end: step at which the schedule ends; must be finite. The Runner sets it to ``max_epochs`` or
            ``max_iters`` when the config leaves it out. Default ``INF`` (an error outside a Runner).
        last_step: MMEngine's resume-without-state-dict index (default -1: fresh start).
        by_epoch: whether ``begin``, ``end`` and ``warmup_steps`` count epochs (default True, MMEngine's).
        verbose: log every new value (default False).
    """

    def __init__(
        self,
        optimizer,
        warmup_steps: int = 0,
        min_lr_ratio: float = 0.0,
        begin: int = 0,
        end: int = INF,
        last_step: int = -1,
        by_epoch: bool = True,
        verbose: bool = False,
    ) -> None:
        if end >= INF:
            raise ValueError(
                f"end={end!r}: WarmupCosineLR needs a finite end (the step where the cosine reaches "
                "min_lr_ratio); set end, or build it through a Runner, which defaults it to max_epochs/max_iters"
            )
        if end <= begin:
            raise ValueError(f"end={end!r} must be larger than begin={begin!r}")
        warmup_cosine_factor(1, end - begin, warmup_steps, min_lr_ratio)  # the plugin validates its arguments
        self.total_steps = int(end - begin)
        self.warmup_steps = int(warmup_steps)
        self.min_lr_ratio = float(min_lr_ratio)
        super().__init__(optimizer, begin=begin, end=end, last_step=last_step, by_epoch=by_epoch, verbose=verbose)

    @classmethod
    def build_iter_from_epoch(
        cls,
        *args,
        warmup_steps: float = 0,
        begin: float = 0,
        end: float = INF,
        by_epoch: bool = True,
        epoch_length: int | None = None,
        **kwargs,
    ) -> WarmupCosineLR:
        """Build the iteration-based scheduler from an epoch-based config (``convert_to_iter_based=True``).

        ``begin``, ``end`` and ``warmup_steps`` (epochs) become iterations with ``epoch_length`` (given by the
        Runner) through :func:`plugins.schedules.epochs_to_steps`, the project's one conversion (nearest
        iteration, halves to even), so the recipe engine and this scheduler agree at fractional epochs.
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
            begin=epochs_to_steps(begin, epoch_length),
            end=end,
            by_epoch=False,
            **kwargs,
        )

    def _get_value(self) -> list[float]:
        # Past total_steps (only reachable with a hand-given last_step) the lr stays at the final value.
        i = min(self.last_step + 1, self.total_steps)
        factor = warmup_cosine_factor(i, self.total_steps, self.warmup_steps, self.min_lr_ratio)
        return [base * factor for base in self.base_values]
