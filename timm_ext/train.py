"""``python -m timm_ext.train`` / ``tricks-train``: timm's train.py command line, with the paper's refinements.

The command line is timm's whole (``timm_ext.cli``: every flag of timm's train.py with timm's defaults, the
positional data dir, ``-c/--config``) plus the extension flags. Two runs sit behind it:

- without ``--recipe``: timm's run (``timm_ext._timm_run``), built on timm's library, with timm's output folder
  and files; the paper's switches that timm lacks (``--no-zero-gamma``, ``--bias-decay``,
  ``--smoothing-form paper``, the built-in datasets) apply to it;
- with ``--recipe`` (a preset or yaml): the recipe engine (``timm_ext._recipe_run``): the lr of every update in
  closed form, the paper's smoothing, mixup and distillation, the built-in data in memory and an exact
  ``--resume last.pth`` (``timm_ext._recipe_state``). Explicit timm flags that mean a recipe field override it;
  the others are refused by name. ``--output`` is the run folder (``OUTPUT/EXPERIMENT`` with ``--experiment``)
  with ``args.yaml``, ``recipe.yaml``, ``summary.csv``, ``lr_per_step.csv``, ``lr_curve.png``, ``last.pth``,
  ``best.pth`` and ``backbone.pth`` (docs/architecture.md).

Model and recipe: ``--model`` is a full timm name. In a recipe run a ``tricks_resnet<depth>[n]<variant>`` name
is explicit and wins: the recipe's ``variant`` and ``depth`` are set from it.

Bad input exits with status 2 and one message naming the flag.
"""

from __future__ import annotations

import os
import sys

from ._args import build_parser
from ._data import DataError
from ._engine import TrainStep
from ._recipe_run import TrainResult, run, train
from ._recipe_state import NonFiniteLossError
from .cli import UsageError

__all__ = ["NonFiniteLossError", "TrainResult", "TrainStep", "build_parser", "main", "run", "train"]


def _recipe_argv(args, given: set[str]) -> list[str]:
    """The command line of a ``--recipe`` run for the recipe engine's parser (``_args``), from the parsed
    timm command line: every given flag (command line or ``-c`` yaml) written with the recipe engine's option,
    timm's positional data dir as ``--data-dir``, ``--output OUTPUT/EXPERIMENT`` when ``--experiment`` is given.

    A given timm flag that the recipe engine does not apply is a :class:`UsageError` naming it.
    """
    import argparse

    legacy = build_parser()
    by_dest: dict[str, list[argparse.Action]] = {}
    for action in legacy._actions:
        by_dest.setdefault(action.dest, []).append(action)
    given = set(given)
    if "data" in given:
        if "data_dir" not in given:
            args.data_dir = args.data
            given.add("data_dir")
        given.discard("data")
    ignored = sorted(given - set(by_dest) - {"experiment", "help"})
    if ignored:
        flags = ", ".join("--" + d.replace("_", "-") for d in ignored)
        raise UsageError(f"{flags}: not applied by --recipe runs (the recipe engine runs the paper's pipeline); "
                         "drop --recipe to run timm's, or use the recipe engine's flags (tricks-train --help, "
                         "'Bag of Tricks extension flags' and the timm flags that set recipe fields)")
    out: list[str] = []
    for dest in sorted(given - {"experiment"}):
        value, actions = getattr(args, dest), by_dest[dest]
        if isinstance(actions[0], argparse._StoreConstAction):  # --zero-gamma / --no-zero-gamma, ...
            out += [a.option_strings[-1] for a in actions if a.const == value][:1]
        elif isinstance(actions[0], argparse.BooleanOptionalAction):  # --amp / --no-amp
            out.append("--" + ("" if value else "no-") + dest.replace("_", "-"))
        elif isinstance(actions[0], argparse._StoreTrueAction):
            out += [actions[0].option_strings[-1]] if value else []
        elif isinstance(value, dict):  # --model-kwargs k=v ...
            out += [actions[0].option_strings[-1], *(f"{k}={v}" for k, v in value.items())]
        elif isinstance(value, list | tuple):
            out += [actions[0].option_strings[-1], *map(str, value)]
        elif value is not None:
            out += [actions[0].option_strings[-1], str(value)]
    if "experiment" in given:  # timm's layout: OUTPUT/EXPERIMENT/ (without it, --output is the run folder)
        out += ["--output", os.path.join(args.output or os.path.join("output", "train"), args.experiment)]
    return out


def main(argv: list[str] | None = None) -> int:
    """Console entry point: 0 on success, 2 with one message on bad input or a non-finite loss.

    Without ``--recipe``: timm's run (``timm_ext._timm_run``). With it: the paper's recipe engine.
    """
    from . import cli

    argv = list(sys.argv[1:] if argv is None else argv)
    args, given, args_text = cli.parse_args(argv)
    try:
        if args.recipe is None:
            from ._timm_run import run as timm_run

            timm_run(args, given, args_text)
            return 0
        recipe_args = build_parser().parse_args(_recipe_argv(args, given))
        train(recipe_args)
    except (UsageError, cli.UsageError, DataError, NonFiniteLossError) as err:
        if args.debug:
            raise
        print(f"tricks-train: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
