"""The :class:`Recipe` dataclass: every trick's setting, its defaults (the paper's baseline) and its validation.

Reading and writing it (yaml, presets) is :mod:`plugins.recipe.io`; its schedule in updates is
:mod:`plugins.recipe.plan`.
"""

from __future__ import annotations

import dataclasses
import math
import os
from numbers import Integral, Real
from typing import Any

from plugins.tricks.lr_schedule import SCHEDULES, scale_lr

from . import io
from .plan import LrSchedule, epochs_to_steps

__all__ = ["Recipe"]

_VARIANTS = ("a", "b", "c", "d")
_DEPTHS = (18, 26, 34, 50, 101, 152)
_FORMS = ("paper", "uniform")


@dataclasses.dataclass(frozen=True)
class Recipe:
    """Every setting of a run. Field meanings (defaults: the paper's baseline):

    - ``name``: free label (default None).
    - ``variant``: ResNet variant ``"a" | "b" | "c" | "d"`` (default ``"b"``); ``depth``: 18, 26, 34, 50,
      101 or 152 (default 50).
    - ``base_lr`` at ``base_batch_size`` (0.1 at 256); ``batch_size``: global batch (256). The lr used is
      ``scale_lr(base_lr, batch_size, base_batch_size)`` (linear scaling, paper 3.1).
    - ``epochs`` (120); ``warmup_epochs`` of linear warmup (0; the paper's trick: 5).
    - ``schedule``: ``"step" | "cosine" | "constant"`` (``"step"``); ``step_milestones`` in epochs
      ((30, 60, 90); fractions of an epoch allowed, as a detector's schedule needs) and ``step_gamma`` (0.1) for ``"step"``; ``min_lr_ratio`` (0.0) for ``"cosine"``.
    - ``momentum`` (0.9), ``nesterov`` (True), ``weight_decay`` (1e-4).
    - ``no_bias_decay`` (False), ``zero_gamma`` (False), ``amp`` (False).
    - ``label_smoothing`` epsilon in [0, 1) (0.0; the paper's trick: 0.1) and ``label_smoothing_form``
      ``"paper" | "uniform"`` (``"paper"``, see :mod:`plugins.tricks.label_smoothing`).
    - ``mixup_alpha`` (0.0 = off; the paper's trick: 0.2).
    - ``distill_teacher``: teacher model name or checkpoint path, None = no distillation (default);
      ``distill_temperature`` (20.0).
    - ``det_mixup_alpha`` (0.0 = off; Bag of Freebies: 1.5): detectors only, the detection mixup of
      :mod:`plugins.tricks.detection_mixup`, on iterations ``< det_mixup_stop_fraction`` (1.0) x the run's;
      ``det_mixup_fixed_ratio`` (0.0: ratios drawn; in (0, 1): every pair blended with it, the anchors' 0.5).
    """

    name: str | None = None
    variant: str = "b"
    depth: int = 50
    base_lr: float = 0.1
    base_batch_size: int = 256
    batch_size: int = 256
    epochs: int = 120
    warmup_epochs: float = 0
    schedule: str = "step"
    step_milestones: tuple[float, ...] = (30, 60, 90)
    step_gamma: float = 0.1
    min_lr_ratio: float = 0.0
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 1e-4
    no_bias_decay: bool = False
    zero_gamma: bool = False
    label_smoothing: float = 0.0
    label_smoothing_form: str = "paper"
    mixup_alpha: float = 0.0
    distill_teacher: str | None = None
    distill_temperature: float = 20.0
    amp: bool = False
    det_mixup_alpha: float = 0.0
    det_mixup_stop_fraction: float = 1.0
    det_mixup_fixed_ratio: float = 0.0

    def __post_init__(self) -> None:
        # A yaml or JSON list must still hash: store milestones as a tuple. An invalid recipe cannot exist.
        if isinstance(self.step_milestones, list):
            object.__setattr__(self, "step_milestones", tuple(self.step_milestones))
        if isinstance(self.variant, str):  # "D" as in the paper's "ResNet-D" means "d"
            object.__setattr__(self, "variant", self.variant.lower())
        self.validate()

    # ---- validation -------------------------------------------------------------------------------
    def validate(self) -> Recipe:
        """Raise ValueError naming the field, its value and what is accepted; return ``self`` if valid.

        Construction already calls it; it stays public for callers that want to re-check explicitly.
        """

        def fail(field: str, accepted: str) -> None:
            raise ValueError(f"Recipe.{field} must be {accepted}, got {getattr(self, field)!r}")

        def number(
            field: str, low: float, high: float, low_open: bool = False, high_open: bool = False
        ) -> None:
            value = getattr(self, field)
            ok = isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)
            ok = (
                ok
                and (value > low if low_open else value >= low)
                and (value < high if high_open else value <= high)
            )
            if not ok:
                fail(field, f"a number in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}")

        def integer(field: str, minimum: int) -> None:
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
                fail(field, f"an integer >= {minimum}")

        def choice(field: str, accepted: tuple) -> None:
            if getattr(self, field) not in accepted:
                fail(field, f"one of {accepted}")

        def flag(field: str) -> None:
            if not isinstance(getattr(self, field), bool):
                fail(field, "true or false")

        if self.name is not None and not isinstance(self.name, str):
            fail("name", "a string or null")
        choice("variant", _VARIANTS)
        choice("depth", _DEPTHS)
        number("base_lr", 0.0, math.inf, low_open=True)
        integer("base_batch_size", 1)
        integer("batch_size", 1)
        integer("epochs", 1)
        number("warmup_epochs", 0.0, self.epochs if isinstance(self.epochs, Real) else 0.0)
        choice("schedule", SCHEDULES)
        milestones = self.step_milestones
        if not isinstance(milestones, tuple) or not all(
            isinstance(m, Real) and not isinstance(m, bool) and math.isfinite(m) for m in milestones
        ):
            fail("step_milestones", "a list of numbers (epochs)")
        if any(a >= b for a, b in zip(milestones, milestones[1:])):
            fail("step_milestones", "strictly increasing")
        if self.schedule == "step" and any(not 0 < m <= self.epochs for m in milestones):
            fail("step_milestones", f"epochs in (0, epochs={self.epochs}]")
        number("step_gamma", 0.0, 1.0, low_open=True)
        number("min_lr_ratio", 0.0, 1.0)
        number("momentum", 0.0, 1.0, high_open=True)
        flag("nesterov")
        if self.nesterov and self.momentum == 0:
            fail("nesterov", "false when momentum is 0 (Nesterov needs momentum)")
        number("weight_decay", 0.0, math.inf)
        for field in ("no_bias_decay", "zero_gamma", "amp"):
            flag(field)
        number("label_smoothing", 0.0, 1.0, high_open=True)
        choice("label_smoothing_form", _FORMS)
        number("mixup_alpha", 0.0, math.inf)
        number("det_mixup_alpha", 0.0, math.inf)
        number("det_mixup_stop_fraction", 0.0, 1.0, low_open=True)
        number("det_mixup_fixed_ratio", 0.0, 1.0, high_open=True)
        if self.distill_teacher is not None and (
            not isinstance(self.distill_teacher, str) or not self.distill_teacher
        ):
            fail("distill_teacher", "null or a non-empty model name / checkpoint path")
        number("distill_temperature", 0.0, math.inf, low_open=True)
        return self

    # ---- (de)serialisation ------------------------------------------------------------------------
    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of primitives (milestones as a list), in field order."""
        data = dataclasses.asdict(self)
        data["step_milestones"] = list(self.step_milestones)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Recipe:
        """Build and validate a recipe; missing keys take the defaults, unknown keys raise ValueError."""
        if not isinstance(data, dict):
            raise ValueError(
                f"a recipe must be a mapping of field names to values, got {type(data).__name__}"
            )
        unknown = sorted(set(data) - set(cls.field_names()))
        if unknown:
            raise ValueError(f"unknown Recipe field(s) {unknown}; accepted fields: {list(cls.field_names())}")
        return cls(**data)

    def to_yaml(self, path: str | os.PathLike | None = None) -> str:
        """The recipe as yaml text; also written to ``path`` when given."""
        return io.dump_yaml(self.to_dict(), path)

    @classmethod
    def from_yaml(cls, source: str | os.PathLike) -> Recipe:
        """Read a recipe from a yaml file path or from yaml text (a string that is not an existing file).

        A string ending in ``.yaml`` / ``.yml`` is always taken as a path. Malformed yaml raises ValueError.
        """
        return cls.from_dict(io.read_yaml(source))

    # ---- presets ----------------------------------------------------------------------------------
    @staticmethod
    def available_presets() -> tuple[str, ...]:
        """Names of the recipes shipped in ``plugins/recipe/presets/`` (file stems)."""
        return io.available_presets()

    @classmethod
    def load(cls, spec: str) -> Recipe:
        """A preset name (:meth:`available_presets`) or a recipe yaml path, the one way every adapter reads the
        recipe a user names. ValueError (the adapter prefixes the flag or key it came from) when it is neither,
        or when the yaml is not a valid recipe."""
        presets = cls.available_presets()
        try:
            if spec in presets:
                return cls.preset(spec)
            if os.path.isfile(spec):
                return cls.from_yaml(spec)
        except (ValueError, TypeError, OSError) as err:
            raise ValueError(str(err)) from None
        raise ValueError(f"not a preset nor a file; accepted: one of {presets} or a recipe yaml path")

    @classmethod
    def preset(cls, name: str) -> Recipe:
        """A shipped recipe: ``"baseline"``, ``"efficient"``, ``"paper"`` (see :meth:`available_presets`)."""
        return cls.from_yaml(io.preset_path(name))

    def with_overrides(self, **changes: Any) -> Recipe:
        """A validated copy with some fields changed; unknown names raise ValueError."""
        unknown = sorted(set(changes) - set(self.field_names()))
        if unknown:
            raise ValueError(
                f"unknown Recipe field(s) {unknown}; accepted fields: {list(self.field_names())}"
            )
        return dataclasses.replace(self, **changes)

    # ---- learning rate ----------------------------------------------------------------------------
    def scaled_lr(self) -> float:
        """Peak lr after linear scaling: ``base_lr * batch_size / base_batch_size``."""
        return scale_lr(self.base_lr, self.batch_size, self.base_batch_size)

    def total_steps(self, steps_per_epoch: int) -> int:
        """Updates of the whole run (:func:`plugins.recipe.plan.epochs_to_steps` of ``epochs``)."""
        return epochs_to_steps(self.epochs, _steps_per_epoch(steps_per_epoch))

    def warmup_steps(self, steps_per_epoch: int) -> int:
        """Warmup updates (:func:`plugins.recipe.plan.epochs_to_steps`: nearest update, halves to even)."""
        return epochs_to_steps(self.warmup_epochs, _steps_per_epoch(steps_per_epoch))

    def milestone_steps(self, steps_per_epoch: int) -> tuple[int, ...]:
        """Step-decay milestones in updates (:func:`plugins.recipe.plan.epochs_to_steps` of each)."""
        return tuple(epochs_to_steps(m, _steps_per_epoch(steps_per_epoch)) for m in self.step_milestones)

    def lr_schedule(self, steps_per_epoch: int, total_steps: int | None = None) -> LrSchedule:
        """The step plan: this recipe's schedule in updates at ``steps_per_epoch`` updates per epoch.

        Every count comes from :func:`plugins.recipe.plan.epochs_to_steps`. ``total_steps`` replaces the run's
        length where a framework's config decides it (a detector's ``max_iters``), the rest staying in epochs.
        """
        total = self.total_steps(steps_per_epoch) if total_steps is None else total_steps
        return LrSchedule(self.schedule, total, self.warmup_steps(steps_per_epoch), min_lr_ratio=self.min_lr_ratio,
                          milestones=self.milestone_steps(steps_per_epoch) if self.schedule == "step" else (),
                          gamma=self.step_gamma)

    def lr_at(self, i: int, steps_per_epoch: int) -> float:
        """Learning rate of update ``i`` (counted from 1): the scaled lr times the plan's factor."""
        plan = self.lr_schedule(steps_per_epoch)
        if isinstance(i, bool) or not isinstance(i, Integral) or not 1 <= i <= plan.total_steps:
            raise ValueError(f"i must be an update in [1, total_steps={plan.total_steps}] (from 1), got {i!r}")
        return self.scaled_lr() * plan.factor(i)


def _steps_per_epoch(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
        raise ValueError(f"steps_per_epoch must be an integer >= 1, got {value!r}")
    return int(value)
