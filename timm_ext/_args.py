"""Command line of ``timm_ext.train``: timm's train.py flags where they overlap, the extension flags, and the
translation of both into a validated ``plugins.recipe.Recipe``.

Flags that a recipe field can also set default to None, so that "given on the command line" (wins) can be
told from "not given" (the recipe's value stays).
"""

from __future__ import annotations

import argparse
import math
import os
import re
import time

from timm.utils import ParseKwargs

from plugins.recipe import Recipe

from .cli import UsageError

__all__ = ["UsageError", "build_parser", "resolve_recipe"]

_OPTIMIZERS = ("sgd", "momentum", "nesterov", "adamw")
# timm's names: "multistep" decays at --decay-milestones (the recipe's step schedule); timm's "step" (every
# --decay-epochs) has no recipe form.
_SCHEDULES = {"cosine": "cosine", "multistep": "step", "none": "constant"}
_DATASETS = ("fashion_mnist", "fashion_photos", "imagefolder")
_BUILT_IN = ("fashion_mnist", "fashion_photos")  # offline, in memory; narrow small-input models by default
_TRICKS_NAME = re.compile(r"tricks_resnet(\d+)(n?)([abcd])")
_DEFAULT_RECIPE = "baseline"

# Recipe field -> the flags that set it, to name the right flag in an error message.
_FIELD_FLAGS = {
    "variant": ("model",), "depth": ("model",), "base_lr": ("lr", "lr_base"), "base_batch_size": ("lr_base_size",),
    "batch_size": ("batch_size",), "epochs": ("epochs",), "warmup_epochs": ("warmup_epochs",),
    "schedule": ("sched",), "step_milestones": ("decay_milestones",), "step_gamma": ("decay_rate",),
    "min_lr_ratio": ("min_lr",), "momentum": ("momentum",), "nesterov": ("opt",),
    "weight_decay": ("weight_decay",), "no_bias_decay": ("no_bias_decay",), "zero_gamma": ("zero_gamma",),
    "label_smoothing": ("smoothing",), "label_smoothing_form": ("smoothing_form",), "mixup_alpha": ("mixup",),
    "distill_teacher": ("kd_teacher",), "distill_temperature": ("kd_temperature",), "amp": ("amp",),
}

# Flags whose value can make another field invalid (e.g. --epochs 10 with the recipe's milestones 30, 60, 90).
_RELATED_FLAGS = {"step_milestones": ("epochs",), "warmup_epochs": ("epochs",), "nesterov": ("momentum",),
                  "min_lr_ratio": ("lr", "lr_base", "lr_base_size", "batch_size")}


