"""``TRICKS.RECIPE``: one ``plugins.recipe.Recipe`` (a preset name or a recipe yaml) laid over a Detectron2 config.

Call :func:`apply_recipe` after ``merge_from_file`` (``d2_ext.train_net`` does, and ``--recipe`` sets the key)::

    cfg = get_cfg(); d2_ext.add_tricks_config(cfg)
    cfg.merge_from_file("my_faster_rcnn.yaml")          # may hold TRICKS.RECIPE: paper
    d2_ext.apply_recipe(cfg, opts)                      # opts: the command line's KEY VALUE list, applied after

The recipe sets the keys it means; the yaml's own values of those keys give way to it, and keys given on the
command line (``opts``) win over it, as explicit flags do on the timm side. What each field becomes:

=====================================  =========================================================================
recipe field                           Detectron2 key
=====================================  =========================================================================
base_lr, base_batch_size               SOLVER.BASE_LR, TRICKS.BASE_BATCH_SIZE (linear scaling to IMS_PER_BATCH)
momentum, nesterov, weight_decay       SOLVER.MOMENTUM, SOLVER.NESTEROV, SOLVER.WEIGHT_DECAY
no_bias_decay, zero_gamma              TRICKS.NO_BIAS_DECAY, TRICKS.ZERO_GAMMA
label_smoothing(_form)                 TRICKS.LABEL_SMOOTHING(_FORM) (the ROI box classifier)
det_mixup_alpha, _stop_fraction,       TRICKS.DET_MIXUP_ALPHA, DET_MIXUP_STOP_FRACTION, DET_MIXUP_FIXED_RATIO
_fixed_ratio                           (detection mixup)
schedule cosine / constant             TRICKS.LR_SCHEDULE warmup_cosine over SOLVER.MAX_ITER (constant: MIN_LR_RATIO 1)
schedule step, step_milestones,        TRICKS.LR_SCHEDULE warmup_step, SOLVER.STEPS (milestone epochs in iterations),
step_gamma                             SOLVER.GAMMA
warmup_epochs, min_lr_ratio            TRICKS.WARMUP_ITERS (epochs of TRICKS.ITERS_PER_EPOCH iterations), MIN_LR_RATIO
=====================================  =========================================================================

Not applied, and said in the log (:func:`plugins.recipe.frameworks.not_applied`, the list MMEngine's adapter
prints too): ``epochs`` and ``batch_size`` (the detector's length and batch are SOLVER.MAX_ITER and
IMS_PER_BATCH), ``variant``/``depth`` (the backbone is TRICKS.TIMM.MODEL_NAME), mixup of whole images and
distillation (classification tricks; ``distill_temperature`` only with a teacher), ``amp`` on a machine without
CUDA (Detectron2's AMP trainer needs it; with CUDA it sets SOLVER.AMP.ENABLED). Every count of iterations comes
from the recipe's ``lr_schedule`` (``plugins.recipe.plan.epochs_to_steps``, the one conversion) over
SOLVER.MAX_ITER.
The resolved recipe is stored in ``TRICKS.RECIPE_RESOLVED`` (so ``config.yaml`` in OUTPUT_DIR records it).
"""

from __future__ import annotations

import logging

import torch

from plugins.recipe import Recipe
from plugins.recipe.frameworks import load_recipe as _load_recipe
from plugins.recipe.frameworks import not_applied

__all__ = ["apply_recipe", "iters_per_epoch", "load_recipe"]

logger = logging.getLogger(__name__)

_WHY = {"amp": "amp (no CUDA: Detectron2's AMP trainer needs it)"}


def load_recipe(spec: str) -> Recipe:
    """:func:`plugins.recipe.frameworks.load_recipe`; ValueError naming TRICKS.RECIPE."""
    return _load_recipe(spec, source=f"cfg.TRICKS.RECIPE={spec!r} is not accepted")


