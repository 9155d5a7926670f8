"""Train an MMDetection or MMSegmentation config with the tricks: ``python -m mm_ext.train CONFIG [options]``.

The same job and options as mmdet's and mmseg's ``tools/train.py`` (``--work-dir``, ``--cfg-options``,
``--resume``, ``--amp``, ``--auto-scale-lr``, ``--launcher none|pytorch|slurm|mpi``; the configs' own
``custom_imports`` and ``custom_hooks`` make their script give the same run), plus what a CPU machine and a
typo need: the config's ``default_scope`` is initialised before the Runner is built, a distributed launch
without CUDA uses the gloo backend, a ``--cfg-options`` key that looks like a typo of an existing one is
warned about, and bad input stops with one message and exit status 2 (the traceback only with ``--debug``).
Every run gets ``LrRecorderHook``, ``RandomStateHook`` (a ``--resume`` continues exactly, see
:mod:`mm_ext.hooks`) and ``NonFiniteLossHook`` (a NaN / infinite loss stops with status 2 before that
iteration's checkpoint, keeping the last good one): added to ``custom_hooks`` unless the config lists them
already (the shipped configs do), never twice.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
from collections.abc import Sequence

from mmengine.config import Config, DictAction
from mmengine.registry import RUNNERS, init_default_scope
from mmengine.runner import Runner, find_latest_checkpoint

from plugins.recipe import Recipe
from plugins.runtime.checkpoint import load_checkpoint

from ._train_options import (
    LAUNCHERS,
    InputError,
    apply_amp,
    check_amp_device,
    check_launcher_env,
    check_option,
    init_cpu_process_group,
    launcher_rank,
    prepare_cpu_distributed,
    warn,
)
from .hooks import NonFiniteLossError
from .recipe import apply_recipe

# Errors that mean "the config or the command line is wrong" (or a non-finite loss stopped training):
# reported in one line, exit status 2.
_INPUT_ERRORS = (ValueError, TypeError, KeyError, OSError, ImportError, SyntaxError, NonFiniteLossError)
# Added to every run: the lr log, exact resume of the torch random stream, a stop at a non-finite loss.
_ADDED_HOOKS = ("LrRecorderHook", "RandomStateHook", "NonFiniteLossHook")
__all__ = ["InputError", "build_parser", "load_config", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mm_ext.train", description="Train an mmdet/mmseg config with the mm_ext tricks."
    )
    parser.add_argument(
        "config", help="config file, e.g. mm_ext/configs/fcn_timm-r26nd-d8_tricks_fashion-scenes.py"
    )
    parser.add_argument(
        "--work-dir", help="output folder (default: the config's work_dir, else ./work_dirs/NAME)"
    )
    parser.add_argument(
        "--cfg-options",
        nargs="+",
        action=DictAction,
        default={},
        help="override settings, key=value (e.g. model.backbone.checkpoint=out/backbone.pth "
        "train_cfg.max_iters=20); a new key is added (nested dicts too), with a warning when it looks like a "
        "typo of an existing one",
    )
    parser.add_argument(
        "--resume",
        nargs="?",
        const="auto",
        default=None,
        help="resume from CHECKPOINT, or without a value from the latest checkpoint in the work dir",
    )
    parser.add_argument(
        "--auto-scale-lr",
        action="store_true",
        help="scale the lr by the global batch (the config's auto_scale_lr)",
    )
    parser.add_argument(
        "--amp",
        action="store_true",
        help="mixed precision: optim_wrapper.type='AmpOptimWrapper' (needs CUDA)",
    )
    parser.add_argument(
        "--recipe",
        default=None,
        metavar="NAME_OR_YAML",
        help="lay a plugins.recipe.Recipe (preset or yaml) over the config: optimizer, auto_scale_lr, no bias "
        "decay, warmup + cosine param_scheduler, label smoothing, zero gamma (mm_ext.recipe lists each field); "
        "--cfg-options still win",
    )
    parser.add_argument(
        "--recipe-iters-per-epoch",
        type=int,
        default=None,
        metavar="N",
        help="iterations per epoch for the recipe's warmup epochs (default: the training set's images / batch)",
    )
    parser.add_argument("--launcher", choices=LAUNCHERS, default="none", help="job launcher (default none)")
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    parser.add_argument("--local_rank", "--local-rank", type=int, default=0, help=argparse.SUPPRESS)
    return parser


def load_config(args: argparse.Namespace) -> Config:
    """The config file with the command line applied (see :func:`build_parser`)."""
    if not os.path.isfile(args.config):
        raise InputError(f"config {args.config!r} does not exist")
    cfg = Config.fromfile(args.config)
    for key, value in args.cfg_options.items():
        check_option(cfg, key, value)
    cfg.merge_from_dict(args.cfg_options)
    spec = getattr(args, "recipe", None) or (cfg.get("tricks_recipe") if isinstance(cfg.get("tricks_recipe"), str)
                                             else None)
    if spec:  # over the merged config (its batch, its length), then the options again: they win
        apply_recipe(cfg, spec, getattr(args, "recipe_iters_per_epoch", None) or cfg.get("tricks_recipe_iters_per_epoch"))
        cfg.merge_from_dict(args.cfg_options)
    cfg.launcher = args.launcher
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get("work_dir") is None:
        cfg.work_dir = os.path.join("./work_dirs", os.path.splitext(os.path.basename(args.config))[0])
    cfg.custom_hooks = _with_tricks_hooks(cfg.get("custom_hooks") or [])
    if isinstance(cfg.get("tricks_recipe"), dict) and int(os.environ.get("RANK", "0")) == 0:
        os.makedirs(cfg.work_dir, exist_ok=True)
        Recipe.from_dict(cfg.tricks_recipe).to_yaml(os.path.join(cfg.work_dir, "recipe.yaml"))
    if args.amp:
        apply_amp(cfg)
    if args.auto_scale_lr:
        if "base_batch_size" not in cfg.get("auto_scale_lr", {}):
            raise InputError("--auto-scale-lr needs auto_scale_lr=dict(base_batch_size=...) in the config")
        cfg.auto_scale_lr.enable = True
    if args.resume == "auto":
        cfg.resume, cfg.load_from = True, None
    elif args.resume is not None:
        if not os.path.isfile(args.resume):
            raise InputError(f"--resume checkpoint {args.resume!r} does not exist")
        cfg.resume, cfg.load_from = True, args.resume
    check_amp_device(cfg, args.amp)
    check_launcher_env(args.launcher)
    prepare_cpu_distributed(cfg)
    return cfg


def _hook_type(hook: object) -> object:
    kind = hook.get("type") if isinstance(hook, dict) else type(hook)
    return kind if isinstance(kind, str) else getattr(kind, "__name__", kind)


def _with_tricks_hooks(hooks: list) -> list:
    """``hooks`` with each of :data:`_ADDED_HOOKS` exactly once: the config's own entry (its first) if it has one."""
    kept, seen = [], set()
    for hook in hooks:
        kind = _hook_type(hook)
        if kind in _ADDED_HOOKS:
            if kind in seen:
                warn(f"custom_hooks lists {kind} more than once; the first entry is kept")
                continue
            seen.add(kind)
        kept.append(hook)
    return [*kept, *(dict(type=name) for name in _ADDED_HOOKS if name not in seen)]


