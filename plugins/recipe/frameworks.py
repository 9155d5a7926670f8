"""What every adapter does with the recipe a user names: load it (:func:`load_recipe`) and say which of its
settings the framework leaves out (:func:`not_applied`), one list for all adapters.

timm (``tricks-train --recipe``) applies every classification field and leaves out the detection mixup
(``det_mixup_*``, the detectors' trick). MMEngine and Detectron2 train a detector or a segmenter whose config
decides the run's length, batch and backbone (``epochs``, ``batch_size``, ``variant``, ``depth``), where mixup of
whole images and distillation are classification tricks they do not run; their AMP needs CUDA. A field is listed
only when its value does something: ``mixup_alpha`` above 0, a ``distill_teacher``, ``distill_temperature`` with a
teacher (it means nothing without one), ``amp`` on, the ``det_mixup_*`` fields with ``det_mixup_alpha`` above 0.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch

from .schema import Recipe

__all__ = ["FRAMEWORKS", "load_recipe", "not_applied"]

FRAMEWORKS = ("timm", "mmengine", "detectron2")

_DETECTION = ("epochs", "batch_size", "variant", "depth", "mixup_alpha", "distill_teacher", "distill_temperature")
_NOT_APPLIED = {"timm": ("det_mixup_alpha", "det_mixup_stop_fraction", "det_mixup_fixed_ratio"),
                "mmengine": _DETECTION, "detectron2": _DETECTION}
_NOT_APPLIED_WITHOUT_CUDA = {"timm": (), "mmengine": ("amp",), "detectron2": ("amp",)}

# When a field's value does something; the fields not named here always do.
_ACTIVE = {
    "mixup_alpha": lambda recipe: recipe.mixup_alpha > 0,
    "distill_teacher": lambda recipe: recipe.distill_teacher is not None,
    "distill_temperature": lambda recipe: recipe.distill_teacher is not None,
    "amp": lambda recipe: recipe.amp,
    **{field: (lambda recipe: recipe.det_mixup_alpha > 0)
       for field in ("det_mixup_alpha", "det_mixup_stop_fraction", "det_mixup_fixed_ratio")},
}


def _always(recipe: Recipe) -> bool:
    return True


def load_recipe(name_or_path: str | os.PathLike, overrides: Mapping[str, Any] | None = None, *,
                source: str | None = None) -> Recipe:
    """The recipe a user names, read the one way every adapter reads it.

    Args:
        name_or_path: a preset name (``Recipe.available_presets()``) or a recipe yaml path (:meth:`Recipe.load`).
        overrides: field -> value laid over it (:meth:`Recipe.with_overrides`), e.g. the explicit flags of a
            command line. Defaults to None (none).
        source: the flag or key the recipe came from (``"--recipe my.yaml"``), put before the message of the
            ValueError. Defaults to None (the message alone).

    Raises ValueError when ``name_or_path`` is neither a preset nor a file, when the yaml is not a valid recipe
    or when an override is not a valid value of its field.
    """
    try:
        recipe = Recipe.load(os.fspath(name_or_path))
        return recipe.with_overrides(**overrides) if overrides else recipe
    except ValueError as err:
        if source is None:
            raise
        raise ValueError(f"{source}: {err}") from None


def not_applied(recipe: Recipe, framework: str, *, cuda: bool | None = None) -> tuple[str, ...]:
    """The fields of ``recipe`` that are set to a value that does something and that ``framework`` does not apply.

    Args:
        recipe: the recipe.
        framework: one of :data:`FRAMEWORKS` (``"timm"``, ``"mmengine"``, ``"detectron2"``).
        cuda: whether the run has CUDA (``amp`` needs it in MMEngine and Detectron2). Defaults to None
            (``torch.cuda.is_available()``).

    Returns the field names in a fixed order (every adapter reports the same list for the same recipe).
    """
    if framework not in _NOT_APPLIED:
        raise ValueError(f"framework must be one of {FRAMEWORKS}, got {framework!r}")
    if not isinstance(recipe, Recipe):
        raise TypeError(f"recipe must be a plugins.recipe.Recipe, got {type(recipe).__name__}")
    cuda = torch.cuda.is_available() if cuda is None else cuda
    fields = _NOT_APPLIED[framework] + (() if cuda else _NOT_APPLIED_WITHOUT_CUDA[framework])
    return tuple(f for f in fields if _ACTIVE.get(f, _always)(recipe))