def iters_per_epoch(cfg) -> int:
    """``TRICKS.ITERS_PER_EPOCH``, or the registered training sets' images / ``SOLVER.IMS_PER_BATCH``."""
    if cfg.TRICKS.ITERS_PER_EPOCH > 0:
        return int(cfg.TRICKS.ITERS_PER_EPOCH)
    from detectron2.data import DatasetCatalog

    try:
        images = sum(len(DatasetCatalog.get(name)) for name in cfg.DATASETS.TRAIN)
    except KeyError as err:
        raise ValueError(f"cfg.TRICKS.RECIPE: the recipe's warmup is in epochs and DATASETS.TRAIN "
                         f"{tuple(cfg.DATASETS.TRAIN)} is not registered ({err}); register it first or set "
                         "TRICKS.ITERS_PER_EPOCH") from None
    return max(1, images // cfg.SOLVER.IMS_PER_BATCH)


def apply_recipe(cfg, opts=()) -> Recipe | None:
    """Lay ``cfg.TRICKS.RECIPE`` over ``cfg`` in place, then merge ``opts`` again (they win); returns the recipe
    (None when the key is empty). Raises ValueError naming TRICKS.RECIPE on a bad recipe."""
    spec = cfg.TRICKS.RECIPE
    if not spec:
        return None
    recipe = load_recipe(spec)
    was_frozen = cfg.is_frozen()
    cfg.defrost()
    per_epoch = iters_per_epoch(cfg)
    cfg.SOLVER.BASE_LR = float(recipe.base_lr)
    cfg.TRICKS.BASE_BATCH_SIZE = int(recipe.base_batch_size)
    cfg.SOLVER.MOMENTUM = float(recipe.momentum)
    cfg.SOLVER.NESTEROV = bool(recipe.nesterov)
    cfg.SOLVER.WEIGHT_DECAY = float(recipe.weight_decay)
    cfg.TRICKS.NO_BIAS_DECAY = bool(recipe.no_bias_decay)
    cfg.TRICKS.ZERO_GAMMA = bool(recipe.zero_gamma)
    cfg.TRICKS.LABEL_SMOOTHING = float(recipe.label_smoothing)
    cfg.TRICKS.LABEL_SMOOTHING_FORM = recipe.label_smoothing_form
    cfg.TRICKS.DET_MIXUP_ALPHA = float(recipe.det_mixup_alpha)
    cfg.TRICKS.DET_MIXUP_STOP_FRACTION = float(recipe.det_mixup_stop_fraction)
    cfg.TRICKS.DET_MIXUP_FIXED_RATIO = float(recipe.det_mixup_fixed_ratio)
    try:
        plan = recipe.lr_schedule(per_epoch, total_steps=cfg.SOLVER.MAX_ITER)
    except ValueError as err:
        raise ValueError(f"cfg.TRICKS.RECIPE={spec!r}: at {per_epoch} iterations per epoch over SOLVER.MAX_ITER="
                         f"{cfg.SOLVER.MAX_ITER} iterations its schedule is not valid ({err}); change warmup_epochs / "
                         "step_milestones in the recipe or set TRICKS.ITERS_PER_EPOCH") from None
    cfg.TRICKS.LR_SCHEDULE = "warmup_step" if plan.schedule == "step" else "warmup_cosine"
    cfg.TRICKS.WARMUP_ITERS = plan.warmup_steps
    cfg.TRICKS.MIN_LR_RATIO = 1.0 if plan.schedule == "constant" else plan.min_lr_ratio
    if plan.schedule == "step":
        cfg.SOLVER.STEPS, cfg.SOLVER.GAMMA = plan.milestones, plan.gamma
    skipped = [_WHY.get(f, f) for f in not_applied(recipe, "detectron2", cuda=torch.cuda.is_available())]
    if recipe.amp and torch.cuda.is_available():
        cfg.SOLVER.AMP.ENABLED = True
    if opts:
        cfg.merge_from_list(list(opts))
    cfg.TRICKS.RECIPE_RESOLVED = recipe.to_yaml()
    if was_frozen:
        cfg.freeze()
    logger.info("TRICKS.RECIPE %s (%d iterations per epoch) laid over the config; not applied to Detectron2: %s",
                spec, per_epoch, ", ".join(skipped) or "nothing")
    return recipe
