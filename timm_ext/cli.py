"""The ``tricks-train`` command line: timm train.py's, whole, plus the extension flags.

Every flag of timm's train.py is here with timm's names, aliases, types and defaults (``_timm_flags``), the
positional data dir and ``-c/--config`` included, so a timm command line is accepted as it is. ``--recipe`` is
one more layer of defaults under ``-c`` and the command line (``timm_ext._recipe_flags``); every run is timm's
loop (``timm_ext._timm_run``).

:func:`parse_args` also returns which flags were given (on the command line or in the ``-c`` yaml), so that a
run can tell "given" from a default, and the text that ``args.yaml`` records.
"""

from __future__ import annotations

import argparse
import difflib

import yaml

from ._timm_flags import add_timm_flags

__all__ = ["UsageError", "build_parser", "parse_args"]


class UsageError(ValueError):
    """Bad command-line input; the message names the flag, the value and what is accepted."""


def _add_extension_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "Bag of Tricks extension flags",
        "The paper's refinements where timm has no flag for them, and --recipe: a source of defaults for timm's "
        "flags (explicit flags win).")
    g.add_argument("--recipe", default=None, metavar="NAME_OR_YAML",
                   help="a preset (baseline, efficient, paper) or recipe yaml whose fields become the defaults of "
                        "the timm flags that mean them (-b, --lr-base, --epochs, --sched tricks_*, --warmup-epochs, "
                        "--smoothing, --mixup, --amp, ...); flags given on the command line or in -c win "
                        "(None: timm's defaults)")
    g.add_argument("--zero-gamma", dest="zero_gamma", action="store_const", const=True, default=None,
                   help="zero the last BN gamma of every residual block (None: the model's default; timm's "
                        "ResNets zero it, the tricks_* models do not)")
    g.add_argument("--no-zero-gamma", dest="zero_gamma", action="store_const", const=False,
                   help="every BN gamma starts at 1 (the paper's baseline)")
    g.add_argument("--no-bias-decay", dest="no_bias_decay", action="store_const", const=True, default=None,
                   help="weight decay on conv/linear weights only (None: timm's default, which is this)")
    g.add_argument("--bias-decay", dest="no_bias_decay", action="store_const", const=False,
                   help="weight decay on every parameter, biases and norms included (the paper's baseline)")
    g.add_argument("--smoothing-form", choices=("uniform", "paper"), default=None,
                   help="uniform: eps/K on every class (timm, torch); paper: 1-eps on the true class and "
                        "eps/(K-1) on each other, under mixup too (None: uniform)")
    g.add_argument("--min-lr-ratio", type=float, default=None, metavar="RATIO",
                   help="--sched tricks_cosine: final lr as a fraction of the peak (None: --min-lr / lr)")
    g.add_argument("--kd-teacher", default=None, metavar="CHECKPOINT",
                   help="the paper's distillation (CE + T^2-scaled soft cross-entropy at --kd-temperature) from "
                        "this teacher checkpoint of tricks-train (model_best.pth.tar, last.pth.tar), loaded "
                        "weights-only; timm's own --kd-model-name keeps timm's meaning")
    g.add_argument("--kd-model", default=None, metavar="NAME",
                   help="timm model name of a --kd-teacher file that does not record it")
    g.add_argument("--export-backbone", default=None, metavar="PATH",
                   help="also write backbone.pth (bag-of-tricks/backbone/v1, for mm_ext and d2_ext) to PATH")
    g.add_argument("--train-subset", type=int, default=0, metavar="N",
                   help="use the first N training images of a built-in dataset (0: all)")
    g.add_argument("--val-subset", type=int, default=0, metavar="N",
                   help="use the first N validation images of a built-in dataset (0: all)")
    g.add_argument("--train-clean-subset", type=int, default=0, metavar="N",
                   help="after each validation also evaluate N training images (evenly spaced, the same in every run) "
                        "with the evaluation transforms: train_clean_loss/top1[/ece] in summary.csv, the train-val "
                        "gap (0: off)")
    g.add_argument("--ece-bins", type=int, default=0, metavar="B",
                   help="expected calibration error over B equal-width confidence bins in every evaluation (15 is "
                        "Guo et al.'s): eval_ece in summary.csv, in percent (0: off)")
    g.add_argument("--no-amp", dest="amp", action="store_false",
                   help="switch a recipe's mixed precision off (timm's --amp switches it on)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g.add_argument("--debug", action="store_true", help="show tracebacks")


def build_parser() -> argparse.ArgumentParser:
    """Every flag of timm's train.py (timm's groups and defaults), then the extension's."""
    p = argparse.ArgumentParser(
        prog="tricks-train",
        description="timm's train.py command line with the Bag of Tricks refinements (python -m timm_ext.train). "
                    "A timm command line runs as timm runs it; --recipe runs the paper's recipe.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_timm_flags(p)
    _add_extension_flags(p)
    return p


def _given_dests(argv: list[str]) -> set[str]:
    """The dests that ``argv`` sets (parsed again with every default suppressed)."""
    p = build_parser()
    for action in p._actions:
        action.default = argparse.SUPPRESS
    ns, _ = p.parse_known_args(argv)
    return set(vars(ns))


def _load_config(path: str, parser: argparse.ArgumentParser) -> dict:
    try:
        with open(path) as f:
            cfg = yaml.safe_load(f) or {}
    except OSError as err:
        raise UsageError(f"-c/--config {path}: {err.strerror or err}") from None
    except yaml.YAMLError as err:
        raise UsageError(f"-c/--config {path}: not valid yaml ({err})") from None
    if not isinstance(cfg, dict):
        raise UsageError(f"-c/--config {path}: expected a mapping of flag names to values, got "
                         f"{type(cfg).__name__}")
    known = {a.dest for a in parser._actions}
    unknown = sorted(set(cfg) - known)
    if unknown:
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(key, known, n=1)
            hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise UsageError(f"-c/--config {path}: unknown key(s) {', '.join(hints)}; keys are the flags' dest names "
                         "as in timm's args.yaml (e.g. batch_size, lr_base)")
    return cfg


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, set[str], str]:
    """Parse as timm's train.py does, with ``--recipe`` as one more layer of defaults.

    Precedence, lowest first: timm's defaults, the recipe's fields (``timm_ext._recipe_flags``), the ``-c`` yaml,
    the command line. Returns ``(args, given, args_text)``: ``given`` holds the dests set on the command line or
    in the yaml, ``args_text`` is the yaml that ``args.yaml`` records (resolved values, ``recipe`` included).
    Bad flags exit with argparse's message (status 2); a recipe that cannot be read raises :class:`UsageError`.
    """
    import sys

    from ._recipe_flags import RecipeError, load_recipe, recipe_defaults

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    config_parser = argparse.ArgumentParser(add_help=False)
    config_parser.add_argument("-c", "--config", default="")
    pre, _ = config_parser.parse_known_args(argv)
    cfg = {}
    if pre.config:
        try:
            cfg = _load_config(pre.config, parser)
        except UsageError as err:
            parser.error(str(err))
    first = parser.parse_args(argv) if not cfg else _parse_with(parser, cfg, argv)  # --help and bad flags here
    given = _given_dests(argv) | set(cfg)
    given.discard("config")
    if first.recipe:
        try:
            recipe = load_recipe(first.recipe)
            parser.set_defaults(**recipe_defaults(recipe, first.recipe, first.dataset, first.grad_accum_steps,
                                                  batch_given="batch_size" in given))
        except RecipeError as err:
            raise UsageError(str(err)) from None
    parser.set_defaults(**cfg)
    args = parser.parse_args(argv)
    args_text = yaml.safe_dump(vars(args), default_flow_style=False)
    return args, given, args_text


def _parse_with(parser: argparse.ArgumentParser, cfg: dict, argv: list[str]) -> argparse.Namespace:
    parser.set_defaults(**cfg)
    return parser.parse_args(argv)
