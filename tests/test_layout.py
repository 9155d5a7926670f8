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
    from plugins.features import TimmFeatures

    assert old.TimmFeatures is TimmFeatures
    assert any(issubclass(w.category, DeprecationWarning) and "plugins.features" in str(w.message) for w in caught)