def _number(kind, low=None, high=None, low_open=False, high_open=False):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {'an integer' if kind is int else 'a number'}, got {text!r}"
            ) from None
        ok = math.isfinite(value)
        ok = ok and (low is None or (value > low if low_open else value >= low))
        ok = ok and (high is None or (value < high if high_open else value <= high))
        if not ok:
            lo = "-inf" if low is None else low
            hi = "inf" if high is None else high
            accepted = f"{'(' if low_open or low is None else '['}{lo}, {hi}{')' if high_open or high is None else ']'}"
            raise argparse.ArgumentTypeError(f"must be in {accepted}, got {text}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    """The ``tricks-train`` argument parser (every flag's help states its default)."""
    p = argparse.ArgumentParser(
        prog="tricks-train",
        description="Train a timm model with the Bag of Tricks refinements (python -m timm_ext.train).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    pos_int, nonneg_int = _number(int, 1), _number(int, 0)
    pos_float, nonneg_float = _number(float, 0, low_open=True), _number(float, 0)
    g = p.add_argument_group("model (timm flags)")
    g.add_argument("--model", default=None, metavar="NAME",
                   help="timm model name; a tricks_resnet<depth>[n]<variant> name sets the recipe's variant and "
                        "depth (None: tricks_resnet<depth>n<variant> for fashion_mnist and fashion_photos, "
                        "tricks_resnet<depth><variant> otherwise, from the recipe)")
    g.add_argument("--num-classes", type=pos_int, default=None, help="classes (None: the dataset's)")
    g.add_argument("--img-size", type=pos_int, default=None, help="input side in pixels (None: 28 for "
                   "fashion_mnist, 32 for fashion_photos, 224 for imagefolder)")
    g.add_argument("--in-chans", type=pos_int, default=None, help="input channels (None: 1 for fashion_mnist, 3 "
                   "for fashion_photos and imagefolder)")
    g.add_argument("--model-kwargs", nargs="*", default={}, action=ParseKwargs, metavar="K=V",
                   help="extra timm.create_model kwargs, as timm's train.py")
    g = p.add_argument_group("optimization (timm flags; None = the recipe's value)")
    g.add_argument("-b", "--batch-size", type=pos_int, default=None,
                   help="images per process per micro-batch; the global batch is this x world size x "
                        "--grad-accum-steps (None: recipe batch_size / (world size x accumulation))")
    g.add_argument("--grad-accum-steps", type=pos_int, default=1, help="micro-batches per update")
    g.add_argument("--epochs", type=pos_int, default=None, help="epochs")
    g.add_argument("--opt", choices=_OPTIMIZERS, default=None,
                   help="sgd and nesterov: SGD with Nesterov momentum (as timm), momentum: plain momentum SGD, "
                        "adamw: AdamW (None: the recipe's nesterov setting)")
    g.add_argument("--momentum", type=_number(float, 0, 1, high_open=True), default=None, help="SGD momentum")
    g.add_argument("--weight-decay", type=nonneg_float, default=None, help="weight decay")
    g.add_argument("--lr", type=pos_float, default=None,
                   help="absolute lr at the global batch: no linear scaling (recorded as base_lr at "
                        "base_batch_size = global batch)")
    g.add_argument("--lr-base", type=pos_float, default=None,
                   help="lr at --lr-base-size, linearly scaled by the global batch")
    g.add_argument("--lr-base-size", type=pos_int, default=None, help="batch at which --lr-base applies")
    g.add_argument("--sched", choices=tuple(_SCHEDULES), default=None,
                   help="per-update lr schedule; none = constant after warmup")
    g.add_argument("--warmup-epochs", type=nonneg_float, default=None, help="linear warmup epochs")
    g.add_argument("--min-lr", type=nonneg_float, default=None, help="final lr of the cosine schedule (absolute)")
    g.add_argument("--decay-milestones", type=pos_int, nargs="+", default=None, metavar="EPOCH",
                   help="step schedule: epochs after which the lr is multiplied by --decay-rate")
    g.add_argument("--decay-rate", type=_number(float, 0, 1, low_open=True), default=None, help="step decay factor")
    g.add_argument("--smoothing", type=_number(float, 0, 1, high_open=True), default=None,
                   help="label smoothing epsilon in [0, 1)")
    g.add_argument("--mixup", type=nonneg_float, default=None, help="mixup alpha (0: off)")
    g.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                   help="mixed precision: bfloat16 autocast on CPU, float16 + GradScaler on CUDA")
    g.add_argument("--channels-last", action="store_true", help="channels-last memory format")
    g.add_argument("--hflip", type=_number(float, 0, 1), default=0.5, help="horizontal flip probability")
    g = p.add_argument_group("extension flags (Bag of Tricks)")
    g.add_argument("--recipe", default=_DEFAULT_RECIPE, metavar="NAME_OR_YAML",
                   help=f"preset ({', '.join(Recipe.available_presets())}) or a recipe yaml file; explicit flags "
                        "override its fields")
    g.add_argument("--zero-gamma", dest="zero_gamma", action="store_const", const=True, default=None,
                   help="zero the last BN gamma of every residual block (None: the recipe's)")
    g.add_argument("--no-zero-gamma", dest="zero_gamma", action="store_const", const=False,
                   help="keep every BN gamma at 1 (timm's zero_init_last is always off here)")
    g.add_argument("--no-bias-decay", dest="no_bias_decay", action="store_const", const=True, default=None,
                   help="weight decay only on conv/linear weights (None: the recipe's)")
    g.add_argument("--bias-decay", dest="no_bias_decay", action="store_const", const=False,
                   help="one param group, decay on every parameter (the paper's baseline)")
    g.add_argument("--smoothing-form", choices=("paper", "uniform"), default=None,
                   help="paper: eps/(K-1) on each other class; uniform: eps/K on all (timm, torch)")
    g.add_argument("--kd-teacher", default=None, metavar="CHECKPOINT",
                   help="distillation teacher: a last.pth/best.pth of this command, or a state_dict file with "
                        "--kd-model")
    g.add_argument("--kd-model", default=None, metavar="NAME",
                   help="timm model name of a --kd-teacher file that does not record it")
    g.add_argument("--kd-temperature", type=pos_float, default=None, help="distillation temperature T")
    g.add_argument("--export-backbone", default=None, metavar="PATH",
                   help="also write backbone.pth (format bag-of-tricks/backbone/v1) to PATH")
    g = p.add_argument_group("data")
    g.add_argument("--dataset", choices=_DATASETS, default=None,
                   help="None: imagefolder when --data-dir is given, else fashion_mnist")
    g.add_argument("--data-dir", default=None, metavar="DIR",
                   help="imagefolder: DIR/train and DIR/val class folders; fashion_mnist, fashion_photos: the "
                        "Fashion-MNIST IDX files' folder")
    g.add_argument("--train-subset", type=nonneg_int, default=0, help="use the first N training images (0: all)")
    g.add_argument("--val-subset", type=nonneg_int, default=0, help="use the first N validation images (0: all)")
    g.add_argument("--workers", type=nonneg_int, default=2, help="DataLoader workers (imagefolder)")
    g = p.add_argument_group("run")
    g.add_argument("--seed", type=int, default=42, help="seed of the model init, data order, flips and mixup")
    g.add_argument("--output", default=None, metavar="DIR",
                   help="output folder (None: output/train/<time>-<model>)")
    g.add_argument("--resume", default=None, metavar="PATH", help="continue exactly from a last.pth")
    g.add_argument("--checkpoint-interval", type=nonneg_int, default=0,
                   help="also write last.pth every N updates (0: only at epoch ends)")
    g.add_argument("--log-interval", type=pos_int, default=50, help="updates between progress updates")
    g.add_argument("--device", default=None, help="cpu, cuda, cuda:1... (None: cuda:LOCAL_RANK if available)")
    g.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
    g.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


def _load_recipe(spec: str) -> Recipe:
    try:
        return Recipe.load(spec)
    except ValueError as err:
        raise UsageError(f"--recipe {spec}: {err}") from None


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _recipe_error(err: ValueError, given: dict[str, object], recipe_spec: str) -> UsageError:
    match = re.search(r"Recipe\.(\w+)", str(err))
    field = match.group(1) if match else ""
    own = _FIELD_FLAGS.get(field, ())
    flags = [f for f in (*own, *_RELATED_FLAGS.get(field, ())) if given.get(f) is not None]
    where = " ".join(f"{_flag(f)} {_show(given[f])}" for f in flags)
    hint = ""
    if not any(f in own for f in flags):
        where = f"--recipe {recipe_spec}" + (f" with {where}" if where else "")
        hint = f" (override with {' or '.join(_flag(f) for f in own)})" if own else ""
    return UsageError(f"{where}: {err}{hint}")


def _show(value: object) -> str:
    return " ".join(map(str, value)) if isinstance(value, list | tuple) else str(value)


def default_model(recipe: Recipe, dataset: str) -> str:
    """The model used when --model is not given: the recipe's depth and variant, narrow for the built-in sets."""
    return f"tricks_resnet{recipe.depth}{'n' if dataset in _BUILT_IN else ''}{recipe.variant}"


def resolve_dataset(args: argparse.Namespace) -> str:
    return args.dataset or ("imagefolder" if args.data_dir else "fashion_mnist")


def resolve_recipe(args: argparse.Namespace, world_size: int = 1) -> tuple[Recipe, argparse.Namespace]:
    """Apply the explicit flags to the ``--recipe`` and fill the None flags from the result.

    Returns the validated recipe and a copy of ``args`` with ``model``, ``batch_size`` (per process),
    ``opt``, ``dataset`` and ``output`` resolved. Raises :class:`UsageError` naming the flag on bad input.
    """
    recipe = _load_recipe(args.recipe)
    given = dict(vars(args))
    changes: dict[str, object] = {}
    if args.model is not None:
        match = _TRICKS_NAME.fullmatch(args.model)
        if match:  # the model name is explicit: it wins over the recipe's variant and depth
            changes.update(depth=int(match.group(1)), variant=match.group(3))
    accumulation = args.grad_accum_steps
    if args.batch_size is not None:
        changes["batch_size"] = args.batch_size * world_size * accumulation
    elif recipe.batch_size % (world_size * accumulation):
        raise UsageError(
            f"--recipe {args.recipe}: batch_size {recipe.batch_size} is not divisible by world size {world_size} x "
            f"--grad-accum-steps {accumulation}; pass -b/--batch-size"
        )
    plain = {"lr_base": "base_lr", "lr_base_size": "base_batch_size", "epochs": "epochs",
             "warmup_epochs": "warmup_epochs", "decay_rate": "step_gamma", "momentum": "momentum",
             "weight_decay": "weight_decay", "smoothing": "label_smoothing", "smoothing_form": "label_smoothing_form",
             "mixup": "mixup_alpha", "amp": "amp", "zero_gamma": "zero_gamma", "no_bias_decay": "no_bias_decay",
             "kd_teacher": "distill_teacher", "kd_temperature": "distill_temperature"}
    changes.update({field: given[flag] for flag, field in plain.items() if given[flag] is not None})
    if args.sched is not None:
        changes["schedule"] = _SCHEDULES[args.sched]
    if args.decay_milestones is not None:
        changes["step_milestones"] = tuple(args.decay_milestones)
    if args.opt in ("sgd", "nesterov", "momentum"):
        changes["nesterov"] = args.opt != "momentum"
    try:
        recipe = recipe.with_overrides(**changes)
        if args.lr is not None:  # absolute lr: recorded as "no scaling" (base batch = global batch)
            recipe = recipe.with_overrides(base_lr=args.lr, base_batch_size=recipe.batch_size)
        if args.min_lr is not None:
            recipe = recipe.with_overrides(min_lr_ratio=args.min_lr / recipe.scaled_lr())
    except ValueError as err:
        raise _recipe_error(err, given, args.recipe) from None
    out = argparse.Namespace(**given)
    out.dataset = resolve_dataset(args)
    out.model = args.model or default_model(recipe, out.dataset)
    out.batch_size = recipe.batch_size // (world_size * accumulation)
    out.opt = args.opt or ("nesterov" if recipe.nesterov else "momentum")
    out.output = args.output or os.path.join("output", "train", f"{time.strftime('%Y%m%d-%H%M%S')}-{out.model}")
    return recipe, out