def _check_inputs(cfg: Config) -> None:
    """What would otherwise fail late or with a traceback: a non-positive lr, a work dir that cannot be
    written, a resume checkpoint that is truncated or carries code (read once here with ``weights_only``)."""
    lr = cfg.get("optim_wrapper", {}).get("optimizer", {}).get("lr")
    if isinstance(lr, int | float) and not (math.isfinite(lr) and lr > 0):
        raise InputError(f"optim_wrapper.optimizer.lr={lr!r}; accepted: a finite number > 0")
    try:
        os.makedirs(cfg.work_dir, exist_ok=True)
        if launcher_rank(cfg.launcher) == 0:  # the only process that writes there
            tempfile.NamedTemporaryFile(dir=cfg.work_dir, prefix=".write-test-").close()
    except OSError as error:
        raise InputError(
            f"work dir {cfg.work_dir!r}: cannot write there ({error.strerror or error})"
        ) from None
    if cfg.get("resume"):
        path = cfg.get("load_from") or find_latest_checkpoint(cfg.work_dir)
        if path:
            try:
                load_checkpoint(path)
            except ValueError as error:
                raise InputError(f"--resume {path}: {error}") from None


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("LOCAL_RANK", str(args.local_rank))
    try:
        cfg = load_config(args)
        _check_inputs(cfg)
        init_cpu_process_group(cfg)
        if cfg.get("default_scope"):
            init_default_scope(cfg.default_scope)
        runner = RUNNERS.build(cfg) if "runner_type" in cfg else Runner.from_cfg(cfg)
        runner.train()
    except _INPUT_ERRORS as error:
        if args.debug:
            raise
        print(f"mm_ext.train: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
