"""Train an MMDetection or MMSegmentation config with the tricks: ``python -m mm_ext.train CONFIG [options]``.

The same job as mmdet's and mmseg's ``tools/train.py`` (the config's ``custom_imports`` import ``mm_ext``, so
their own script works too), plus what a CPU machine and a typo need: the config's ``default_scope`` is
initialised before the Runner is built, a distributed launch without CUDA uses the gloo backend, every
``--cfg-options`` key must name an existing setting, and bad input stops with one message and exit status 2
(the traceback only with ``--debug``). Every run gets ``LrRecorderHook``, ``RandomStateHook`` (a ``--resume``
continues exactly, see :mod:`mm_ext.hooks`) and ``NonFiniteLossHook`` (a NaN / infinite loss stops with
status 2 before that iteration's checkpoint, keeping the last good one).
"""

from __future__ import annotations

import argparse
import difflib
import inspect
import math
import os
import sys
import tempfile
from collections.abc import Sequence

import torch
import torch.distributed as dist
from mmengine.config import Config, ConfigDict, DictAction
from mmengine.registry import RUNNERS, init_default_scope
from mmengine.runner import Runner, find_latest_checkpoint

from plugins.checkpoint import load_checkpoint

from .hooks import NonFiniteLossError

# Errors that mean "the config or the command line is wrong" (or a non-finite loss stopped training):
# reported in one line, exit status 2.
_INPUT_ERRORS = (ValueError, TypeError, KeyError, OSError, ImportError, SyntaxError, NonFiniteLossError)
# Top-level settings the Runner reads although a config need not hold them (e.g. randomness.seed=0).
_RUNNER_SETTINGS = frozenset(inspect.signature(Runner.__init__).parameters) - {"self"}
# Added to every run: the lr log, exact resume of the torch random stream, a stop at a non-finite loss.
_ADDED_HOOKS = ("LrRecorderHook", "RandomStateHook", "NonFiniteLossHook")


