"""One training recipe holding every trick's setting, shared by the timm, MMEngine and Detectron2 adapters.

A :class:`Recipe` is frozen and made of primitives (str, int, float, bool, None, tuples of ints), so it
hashes, compares and round-trips through yaml and plain dicts. It is validated when built, so an invalid
recipe never exists. Its defaults are the paper's baseline
(section 2): ResNet-50-B, SGD with Nesterov momentum 0.9, weight decay 1e-4, batch 256, lr 0.1, 120 epochs,
lr divided by 10 at epochs 30, 60 and 90, no trick on. Shipped presets live in ``plugins/recipe/presets/*.yaml``.

The modules: :mod:`~plugins.recipe.schema` (the dataclass and its validation), :mod:`~plugins.recipe.io` (yaml,
presets), :mod:`~plugins.recipe.plan` (the step plan in updates) and :mod:`~plugins.recipe.frameworks` (how an
adapter loads a recipe and which of its fields the framework does not apply).
"""

from .frameworks import FRAMEWORKS, load_recipe, not_applied
from .io import RECIPES_DIR
from .schema import Recipe

__all__ = ["FRAMEWORKS", "RECIPES_DIR", "Recipe", "load_recipe", "not_applied"]
