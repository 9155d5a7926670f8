#!/usr/bin/env python3
"""Extract the command line of a timm ``train.py`` (names, aliases, types, choices, defaults) as JSON.

timm's train.py is not in its wheel or sdist; read it from the timm repository at the version to match and run

    python scripts/timm_train_flags.py path/to/train.py --version 1.0.29.dev0 > tests/timm_ext/data/timm_train_flags.json

The source is parsed (``ast``), never imported or executed. ``tests/timm_ext/test_timm_cli.py`` compares
``tricks-train``'s parser with the stored table: every flag present, with the same aliases, type, choices,
nargs and default.
"""

from __future__ import annotations

import argparse
import ast
import json
import sys


def _value(node: ast.AST):
    """A literal default (numbers, strings, lists, simple arithmetic such as ``3. / 4.``), or its source."""
    try:
        return ast.literal_eval(node)
    except ValueError:
        pass
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div | ast.Mult | ast.Add | ast.Sub):
        a, b = _value(node.left), _value(node.right)
        if isinstance(a, int | float) and isinstance(b, int | float):
            return {ast.Div: a / b, ast.Mult: a * b, ast.Add: a + b, ast.Sub: a - b}[type(node.op)]
    if isinstance(node, ast.List):
        return [_value(e) for e in node.elts]
    return {"source": ast.unparse(node)}


def extract(source: str) -> list[dict]:
    flags = []
    for node in ast.walk(ast.parse(source)):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr == "add_argument"):
            continue
        names = [a.value for a in node.args if isinstance(a, ast.Constant)]
        kw = {k.arg: k.value for k in node.keywords}
        entry = {"names": names}
        for key in ("default", "nargs", "choices", "const"):
            if key in kw:
                entry[key] = _value(kw[key])
        if "type" in kw:
            entry["type"] = ast.unparse(kw["type"])
        if "action" in kw:
            action = kw["action"]
            entry["action"] = action.value if isinstance(action, ast.Constant) else ast.unparse(action)
        if "dest" in kw:
            entry["dest"] = _value(kw["dest"])
        flags.append(entry)
    return sorted(flags, key=lambda f: f["names"][-1].lstrip("-"))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("train_py", help="timm's train.py")
    p.add_argument("--version", required=True, help="the timm version this train.py belongs to")
    a = p.parse_args(argv)
    with open(a.train_py) as f:
        flags = extract(f.read())
    json.dump({"timm_version": a.version, "flags": flags}, sys.stdout, indent=1)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
