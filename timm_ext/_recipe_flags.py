"""``--recipe`` as a source of defaults for timm's own flags (as ``-c args.yaml`` is one).

A recipe (``plugins.recipe.Recipe``: a preset name or a yaml file) maps to the flags of timm's train.py that mean
the same thing, plus the extension's flags where timm has none. Precedence, lowest first: timm's defaults, the
recipe, the ``-c`` yaml, the command line. One parser, one set of defaults; a flag given on the command line (or
in the ``-c`` yaml) wins over the recipe's field and the run prints each such override.

| recipe field | flag(s) |
| --- | --- |
| variant, depth | ``--model tricks_resnet<depth>[n]<variant>`` (``n``: the narrow small-input family, for the built-in data) |
| base_lr, base_batch_size | ``--lr-base``, ``--lr-base-size`` with ``--lr-base-scale linear`` (``--lr`` unset) |
| batch_size (global) | ``-b`` = batch_size / (world size x ``--grad-accum-steps``) |
| epochs, warmup_epochs | ``--epochs``, ``--warmup-epochs`` (fractional: the paper's warmup is in updates) |
| schedule | ``--sched tricks_cosine`` / ``tricks_step`` / ``tricks_constant`` (``timm_ext.scheduler``) |
| step_milestones, step_gamma | ``--decay-milestones``, ``--decay-rate`` |
| min_lr_ratio | ``--min-lr-ratio`` |
| momentum, nesterov | ``--momentum``, ``--opt sgd`` (Nesterov, as timm's ``sgd``) or ``--opt momentum`` |
| weight_decay, no_bias_decay | ``--weight-decay``, ``--no-bias-decay`` / ``--bias-decay`` |
| zero_gamma | ``--zero-gamma`` / ``--no-zero-gamma`` |
| label_smoothing, label_smoothing_form | ``--smoothing``, ``--smoothing-form`` |
| mixup_alpha | ``--mixup`` |
| distill_teacher, distill_temperature | ``--kd-teacher``, ``--kd-temperature`` |
| amp | ``--amp`` (``--amp-dtype bfloat16`` without CUDA) |
"""

from __future__ import annotations

import logging
import os
import re

import torch

from plugins.recipe import Recipe, not_applied

from .cli import UsageError
from .scheduler import TRICKS_SCHEDULES

_logger = logging.getLogger("train")

__all__ = ["FIELD_FLAGS", "RecipeError", "load_recipe", "report_recipe", "resolve_recipe", "recipe_defaults", "recipe_from_args"]

_BUILT_IN = ("fashion_mnist", "fashion_photos")
_TRICKS_NAME = re.compile(r"tricks_resnet(\d+)(n?)([abcd])")

# Recipe field -> the dests that carry it (for the override report and for error messages).
FIELD_FLAGS = {
    "variant": ("model",), "depth": ("model",), "base_lr": ("lr_base", "lr"), "base_batch_size": ("lr_base_size",),
    "batch_size": ("batch_size",), "epochs": ("epochs",), "warmup_epochs": ("warmup_epochs",),
    "schedule": ("sched",), "step_milestones": ("decay_milestones",), "step_gamma": ("decay_rate",),
    "min_lr_ratio": ("min_lr_ratio",), "momentum": ("momentum",), "nesterov": ("opt",),
    "weight_decay": ("weight_decay",), "no_bias_decay": ("no_bias_decay",), "zero_gamma": ("zero_gamma",),
    "label_smoothing": ("smoothing",), "label_smoothing_form": ("smoothing_form",), "mixup_alpha": ("mixup",),
    "distill_teacher": ("kd_teacher",), "distill_temperature": ("kd_temperature",), "amp": ("amp",),
}


class RecipeError(UsageError):
    """A recipe that cannot be read or laid over this command line; the message names the flag."""


def load_recipe(spec: str) -> Recipe:
    try:
        return Recipe.load(spec)
    except ValueError as err:
        raise RecipeError(f"--recipe {spec}: {err}") from None


def world_size() -> int:
    return max(1, int(os.environ.get("WORLD_SIZE", "1") or 1))


def recipe_defaults(recipe: Recipe, spec: str, dataset: str | None, grad_accum_steps: int,
                    batch_given: bool = False) -> dict:
    """The timm flag values (by dest) that ``recipe`` stands for on this machine and process count."""
    ws, accum = world_size(), max(1, int(grad_accum_steps or 1))
    if recipe.batch_size % (ws * accum) and not batch_given:
        raise RecipeError(f"--recipe {spec}: batch_size {recipe.batch_size} is not divisible by world size {ws} x "
                          f"--grad-accum-steps {accum}; pass -b/--batch-size")
    narrow = "n" if dataset in _BUILT_IN else ""
    out = {
        "model": f"tricks_resnet{recipe.depth}{narrow}{recipe.variant}",
        "lr": None, "lr_base": recipe.base_lr, "lr_base_size": recipe.base_batch_size, "lr_base_scale": "linear",
        "batch_size": recipe.batch_size // (ws * accum), "epochs": recipe.epochs,
        "warmup_epochs": recipe.warmup_epochs, "sched": "tricks_" + recipe.schedule,
        "decay_milestones": list(recipe.step_milestones), "decay_rate": recipe.step_gamma,
        "min_lr_ratio": recipe.min_lr_ratio, "momentum": recipe.momentum,
        "opt": "sgd" if recipe.nesterov else "momentum", "weight_decay": recipe.weight_decay,
        "no_bias_decay": recipe.no_bias_decay, "zero_gamma": recipe.zero_gamma,
        "smoothing": recipe.label_smoothing, "smoothing_form": recipe.label_smoothing_form,
        "mixup": recipe.mixup_alpha, "kd_teacher": recipe.distill_teacher,
        "kd_temperature": recipe.distill_temperature, "amp": recipe.amp,
    }
    if recipe.amp and not torch.cuda.is_available():
        out["amp_dtype"] = "bfloat16"  # float16 autocast on a CPU is emulated; bfloat16 is the CPU's low precision
    return out


