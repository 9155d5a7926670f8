"""Fail loudly when a trainer does not apply the ``cfg.TRICKS`` keys that are set.

A Detectron2 user keeps their own ``train_net.py`` and ``DefaultTrainer`` subclass, calls
``d2_ext.add_tricks_config(cfg)`` and sets ``TRICKS.LR_SCHEDULE`` / ``NO_BIAS_DECAY`` / ``BASE_BATCH_SIZE``. If
that trainer builds its optimizer and scheduler with Detectron2's own builders, the keys would do nothing,
silently. :func:`check_tricks_applied` compares what the trainer built with what the keys ask for and raises
ValueError naming every key left unapplied and what to call instead.

How the check is installed, and why there: importing ``d2_ext`` (which any code calling ``add_tricks_config``
has done) wraps ``detectron2.engine.TrainerBase.train`` once, so the check runs at the start of every trainer's
``train()``: after the model, optimizer and scheduler exist and after ``resume_or_load``, before the
``EventStorage``, the hooks and the first iteration. Nothing earlier fits every user:

- Detectron2 has no registry or hook list that every trainer runs: each trainer builds its own hooks and may
  override ``build_optimizer`` / ``build_lr_scheduler`` / ``build_hooks``;
- the model may be entirely Detectron2's (a stock ResNet and ``StandardROIHeads``), so no code of d2_ext runs
  when it is built, and a model never sees its optimizer anyway;
- ``add_tricks_config`` runs before the keys are even merged.

The wrapper is a no-op for a trainer without a ``cfg`` holding ``TRICKS`` (``SimpleTrainer``, LazyConfig
trainers), for keys left at their defaults and for keys that would change nothing (``NO_BIAS_DECAY`` with
``SOLVER.WEIGHT_DECAY`` 0, ``BASE_BATCH_SIZE`` equal to ``SOLVER.IMS_PER_BATCH``). It compares results rather
than marking the objects d2_ext builds, so a trainer that applies a key its own way (e.g. its own no-bias-decay
groups) passes. It raises rather than warns: a run without the tricks it asked for is a wrong result, and a
warning is easily lost in Detectron2's log.

Checked: ``NO_BIAS_DECAY`` (no bias or norm parameter is decayed), ``BASE_BATCH_SIZE`` (some group of
conv/linear weights starts at the scaled lr), ``LR_SCHEDULE="warmup_cosine"`` (the scheduler is Detectron2's
``LRMultiplier`` giving ``plugins.tricks.lr_schedule.warmup_cosine_factor`` over ``SOLVER.MAX_ITER``), and, since they are
as silent otherwise, ``LABEL_SMOOTHING`` (every box predictor smooths with that epsilon and form),
``ZERO_GAMMA`` (the backbone is d2_ext's timm one) and ``DET_MIXUP_ALPHA`` (the training loader mixes, the
proposal generator is ``MixWeightRPN`` and the ROI heads weight their losses: a detector without an ROI
classifier, e.g. RetinaNet, is refused by name).
"""

from __future__ import annotations

import functools
import math

from detectron2.config import CfgNode
from detectron2.engine import TrainerBase
from detectron2.modeling.roi_heads import FastRCNNOutputLayers
from detectron2.solver.lr_scheduler import LRMultiplier
from torch import nn

from plugins.tricks.lr_schedule import scale_lr
from plugins.tricks.no_bias_decay import no_bias_decay_param_groups

from .backbone import TimmBackbone
from .config import tricks_lr_schedule
from .det_mixup import DetectionMixupLoader, MixWeightRPN
from .roi_heads import LabelSmoothingFastRCNNOutputLayers

__all__ = ["check_tricks_applied", "install_tricks_check", "tricks_not_applied"]

_SOLVER_KEYS = ("NO_BIAS_DECAY", "BASE_BATCH_SIZE", "LR_SCHEDULE")
_INSTALLED = "_d2_ext_tricks_check"


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-15)


def _decayed_no_decay_params(cfg, model, optimizer) -> str | None:
    if not cfg.TRICKS.NO_BIAS_DECAY or cfg.SOLVER.WEIGHT_DECAY == 0:
        return None  # nothing is decayed at all: the key changes nothing
    decay_of = {
        id(p): group.get("weight_decay", 0.0) for group in optimizer.param_groups for p in group["params"]
    }
    names = {id(p): name for name, p in model.named_parameters()}
    no_decay = no_bias_decay_param_groups(model, cfg.SOLVER.WEIGHT_DECAY)[1]["params"]
    decayed = [p for p in no_decay if decay_of.get(id(p), 0.0) > 0]
    if not decayed:
        return None
    first = decayed[0]
    return (
        f"{len(decayed)} of {len(no_decay)} biases and norm parameters are decayed, e.g. "
        f"{names.get(id(first), '?')!r} at weight_decay {decay_of[id(first)]:g}"
    )


