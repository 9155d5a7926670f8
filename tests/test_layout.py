"""The layout the architecture doc promises: no adapter imports another; the framework-free core imports none."""

import ast
import importlib
import sys
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ADAPTERS = ("timm_ext", "mm_ext", "d2_ext")


def _imported_packages(package: str) -> dict[str, set[str]]:
    """file -> the top-level packages it imports (absolute imports, at any depth of the file)."""
    out = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
        out[str(path.relative_to(ROOT))] = names
    return out


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_no_adapter_imports_another(adapter):
    others = set(ADAPTERS) - {adapter}
    offending = {f: sorted(n & others) for f, n in _imported_packages(adapter).items() if n & others}
    assert not offending, f"{adapter} imports another adapter: {offending}"


def test_the_core_imports_no_adapter():
    offending = {f: sorted(n & set(ADAPTERS)) for f, n in _imported_packages("plugins").items()
                 if n & set(ADAPTERS)}
    assert not offending, f"plugins imports an adapter (the study runs the adapters' commands instead): {offending}"


def test_the_old_feature_extractor_path_still_works_and_warns():
    sys.modules.pop("timm_ext.features", None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        old = importlib.import_module("timm_ext.features")
    from plugins.models.features import TimmFeatures

    assert old.TimmFeatures is TimmFeatures
    assert any(issubclass(w.category, DeprecationWarning) and "plugins.models.features" in str(w.message) for w in caught)


LAYERS = ["tricks", "recipe", "runtime", "models", "data", "reproduce"]  # each may import only earlier ones
OLD_PATHS = {"plugins.resnet": "plugins.tricks.resnet", "plugins.param_groups": "plugins.tricks.no_bias_decay",
             "plugins.mixup": "plugins.tricks.mixup", "plugins.checkpoint": "plugins.runtime.checkpoint",
             "plugins.random_state": "plugins.runtime.random_state", "plugins.lr_record": "plugins.runtime.lr_record",
             "plugins.timm_models": "plugins.models.timm_models", "plugins.features": "plugins.models.features"}


def _plugins_imports() -> dict[str, set[str]]:
    """file under plugins/<layer>/ -> the plugins.<module> names it imports (absolute and relative)."""
    out = {}
    for layer in LAYERS:
        for path in sorted((ROOT / "plugins" / layer).rglob("*.py")):
            names = set()
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("plugins."):
                    names.add(node.module.split(".")[1])
                elif isinstance(node, ast.ImportFrom) and node.level >= 2:  # from ..x import y
                    names.add((node.module or "").split(".")[0] or layer)
                elif isinstance(node, ast.Import):
                    names |= {a.name.split(".")[1] for a in node.names if a.name.startswith("plugins.")}
            out[f"{layer}:{path.relative_to(ROOT)}"] = names
    return out


def test_the_core_is_layered_and_uses_no_deprecated_path():
    for where, names in _plugins_imports().items():
        layer = where.split(":")[0]
        allowed = set(LAYERS[: LAYERS.index(layer) + 1])
        assert names <= allowed, f"{where} imports plugins.{sorted(names - allowed)}, a layer below it ({LAYERS})"
    for package in ("plugins", *ADAPTERS):
        for path in sorted((ROOT / package).rglob("*.py")):
            if path.parent == ROOT / "plugins" or path == ROOT / "timm_ext" / "features.py":
                continue  # the shims themselves
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and node.level == 0:
                    assert node.module not in (*OLD_PATHS, "plugins.schedules", "plugins.losses"), (path, node.module)


@pytest.mark.parametrize("old", [*OLD_PATHS, "plugins.schedules", "plugins.losses"])
def test_the_first_releases_flat_modules_still_import_and_warn(old):
    sys.modules.pop(old, None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = importlib.import_module(old)
    assert any(issubclass(w.category, DeprecationWarning) and old in str(w.message) for w in caught), caught
    if old in OLD_PATHS:
        assert module is importlib.import_module(OLD_PATHS[old]), "the old path is the new module itself"
    elif old == "plugins.schedules":
        from plugins.recipe.plan import LrSchedule
        from plugins.tricks.lr_schedule import warmup_cosine_factor

        assert module.warmup_cosine_factor is warmup_cosine_factor and module.LrSchedule is LrSchedule
    else:
        from plugins.tricks.distillation import DistillationLoss
        from plugins.tricks.label_smoothing import label_smoothing_cross_entropy

        assert module.DistillationLoss is DistillationLoss
        assert module.label_smoothing_cross_entropy is label_smoothing_cross_entropy
