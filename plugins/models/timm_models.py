"""``tricks_*`` timm models: ResNet-A/B/C/D from ``plugins.tricks.resnet.create_resnet`` (variants defined there).

Shared by every adapter (``timm_ext``, ``mm_ext``, ``d2_ext`` import it; none imports another adapter). This
module and ``plugins.models.features`` are the two ``plugins`` modules that import timm when imported; the rest of
``plugins`` needs torch only. Importing it registers, with timm's ``@register_model``:

- ``tricks_resnet{18,26,50}{a,b,c,d}``: full-width ResNets (depth 18 uses basic blocks, so A equals B there);
- ``tricks_resnet26n{a,b,c,d}``: the demo's narrow small-input net (bottlenecks 2-2-2-2, width multiplier
  0.25, no stem max-pool) for 28-64 px images such as Fashion-MNIST;
- ``tricks_resnet50n{a,b,c,d}``: the same narrow small-input style at depth 50, the demo's distillation teacher.

Every entrypoint takes timm's usual kwargs (``num_classes``, ``in_chans``, ``output_stride``, ``global_pool``,
``drop_path_rate``, ``features_only``...), plus ``zero_gamma`` (default False: every BN gamma starts at 1,
unlike timm's ``zero_init_last=True``; ``zero_init_last`` is accepted as an alias). There are no pretrained
weights: ``pretrained=True`` only warns, as timm does for a model without a weight source. A name already
registered by another package is left alone (a warning says so).
"""

from __future__ import annotations

import sys
import warnings
from typing import Any

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import build_model_with_cfg, generate_default_cfgs, is_model, register_model

from plugins.tricks.resnet import VARIANTS, create_resnet

__all__: list[str] = []  # filled by register_model with the entrypoint names

# family suffix -> (depth, create_resnet kwargs, default input size)
_FAMILIES: dict[str, tuple[int, dict[str, Any], tuple[int, int, int]]] = {
    "18": (18, {}, (3, 224, 224)),
    "26": (26, {}, (3, 224, 224)),
    "50": (50, {}, (3, 224, 224)),
    "26n": (26, {"width_multiplier": 0.25, "small_input": True}, (3, 32, 32)),
    "50n": (50, {"width_multiplier": 0.25, "small_input": True}, (3, 32, 32)),
}


def _cfg(variant: str, input_size: tuple[int, int, int]) -> dict[str, Any]:
    side = input_size[-1]
    pool = side // 16 if side < 64 else side // 32  # small-input nets drop the max-pool: stride 16
    return {
        "url": "",
        "num_classes": 1000,
        "input_size": input_size,
        "pool_size": (pool, pool),
        "crop_pct": 1.0 if side < 64 else 0.875,
        "interpolation": "bilinear",
        "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD,
        "first_conv": "conv1.0" if variant in ("c", "d") else "conv1",
        "classifier": "fc",
        "license": "apache-2.0",
    }


_NAMES = {
    f"tricks_resnet{family}{variant}": (family, variant) for family in _FAMILIES for variant in VARIANTS
}
default_cfgs = generate_default_cfgs(
    {name: _cfg(variant, _FAMILIES[family][2]) for name, (family, variant) in _NAMES.items()}
)


def _build(resnet_variant: str, depth: int, family_kwargs: dict[str, Any], **kwargs: Any):
    if "zero_init_last" in kwargs:  # timm's name for zero gamma
        kwargs.setdefault("zero_gamma", kwargs.pop("zero_init_last"))
    return create_resnet(resnet_variant, depth, **{**family_kwargs, **kwargs})


def _make_entrypoint(name: str, family: str, variant: str):
    depth, family_kwargs, _ = _FAMILIES[family]

    def entrypoint(pretrained: bool = False, **kwargs: Any):
        return build_model_with_cfg(
            _build, name, pretrained, resnet_variant=variant, depth=depth, family_kwargs=family_kwargs, **kwargs
        )

    entrypoint.__name__ = entrypoint.__qualname__ = name
    entrypoint.__module__ = __name__
    entrypoint.__doc__ = f"ResNet-{variant.upper()}, {family} family, built by plugins.tricks.resnet.create_resnet."
    return entrypoint


def _register_all() -> None:
    module = sys.modules[__name__]
    for name, (family, variant) in _NAMES.items():
        if getattr(module, name, None) is not None:  # already registered by this module (reload)
            continue
        if is_model(name):
            warnings.warn(f"timm already has a model named {name!r}; plugins.models.timm_models leaves it in place", stacklevel=2)
            continue
        entrypoint = _make_entrypoint(name, family, variant)
        setattr(module, name, entrypoint)
        register_model(entrypoint)


_register_all()