def _unscaled_lr(cfg, model, optimizer, scheduler) -> str | None:
    t, solver = cfg.TRICKS, cfg.SOLVER
    if t.BASE_BATCH_SIZE == 0:
        return None
    expected = scale_lr(solver.BASE_LR, solver.IMS_PER_BATCH, t.BASE_BATCH_SIZE)
    groups = optimizer.param_groups
    base_lrs = getattr(scheduler, "base_lrs", None)
    if base_lrs is None or len(base_lrs) != len(groups):
        base_lrs = [group.get("initial_lr", group["lr"]) for group in groups]
    weights = {id(p) for p in no_bias_decay_param_groups(model, 0.0)[0]["params"]}
    lrs = sorted(
        {lr for lr, group in zip(base_lrs, groups) if any(id(p) in weights for p in group["params"])}
    )
    if not lrs or any(_close(lr, expected) for lr in lrs):
        return None
    return (
        f"no group of conv/linear weights starts at the scaled lr {expected:g} (SOLVER.BASE_LR "
        f"{solver.BASE_LR:g} x SOLVER.IMS_PER_BATCH {solver.IMS_PER_BATCH} / {t.BASE_BATCH_SIZE}); "
        f"their lr: {', '.join(f'{lr:g}' for lr in lrs)}"
    )


