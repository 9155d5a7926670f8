"""The layout the architecture doc promises: no adapter imports another; the framework-free core imports none."""

import ast
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


LAYERS = ["tricks", "recipe", "runtime", "models", "data", "reproduce"]  # each may import only earlier ones


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


def test_the_core_is_layered():
    for where, names in _plugins_imports().items():
        layer = where.split(":")[0]
        allowed = set(LAYERS[: LAYERS.index(layer) + 1])
        assert names <= allowed, f"{where} imports plugins.{sorted(names - allowed)}, a layer below it ({LAYERS})"


def test_every_core_module_lives_in_a_layer():
    """The first release's flat modules (plugins.schedules, plugins.losses, ...) are gone: plugins/ holds its
    ``__init__`` and the layers, so "where is X?" has one answer."""
    top = sorted(p.name for p in (ROOT / "plugins").iterdir() if p.suffix == ".py" or (p / "__init__.py").is_file())
    assert top == sorted(["__init__.py", *LAYERS]), top