class InputError(ValueError):
    """A bad command-line argument or config setting."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mm_ext.train", description="Train an mmdet/mmseg config with the mm_ext tricks."
    )
    parser.add_argument("config", help="config file, e.g. mm_ext/configs/fcn_timm-r26nd-d8_tricks_fashion-scenes.py")
    parser.add_argument("--work-dir", help="output folder (default: the config's work_dir, else ./work_dirs/NAME)")
    parser.add_argument(
        "--cfg-options",
        nargs="+",
        action=DictAction,
        default={},
        help="override settings, key=value (e.g. model.backbone.checkpoint=out/backbone.pth "
        "train_cfg.max_iters=20); a key must name an existing setting, or a new argument of a component "
        "(a dict with a type)",
    )
    parser.add_argument(
        "--resume",
        nargs="?",
        const="auto",
        default=None,
        help="resume from CHECKPOINT, or without a value from the latest checkpoint in the work dir",
    )
    parser.add_argument(
        "--auto-scale-lr", action="store_true", help="scale the lr by the global batch (the config's auto_scale_lr)"
    )
    parser.add_argument("--launcher", choices=["none", "pytorch"], default="none", help="job launcher (default none)")
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    parser.add_argument("--local_rank", "--local-rank", type=int, default=0, help=argparse.SUPPRESS)
    return parser


def _check_key(cfg: Config, key: str) -> None:
    """Refuse a --cfg-options key that names no setting (a typo would otherwise be added silently).

    A new last part is accepted inside a component's dict (one with a ``type``): it becomes a constructor
    argument, which the component checks itself when it is built. A new top-level setting is accepted if the
    Runner takes it (``randomness.seed=0``, ``work_dir=...``).
    """
    node = cfg.to_dict()
    path: list[str] = []
    parts = key.split(".")
    for depth, part in enumerate(parts):
        if isinstance(node, list | tuple) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, dict) and "type" in node and depth == len(parts) - 1:
            return
        elif depth == 0 and part in _RUNNER_SETTINGS:
            return
        else:
            options = list(node.keys()) if isinstance(node, dict) else []
            close = difflib.get_close_matches(part, [str(o) for o in options], n=3)
            hint = f"; did you mean {', '.join('.'.join([*path, c]) for c in close)}?" if close else ""
            raise InputError(f"--cfg-options key {key!r}: the config has no {'.'.join([*path, part])!r}{hint}")
        path.append(part)


def load_config(args: argparse.Namespace) -> Config:
    """The config file with the command line applied (see :func:`build_parser`)."""
    if not os.path.isfile(args.config):
        raise InputError(f"config {args.config!r} does not exist")
    cfg = Config.fromfile(args.config)
    for key in args.cfg_options:
        _check_key(cfg, key)
    cfg.merge_from_dict(args.cfg_options)
    cfg.launcher = args.launcher
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get("work_dir") is None:
        cfg.work_dir = os.path.join("./work_dirs", os.path.splitext(os.path.basename(args.config))[0])
    hooks = list(cfg.get("custom_hooks", []))
    present = {h.get("type") for h in hooks}
    cfg.custom_hooks = [*hooks, *(dict(type=name) for name in _ADDED_HOOKS if name not in present)]
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
    if not torch.cuda.is_available():
        wrapper = cfg.get("optim_wrapper", {})
        if isinstance(wrapper, dict | ConfigDict) and wrapper.get("type") == "AmpOptimWrapper":
            raise InputError("optim_wrapper.type='AmpOptimWrapper' needs CUDA; use 'OptimWrapper' on the CPU")
        if args.launcher == "pytorch":
            cfg.setdefault("env_cfg", {}).setdefault("dist_cfg", {})["backend"] = "gloo"
            # MMEngine wraps the model in DDP with device_ids=[LOCAL_RANK], which DDP refuses for a CPU model.
            wrapper = cfg.get("model_wrapper_cfg") or dict(
                type="MMDistributedDataParallel", broadcast_buffers=False,
                find_unused_parameters=cfg.get("find_unused_parameters", False))
            wrapper.setdefault("device_ids", None)
            cfg.model_wrapper_cfg = wrapper
    return cfg


def _check_inputs(cfg: Config) -> None:
    """What would otherwise fail late or with a traceback: a non-positive lr, a work dir that cannot be
    written, a resume checkpoint that is truncated or carries code (read once here with ``weights_only``)."""
    lr = cfg.get("optim_wrapper", {}).get("optimizer", {}).get("lr")
    if isinstance(lr, int | float) and not (math.isfinite(lr) and lr > 0):
        raise InputError(f"optim_wrapper.optimizer.lr={lr!r}; accepted: a finite number > 0")
    try:
        os.makedirs(cfg.work_dir, exist_ok=True)
        if int(os.environ.get("RANK", "0")) == 0:  # the only process that writes there
            tempfile.NamedTemporaryFile(dir=cfg.work_dir, prefix=".write-test-").close()
    except OSError as error:
        raise InputError(f"work dir {cfg.work_dir!r}: cannot write there ({error.strerror or error})") from None
    if cfg.get("resume"):
        path = cfg.get("load_from") or find_latest_checkpoint(cfg.work_dir)
        if path:
            try:
                load_checkpoint(path)
            except ValueError as error:
                raise InputError(f"--resume {path}: {error}") from None


def _init_cpu_process_group(cfg: Config) -> None:
    """MMEngine 0.10's pytorch launcher calls ``torch.cuda.set_device``: on the CPU, start the group here."""
    if cfg.launcher == "pytorch" and not torch.cuda.is_available() and not dist.is_initialized():
        dist.init_process_group(backend="gloo")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("LOCAL_RANK", str(args.local_rank))
    try:
        cfg = load_config(args)
        _check_inputs(cfg)
        _init_cpu_process_group(cfg)
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