def _other_schedule(cfg, scheduler) -> str | None:
    plan = tricks_lr_schedule(cfg)
    if plan is None:
        return None
    t, total = cfg.TRICKS, plan.total_steps
    name = "warmup + cosine" if plan.schedule == "cosine" else "warmup + step"
    found = f"the lr scheduler is {type(scheduler).__name__}"
    if not isinstance(scheduler, LRMultiplier):
        return found + f", not d2_ext's LRMultiplier over {name}"
    found += f" over {type(scheduler._multiplier).__name__}"
    if scheduler._max_iter != total:
        return f"{found} over {scheduler._max_iter} iterations, not SOLVER.MAX_ITER={total}"
    warmup = t.WARMUP_ITERS
    points = {0, warmup - 1, warmup, total // 2, total - 1} | {m for m in plan.milestones} | {m - 1 for m in plan.milestones}
    for k in sorted(points & set(range(total))):
        want, got = plan.factor(k + 1), scheduler._multiplier(k / total)
        if not _close(got, want):
            return (
                f"{found} whose factor at iteration {k} is {got:g}, not {name}'s {want:g} "
                f"(TRICKS.WARMUP_ITERS={warmup}, " + (f"MIN_LR_RATIO={t.MIN_LR_RATIO})" if plan.schedule == "cosine"
                                                      else f"SOLVER.STEPS={plan.milestones}, GAMMA={plan.gamma})")
            )
    return None


_SMOOTHING_HEADS = {"StandardROIHeads": "LabelSmoothingStandardROIHeads",
                    "CascadeROIHeads": "LabelSmoothingCascadeROIHeads"}


def _roi_heads_hint(cfg) -> str:
    ours = _SMOOTHING_HEADS.get(cfg.MODEL.ROI_HEADS.NAME, "LabelSmoothingStandardROIHeads")
    return f"set MODEL.ROI_HEADS.NAME to {ours!r}"


def _no_smoothing(cfg, model) -> str | None:
    t = cfg.TRICKS
    if t.LABEL_SMOOTHING == 0:
        return None
    predictors = [m for m in model.modules() if isinstance(m, FastRCNNOutputLayers)]
    smoothing = [
        m for m in predictors
        if isinstance(m, LabelSmoothingFastRCNNOutputLayers)
        and _close(m.label_smoothing, t.LABEL_SMOOTHING)
        and m.label_smoothing_form == t.LABEL_SMOOTHING_FORM
    ]
    if smoothing and len(smoothing) == len(predictors):
        return None
    which = f"only {len(smoothing)} of {len(predictors)} box predictors smooth" if smoothing else "no box predictor smooths"
    return f"{which} with it (MODEL.ROI_HEADS.NAME={cfg.MODEL.ROI_HEADS.NAME!r}); {_roi_heads_hint(cfg)}"


def _no_det_mixup(cfg, model, data_loader) -> str | None:
    if not cfg.TRICKS.DET_MIXUP_ALPHA:
        return None
    if not any(isinstance(m, FastRCNNOutputLayers) for m in model.modules()):
        return (f"MODEL.META_ARCHITECTURE={cfg.MODEL.META_ARCHITECTURE!r} has no ROI box classifier to weight (a "
                "one-stage or sigmoid head); accepted: a two-stage R-CNN with MODEL.PROPOSAL_GENERATOR.NAME "
                "'MixWeightRPN' and MODEL.ROI_HEADS.NAME 'LabelSmoothingStandardROIHeads' or "
                "'LabelSmoothingCascadeROIHeads'")
    found = []
    if data_loader is not None and not isinstance(data_loader, DetectionMixupLoader):
        found.append(f"the training loader is {type(data_loader).__name__}, which does not mix: return "
                     "d2_ext.build_train_loader(cfg) from the trainer's build_train_loader (d2_ext.Trainer does)")
    if not any(isinstance(m, MixWeightRPN) for m in model.modules()):
        found.append(f"MODEL.PROPOSAL_GENERATOR.NAME={cfg.MODEL.PROPOSAL_GENERATOR.NAME!r} ignores the box weights; "
                     "set it to 'MixWeightRPN'")
    if not all(isinstance(m, LabelSmoothingFastRCNNOutputLayers) for m in model.modules()
               if isinstance(m, FastRCNNOutputLayers)):
        found.append(f"MODEL.ROI_HEADS.NAME={cfg.MODEL.ROI_HEADS.NAME!r} ignores the box weights; "
                     f"{_roi_heads_hint(cfg)}")
    return "; ".join(found) or None


def _no_timm_backbone(cfg, model) -> str | None:
    if not cfg.TRICKS.ZERO_GAMMA or any(isinstance(m, TimmBackbone) for m in model.modules()):
        return None
    return (
        f"the backbone is not d2_ext's timm one (MODEL.BACKBONE.NAME={cfg.MODEL.BACKBONE.NAME!r}); set "
        "MODEL.BACKBONE.NAME to 'build_timm_fpn_backbone' or 'build_timm_backbone'"
    )


def tricks_not_applied(cfg: CfgNode, model: nn.Module, optimizer, scheduler, data_loader=None) -> dict[str, str]:
    """``{key: what was found}`` for every ``cfg.TRICKS`` key that is set but not applied by these objects.

    Args:
        cfg: a config with ``TRICKS`` (``add_tricks_config``), as the trainer was built from.
        model: the trained model (unwrapped from DDP).
        optimizer: the optimizer the trainer steps.
        scheduler: the trainer's lr scheduler (its ``base_lrs`` are the lrs before any schedule factor).
        data_loader: the trainer's training loader (None: not checked).
    """
    found = {
        "RECIPE": ("not laid over the config: call d2_ext.apply_recipe(cfg, opts) after merge_from_file"
                   if cfg.TRICKS.get("RECIPE") and not cfg.TRICKS.get("RECIPE_RESOLVED") else None),
        "NO_BIAS_DECAY": _decayed_no_decay_params(cfg, model, optimizer),
        "BASE_BATCH_SIZE": _unscaled_lr(cfg, model, optimizer, scheduler),
        "LR_SCHEDULE": _other_schedule(cfg, scheduler),
        "LABEL_SMOOTHING": _no_smoothing(cfg, model),
        "ZERO_GAMMA": _no_timm_backbone(cfg, model),
        "DET_MIXUP_ALPHA": _no_det_mixup(cfg, model, data_loader),
    }
    return {key: detail for key, detail in found.items() if detail is not None}


def check_tricks_applied(trainer) -> None:
    """Raise ValueError if ``trainer`` (a ``DefaultTrainer``-like object) leaves set ``cfg.TRICKS`` keys unapplied.

    Reads ``trainer.cfg``, ``trainer.model``, ``trainer.optimizer`` and ``trainer.scheduler``; does nothing for a
    trainer without a ``cfg`` holding ``TRICKS``. The message names each key with its value and what was found,
    and says what the trainer should call.
    """
    cfg = getattr(trainer, "cfg", None)
    if not isinstance(cfg, CfgNode) or "TRICKS" not in cfg:
        return
    model, optimizer = getattr(trainer, "model", None), getattr(trainer, "optimizer", None)
    if model is None or optimizer is None:
        return
    model = getattr(model, "module", model)  # DistributedDataParallel
    inner = getattr(trainer, "_trainer", trainer)  # DefaultTrainer runs a SimpleTrainer holding the loader
    problems = tricks_not_applied(cfg, model, optimizer, getattr(trainer, "scheduler", None),
                                  getattr(inner, "data_loader", None))
    if not problems:
        return
    name = type(trainer).__name__
    listed = "; ".join(f"cfg.TRICKS.{key}={cfg.TRICKS[key]!r}: {detail}" for key, detail in problems.items())
    parts = [f"{name} does not apply cfg.TRICKS keys that are set: {listed}."]
    if any(key in _SOLVER_KEYS for key in problems):
        parts.append(
            f"To apply the solver keys, return d2_ext.build_optimizer(cfg, model) from {name}.build_optimizer and "
            f"d2_ext.build_lr_scheduler(cfg, optimizer) from {name}.build_lr_scheduler (or put "
            "d2_ext.TricksSolverMixin before DefaultTrainer in its bases, or train with d2_ext.Trainer)."
        )
    parts.append("Or set those keys back to their defaults.")
    raise ValueError(" ".join(parts))


def install_tricks_check() -> None:
    """Run :func:`check_tricks_applied` at the start of every ``TrainerBase.train`` (once; idempotent)."""
    train = TrainerBase.train
    if getattr(train, _INSTALLED, False):
        return

    @functools.wraps(train)
    def train_with_tricks_check(self, *args, **kwargs):
        check_tricks_applied(self)
        return train(self, *args, **kwargs)

    setattr(train_with_tricks_check, _INSTALLED, True)
    TrainerBase.train = train_with_tricks_check
