"""``python -m timm_ext.train`` / ``tricks-train``: timm's train.py command line, with the paper's refinements.

The command line is timm's whole (``timm_ext.cli``: every flag of timm's train.py with timm's defaults, the
positional data dir, ``-c/--config``) plus the extension flags, and one run sits behind it: timm's loop
(``timm_ext._timm_run``), where the paper's parts that timm lacks are plugged in (the closed-form lr of every
update as ``--sched tricks_*``, the paper's smoothing under mixup, ``--kd-teacher``, zero gamma and bias decay
switches, the built-in datasets, exact resume). ``--recipe`` (a preset or yaml) only sets the defaults of the
flags that mean its fields (``timm_ext._recipe_flags``); explicit flags win and the run prints each override.

Outputs are timm's (``OUTPUT/<experiment or date-model-size>/``: ``args.yaml``, ``summary.csv``,
``last.pth.tar``, ``model_best.pth.tar``, ``checkpoint-*.pth.tar``, ``recovery-*.pth.tar``) plus
``lr_per_step.csv``, ``lr_curve.png``, ``recipe.yaml`` (with a recipe or a ``tricks_*`` schedule) and
``--export-backbone PATH``.

Bad input exits with status 2 and one message naming the flag.
"""

from __future__ import annotations

import sys

from ._timm_loop import NonFiniteLossError
from .cli import UsageError, build_parser

__all__ = ["NonFiniteLossError", "build_parser", "main"]


def main(argv: list[str] | None = None) -> int:
    """Console entry point: 0 on success, 2 with one message on bad input or a non-finite loss."""
    from . import cli
    from ._timm_run import run

    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args, given, args_text = cli.parse_args(argv)
        run(args, given, args_text)
    except (UsageError, NonFiniteLossError) as err:
        if "--debug" in argv:
            raise
        print(f"tricks-train: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