def recipe_from_args(recipe: Recipe, args) -> tuple[Recipe, list[str]]:
    """The recipe as this run resolved it (explicit flags applied): what ``TricksScheduler`` runs and
    ``recipe.yaml`` records; and the notes to print.

    Fields whose flag holds a value the recipe cannot express (a timm schedule) keep the recipe's value;
    ``args.yaml`` records what ran. A warmup longer than ``--epochs`` is cut to the run and step milestones
    past its end are dropped (each said in a note), as timm's schedulers let a short run end early.
    """
    notes = []
    changes = {"epochs": int(args.epochs), "warmup_epochs": float(args.warmup_epochs),
               "momentum": float(args.momentum), "weight_decay": float(args.weight_decay),
               "label_smoothing": float(args.smoothing or 0.0), "mixup_alpha": float(args.mixup or 0.0),
               "amp": bool(args.amp), "batch_size": int(args.batch_size * world_size() * args.grad_accum_steps),
               "zero_gamma": bool(args.zero_gamma), "no_bias_decay": args.no_bias_decay is not False,
               "distill_teacher": args.kd_teacher, "distill_temperature": float(args.kd_temperature)}
    if args.smoothing_form:
        changes["label_smoothing_form"] = args.smoothing_form
    if args.sched in TRICKS_SCHEDULES:
        changes["schedule"] = TRICKS_SCHEDULES[args.sched]
        changes["step_milestones"] = tuple(args.decay_milestones) if changes["schedule"] == "step" else ()
        changes["step_gamma"] = float(args.decay_rate)
        if args.min_lr_ratio is not None:
            changes["min_lr_ratio"] = float(args.min_lr_ratio)
    if args.opt in ("sgd", "nesterov", "momentum"):
        changes["nesterov"] = args.opt != "momentum" and args.momentum > 0
    if args.lr_base is not None and not args.lr:
        changes.update(base_lr=float(args.lr_base), base_batch_size=int(args.lr_base_size))
    elif args.lr:
        changes.update(base_lr=float(args.lr), base_batch_size=changes["batch_size"])
    match = _TRICKS_NAME.fullmatch(args.model or "")
    if match:
        changes.update(depth=int(match.group(1)), variant=match.group(3))
    epochs = changes["epochs"]
    if changes["warmup_epochs"] > epochs:
        notes.append(f"--warmup-epochs {changes['warmup_epochs']:g} is longer than --epochs {epochs}: the warmup "
                     f"spans the whole run (pass --warmup-epochs to choose)")
        changes["warmup_epochs"] = float(epochs)
        args.warmup_epochs = float(epochs)
    kept = tuple(m for m in changes.get("step_milestones", ()) if 0 < m <= epochs)
    if changes.get("schedule") == "step" and kept != changes["step_milestones"]:
        inside = f"only {', '.join(f'{m:g}' for m in kept)}" if kept else "none"
        notes.append(f"--decay-milestones {' '.join(f'{m:g}' for m in changes['step_milestones'])}: {inside} "
                     f"within --epochs {epochs}, the lr decays only there")
        changes["step_milestones"] = kept
    try:
        return recipe.with_overrides(**changes), notes
    except ValueError as err:
        field = re.search(r"Recipe\.(\w+)", str(err))
        flags = FIELD_FLAGS.get(field.group(1), ()) if field else ()
        where = " / ".join("--" + f.replace("_", "-") for f in flags) or "--recipe"
        raise RecipeError(f"{where} with --recipe {args.recipe}: {err}") from None


def report_recipe(args, given: set[str], recipe: Recipe) -> None:
    """Print each recipe field that a flag on the command line (or in -c) overrides: the documented rule."""
    defaults = recipe_defaults(recipe, args.recipe, args.dataset, args.grad_accum_steps)
    for field, dests in FIELD_FLAGS.items():
        for dest in dests:
            if dest in given and dest in defaults and getattr(args, dest) != defaults[dest]:
                _logger.info(f"--recipe {args.recipe}: --{dest.replace('_', '-')} {getattr(args, dest)} given, "
                             f"overrides the recipe's {field} ({getattr(recipe, field)})")


def resolve_recipe(args, given: set[str]) -> Recipe | None:
    """The recipe this run follows (explicit flags applied, each override and note logged), or None without
    ``--recipe`` and a ``tricks_*`` schedule. Raises :class:`RecipeError` naming the flag."""
    recipe = None
    if args.recipe:
        recipe = load_recipe(args.recipe)
        report_recipe(args, given, recipe)
        left_out = not_applied(recipe, "timm")
        if left_out:
            _logger.info(f"--recipe {args.recipe}: not applied by tricks-train (detectors' fields): "
                         f"{', '.join(left_out)}")
    if recipe is None and args.sched not in TRICKS_SCHEDULES:
        return None
    resolved, notes = recipe_from_args(recipe or Recipe(), args)
    for note in notes:
        _logger.info(note)
    return resolved
