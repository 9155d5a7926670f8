"""Deprecated import path of the first release: now ``plugins.tricks.lr_schedule`` (the paper's lr factors)
and ``plugins.recipe.plan`` (``epochs_to_steps``, ``LrSchedule``, ``ScheduleLR``). Kept for one release;
importing it warns. ``WarmupCosineLR`` and ``WarmupStepLR`` (torch schedulers of the first release) return a
``ScheduleLR``.
"""

import warnings

from plugins.recipe.plan import *  # noqa: F403
from plugins.recipe.plan import LrSchedule, ScheduleLR
from plugins.recipe.plan import __all__ as _plan
from plugins.tricks.lr_schedule import *  # noqa: F403
from plugins.tricks.lr_schedule import __all__ as _factors

__all__ = [*_factors, *_plan]

warnings.warn("plugins.schedules is deprecated and goes in the next release; import plugins.tricks.lr_schedule "
              "or plugins.recipe.plan", DeprecationWarning, stacklevel=2)

_REMOVED = {"WarmupCosineLR": "ScheduleLR(optimizer, LrSchedule('cosine', total_steps, warmup_steps, min_lr_ratio))",
            "WarmupStepLR": "ScheduleLR(optimizer, LrSchedule('step', total_steps, warmup_steps, "
                            "milestones=milestones, gamma=gamma))"}


def __getattr__(name: str):
    """The torch schedulers of the first release, kept for one release with a DeprecationWarning."""
    if name not in _REMOVED:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    warnings.warn(f"plugins.schedules.{name} is deprecated and goes in the next release; use {_REMOVED[name]}",
                  DeprecationWarning, stacklevel=2)
    return _DEPRECATED[name]


def _warmup_cosine_lr(optimizer, total_steps, warmup_steps, min_lr_ratio=0.0, last_epoch=-1):
    return ScheduleLR(optimizer, LrSchedule("cosine", total_steps, warmup_steps, min_lr_ratio), last_epoch)


def _warmup_step_lr(optimizer, total_steps, warmup_steps, milestones, gamma=0.1, last_epoch=-1):
    return ScheduleLR(optimizer, LrSchedule("step", total_steps, warmup_steps, milestones=milestones, gamma=gamma),
                      last_epoch)


_DEPRECATED = {"WarmupCosineLR": _warmup_cosine_lr, "WarmupStepLR": _warmup_step_lr}
