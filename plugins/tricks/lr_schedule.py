"""Learning-rate rules of the paper (section 3.1 and 5.1): linear scaling, linear warmup, cosine and step decay.

Every schedule is a closed-form factor of the update index ``i``, counted from 1 (the first update uses
``base_lr * factor(1)``). Warmup is one function, :func:`linear_warmup_factor`, that multiplies a decay;
the decays never depend on the current lr, so resuming or editing an lr mid-run cannot make them drift.

A run's schedule in updates is ``plugins.recipe.plan.LrSchedule``, which binds these factors to the
frameworks' scheduler protocols.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Integral, Real
from typing import Any

__all__ = [
    "SCHEDULES",
    "linear_warmup_factor",
    "lr_factor",
    "scale_lr",
    "warmup_cosine_factor",
    "warmup_step_factor",
]

SCHEDULES = ("cosine", "step", "constant")


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_real(name: str, value: Any, low: float, high: float, *, low_open: bool = False) -> float:
    ok = isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > low if low_open else value >= low) and value <= high
    if not ok:
        bracket = "(" if low_open else "["
        raise ValueError(f"{name} must be a number in {bracket}{low}, {high}], got {value!r}")
    return float(value)


def _check_steps(i: Any, total_steps: Any, warmup_steps: Any) -> tuple[int, int, int]:
    total_steps = _check_int("total_steps", total_steps, 1)
    warmup_steps = _check_int("warmup_steps", warmup_steps, 0)
    if warmup_steps > total_steps:
        raise ValueError(f"warmup_steps must be <= total_steps ({total_steps}), got {warmup_steps!r}")
    i = _check_int("i", i, 1)
    if i > total_steps:
        raise ValueError(f"i must be in [1, total_steps={total_steps}] (updates count from 1), got {i!r}")
    return i, total_steps, warmup_steps


def _check_milestones(milestones: Any, total_steps: int) -> tuple[int, ...]:
    if isinstance(milestones, str | bytes) or not isinstance(milestones, Sequence):
        raise ValueError(f"milestones must be a sequence of integers (steps), got {milestones!r}")
    values = tuple(milestones)
    ok = all(isinstance(m, Integral) and not isinstance(m, bool) and 0 < m <= total_steps for m in values)
    if not ok or any(a >= b for a, b in zip(values, values[1:])):
        raise ValueError(
            f"milestones must be strictly increasing integers in [1, total_steps={total_steps}], "
            f"got {milestones!r}"
        )
    return tuple(int(m) for m in values)


def scale_lr(base_lr: float, batch_size: int, base_batch_size: int = 256) -> float:
    """Linear scaling rule (paper 3.1): ``base_lr * batch_size / base_batch_size``.

    Args:
        base_lr: lr at ``base_batch_size`` (the paper: 0.1); must be > 0.
        batch_size: the global batch, i.e. samples per update over all devices and accumulation steps.
        base_batch_size: batch at which ``base_lr`` applies (default 256).
    """
    base_lr = _check_real("base_lr", base_lr, 0.0, math.inf, low_open=True)
    batch_size = _check_int("batch_size", batch_size, 1)
    base_batch_size = _check_int("base_batch_size", base_batch_size, 1)
    return base_lr * batch_size / base_batch_size


def linear_warmup_factor(i: int, warmup_steps: int) -> float:
    """Linear warmup (paper 3.1): ``min(1, i / m)`` for update ``i`` (from 1) and ``m = warmup_steps``.

    The first update uses ``1 / m`` of the lr, update ``m`` the full lr; ``warmup_steps=0`` means no warmup.
    """
    i = _check_int("i", i, 1)
    warmup_steps = _check_int("warmup_steps", warmup_steps, 0)
    return 1.0 if i >= warmup_steps else i / warmup_steps


def warmup_cosine_factor(i: int, total_steps: int, warmup_steps: int, min_lr_ratio: float = 0.0) -> float:
    """Linear warmup then half-cosine decay (paper 5.1), as a factor of the lr of update ``i``.

    With ``m = warmup_steps``, ``T = total_steps - m`` and ``t = i - m``::

        factor(i) = i / m                                                  for 1 <= i <= m
        factor(i) = r + (1 - r) * 0.5 * (1 + cos(pi * t / T))             for m < i <= total_steps

    where ``r = min_lr_ratio``. ``t`` counts updates after warmup from 1, so update ``m`` has the full lr,
    update ``m + 1`` the first value below it, and the last update (``i = total_steps``, ``t = T``) gets
    exactly ``min_lr_ratio``. ``warmup_steps=0`` means no warmup.

    Args:
        i: update index, 1 <= i <= total_steps.
        total_steps: number of updates of the whole run (>= 1).
        warmup_steps: number of warmup updates, 0 <= warmup_steps <= total_steps.
        min_lr_ratio: final lr as a fraction of the peak lr, in [0, 1] (default 0.0, as the paper).
    """
    i, total_steps, warmup_steps = _check_steps(i, total_steps, warmup_steps)
    min_lr_ratio = _check_real("min_lr_ratio", min_lr_ratio, 0.0, 1.0)
    if i <= warmup_steps:
        return linear_warmup_factor(i, warmup_steps)
    progress = (i - warmup_steps) / (total_steps - warmup_steps)
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_step_factor(
    i: int, total_steps: int, warmup_steps: int, milestones: Sequence[int], gamma: float = 0.1
) -> float:
    """Linear warmup times step decay (the paper's baseline divides the lr by 10 at epochs 30, 60, 90)::

        factor(i) = min(1, i / m) * gamma ** (number of milestones M with i > M)

    Milestones are counted in updates: updates ``1 .. M`` run before the decay, update ``M + 1`` is the
    first decayed one (the per-update version of torch's ``MultiStepLR`` at epoch milestones).

    Args:
        i: update index, 1 <= i <= total_steps.
        total_steps: number of updates of the whole run (>= 1).
        warmup_steps: number of warmup updates, 0 <= warmup_steps <= total_steps.
        milestones: strictly increasing update counts in [1, total_steps]; may be empty.
        gamma: multiplicative decay at each milestone, in (0, 1] (default 0.1).
    """
    i, total_steps, warmup_steps = _check_steps(i, total_steps, warmup_steps)
    milestones = _check_milestones(milestones, total_steps)
    gamma = _check_real("gamma", gamma, 0.0, 1.0, low_open=True)
    passed = sum(1 for m in milestones if i > m)
    return linear_warmup_factor(i, warmup_steps) * gamma**passed


def lr_factor(
    schedule: str,
    i: int,
    total_steps: int,
    warmup_steps: int,
    min_lr_ratio: float = 0.0,
    milestones: Sequence[int] = (),
    gamma: float = 0.1,
) -> float:
    """Factor of the lr of update ``i`` for a schedule named in :data:`SCHEDULES`.

    ``"cosine"`` is :func:`warmup_cosine_factor` (uses ``min_lr_ratio``), ``"step"`` is
    :func:`warmup_step_factor` (uses ``milestones`` in updates and ``gamma``), ``"constant"`` is
    :func:`linear_warmup_factor` alone. Arguments a schedule does not use are ignored.
    """
    if schedule == "cosine":
        return warmup_cosine_factor(i, total_steps, warmup_steps, min_lr_ratio)
    if schedule == "step":
        return warmup_step_factor(i, total_steps, warmup_steps, milestones, gamma)
    if schedule == "constant":
        i, total_steps, warmup_steps = _check_steps(i, total_steps, warmup_steps)
        return linear_warmup_factor(i, warmup_steps)
    raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
