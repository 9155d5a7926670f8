"""Recipes on disk: yaml text and files, and the presets shipped in ``plugins/recipe/presets/``.

Only primitives pass through here (text, paths, plain dicts); :class:`plugins.recipe.schema.Recipe` builds and
validates the recipe from them (``Recipe.from_yaml``, ``Recipe.preset``, ``Recipe.load``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml

__all__ = ["RECIPES_DIR", "available_presets", "dump_yaml", "preset_path", "read_yaml"]

RECIPES_DIR = Path(__file__).resolve().parent / "presets"


class _YamlLoader(yaml.SafeLoader):
    """Safe loader that also reads ``1e-4`` as a float (YAML 1.1 wants ``1.0e-4``, a common trap)."""


_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def dump_yaml(data: dict[str, Any], path: str | os.PathLike | None = None) -> str:
    """``data`` as yaml text, keys in their order; also written to ``path`` when given."""
    text = yaml.safe_dump(data, sort_keys=False, default_flow_style=None)
    if path is not None:
        Path(path).write_text(text, encoding="utf-8")
    return text


def read_yaml(source: str | os.PathLike) -> Any:
    """The data of a yaml file path or of yaml text (a string that is not an existing file); ``{}`` when empty.

    A string ending in ``.yaml`` / ``.yml`` is always taken as a path. Malformed yaml raises ValueError.
    """
    if isinstance(source, os.PathLike) or (
        isinstance(source, str) and (os.path.isfile(source) or source.endswith((".yaml", ".yml")))
    ):
        text, label = Path(source).read_text(encoding="utf-8"), f"recipe yaml {source}"
    elif isinstance(source, str):
        text, label = source, "recipe yaml text"
    else:
        raise TypeError(f"source must be a path or yaml text, got {type(source).__name__}")
    try:
        data = yaml.load(text, Loader=_YamlLoader)
    except yaml.YAMLError as error:
        raise ValueError(f"{label} is not valid yaml: {' '.join(str(error).split())}") from None
    return {} if data is None else data


def available_presets() -> tuple[str, ...]:
    """Names of the recipes shipped in ``plugins/recipe/presets/`` (file stems)."""
    return tuple(sorted(p.stem for p in RECIPES_DIR.glob("*.yaml")))


def preset_path(name: str) -> Path:
    """The file of a shipped recipe; ValueError naming the presets when ``name`` is none of them."""
    available = available_presets()
    if name not in available:
        raise ValueError(f"preset must be one of {available}, got {name!r}")
    return RECIPES_DIR / f"{name}.yaml"
