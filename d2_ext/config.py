"""The ``cfg.TRICKS`` namespace: every key of this add-on, with defaults that change nothing.

``add_tricks_config(cfg)`` adds the keys (call it before ``cfg.merge_from_file``); unknown keys under
``TRICKS`` still fail on merge, as Detectron2's yacs config always does. ``validate_tricks_config(cfg)``
checks the merged values and raises ValueError naming the key, its value and what is accepted; the
Trainer, the registered builders and ``train_net`` call it. The formulas behind the keys live in
``plugins`` (schedules, param_groups, losses, resnet); this module only names them.
"""

from __future__ import annotations

import math

from detectron2.config import CfgNode as CN

from plugins.recipe.plan import LrSchedule

__all__ = ["LR_SCHEDULES", "NORMS", "SMOOTHING_FORMS", "add_tricks_config", "tricks_lr_schedule",
           "validate_tricks_config"]

LR_SCHEDULES = ("", "warmup_cosine", "warmup_step")
NORMS = ("FrozenBN", "BN")
SMOOTHING_FORMS = ("paper", "uniform")
OUTPUT_STRIDES = (8, 16, 32)


def add_tricks_config(cfg: CN) -> None:
    """Add ``cfg.TRICKS`` in place. Defaults (each one leaves Detectron2's behaviour unchanged):

    - ``RECIPE = ""``: a ``plugins.recipe.Recipe`` preset name or yaml path that ``d2_ext.apply_recipe`` lays
      over the config (``d2_ext.recipe`` says what each field sets); ``RECIPE_RESOLVED`` then holds the resolved
      recipe (yaml) and ``ITERS_PER_EPOCH = 0`` (0: the registered training set's images / IMS_PER_BATCH) turns
      its warmup epochs into iterations.

    - ``LR_SCHEDULE = ""``: Detectron2's own ``SOLVER.LR_SCHEDULER_NAME``; ``"warmup_cosine"`` is
      ``plugins.tricks.lr_schedule.warmup_cosine_factor`` over ``SOLVER.MAX_ITER`` iterations, with
      ``WARMUP_ITERS = 0`` linear-warmup iterations and the final lr ``MIN_LR_RATIO = 0.0`` x peak;
      ``"warmup_step"`` is ``plugins.tricks.lr_schedule.warmup_step_factor``: the same warmup, then x ``SOLVER.GAMMA`` at
      each of ``SOLVER.STEPS`` (Detectron2's own keys; unlike its WarmupMultiStepLR, update ``i`` of the warmup
      runs at ``i / WARMUP_ITERS``, the paper's form).
    - ``BASE_BATCH_SIZE = 0``: off; else ``SOLVER.BASE_LR`` is the lr at this batch, scaled linearly to the
      global ``SOLVER.IMS_PER_BATCH`` (``plugins.tricks.lr_schedule.scale_lr``).
    - ``NO_BIAS_DECAY = False``: on, biases and normalization parameters get no weight decay
      (``plugins.tricks.no_bias_decay.no_bias_decay_param_groups``).
    - ``ZERO_GAMMA = False``: on, the timm backbone's last BN gamma of every residual block starts at 0
      (``plugins.tricks.resnet.zero_gamma_``); ignored when ``TIMM.CHECKPOINT`` provides the weights.
    - ``LABEL_SMOOTHING = 0.0`` and ``LABEL_SMOOTHING_FORM = "paper"`` (or ``"uniform"``): epsilon and form
      of ``plugins.tricks.label_smoothing.label_smoothing_cross_entropy`` in ``LabelSmoothingStandardROIHeads``.
    - ``DET_MIXUP_ALPHA = 0.0``: off; > 0, detection mixup (``plugins.tricks.detection_mixup``): training batches
      mixed in pairs with ``r ~ Beta(alpha, alpha)`` (the paper: 1.5) and per-box loss weights, by
      ``d2_ext.build_train_loader``, ``MixWeightRPN`` and the label-smoothing ROI heads (``d2_ext.det_mixup``);
      ``DET_MIXUP_STOP_FRACTION = 1.0`` mixes iterations ``< fraction x SOLVER.MAX_ITER`` (1.0: all of them);
      ``DET_MIXUP_FIXED_RATIO = 0.0`` draws the ratios, a value in (0, 1) blends every pair with it instead
      (0.5: the anchors' fixed blend).
    - ``TIMM``: the timm backbone of ``build_timm_backbone`` / ``build_timm_fpn_backbone``:
      ``MODEL_NAME = "tricks_resnet50d"`` (a ``tricks_*`` name or any timm ResNet; note that timm's own
      ResNets zero-init the last gammas unless ``KWARGS.zero_init_last: False``), ``CHECKPOINT = ""`` (a timm_ext
      ``backbone.pth``; empty = random init), ``OUT_INDICES = (1, 2, 3, 4)`` (timm feature indices, named
      stem, res2..res5), ``FREEZE_AT = 2`` (Detectron2's meaning: 0 nothing, 1 stem, k stem + res2..res_k),
      ``NORM = "FrozenBN"`` (or ``"BN"``), ``OUTPUT_STRIDE = 32`` (16 or 8 dilate the last stages) and
      ``KWARGS`` (extra ``timm.create_model`` arguments, set from yaml, e.g. ``drop_path_rate: 0.1``).
    """
    if "TRICKS" in cfg:
        return
    cfg.TRICKS = CN()
    cfg.TRICKS.RECIPE = ""
    cfg.TRICKS.RECIPE_RESOLVED = ""
    cfg.TRICKS.ITERS_PER_EPOCH = 0
    cfg.TRICKS.LR_SCHEDULE = ""
    cfg.TRICKS.WARMUP_ITERS = 0
    cfg.TRICKS.MIN_LR_RATIO = 0.0
    cfg.TRICKS.BASE_BATCH_SIZE = 0
    cfg.TRICKS.NO_BIAS_DECAY = False
    cfg.TRICKS.ZERO_GAMMA = False
    cfg.TRICKS.LABEL_SMOOTHING = 0.0
    cfg.TRICKS.LABEL_SMOOTHING_FORM = "paper"
    cfg.TRICKS.DET_MIXUP_ALPHA = 0.0
    cfg.TRICKS.DET_MIXUP_STOP_FRACTION = 1.0
    cfg.TRICKS.DET_MIXUP_FIXED_RATIO = 0.0
    cfg.TRICKS.TIMM = CN()
    cfg.TRICKS.TIMM.MODEL_NAME = "tricks_resnet50d"
    cfg.TRICKS.TIMM.CHECKPOINT = ""
    cfg.TRICKS.TIMM.OUT_INDICES = (1, 2, 3, 4)
    cfg.TRICKS.TIMM.FREEZE_AT = 2
    cfg.TRICKS.TIMM.NORM = "FrozenBN"
    cfg.TRICKS.TIMM.OUTPUT_STRIDE = 32
    cfg.TRICKS.TIMM.KWARGS = CN(new_allowed=True)


def tricks_lr_schedule(cfg: CN) -> LrSchedule | None:
    """The ``plugins.recipe.plan.LrSchedule`` that ``TRICKS.LR_SCHEDULE`` names (None for Detectron2's own)."""
    t, solver = cfg.TRICKS, cfg.SOLVER
    if t.LR_SCHEDULE == "warmup_cosine":
        return LrSchedule("cosine", solver.MAX_ITER, t.WARMUP_ITERS, min_lr_ratio=t.MIN_LR_RATIO)
    if t.LR_SCHEDULE == "warmup_step":
        return LrSchedule("step", solver.MAX_ITER, t.WARMUP_ITERS, milestones=tuple(solver.STEPS), gamma=solver.GAMMA)
    return None


def _fail(key: str, value, accepted: str) -> None:
    raise ValueError(f"cfg.TRICKS.{key}={value!r} is not accepted; accepted: {accepted}")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def validate_tricks_config(cfg: CN) -> None:
    """Raise ValueError naming the first ``cfg.TRICKS`` key whose value is out of range or inconsistent.

    Also raises if ``add_tricks_config`` was never called on ``cfg``.
    """
    if "TRICKS" not in cfg:
        raise ValueError("cfg has no TRICKS keys; call d2_ext.add_tricks_config(cfg) before merging a config")
    t = cfg.TRICKS
    if not isinstance(t.RECIPE, str):
        _fail("RECIPE", t.RECIPE, "a recipe preset name or a recipe yaml path ('' = none)")
    if not _is_int(t.ITERS_PER_EPOCH) or t.ITERS_PER_EPOCH < 0:
        _fail("ITERS_PER_EPOCH", t.ITERS_PER_EPOCH, "an int >= 0 (0 = from the registered training set)")
    if t.LR_SCHEDULE not in LR_SCHEDULES:
        _fail("LR_SCHEDULE", t.LR_SCHEDULE, "'' (Detectron2's own schedule), 'warmup_cosine' or 'warmup_step'")
    if not _is_int(t.WARMUP_ITERS) or t.WARMUP_ITERS < 0:
        _fail("WARMUP_ITERS", t.WARMUP_ITERS, "an int >= 0")
    if t.LR_SCHEDULE and t.WARMUP_ITERS > cfg.SOLVER.MAX_ITER:
        _fail("WARMUP_ITERS", t.WARMUP_ITERS, f"at most SOLVER.MAX_ITER={cfg.SOLVER.MAX_ITER}")
    if not _is_number(t.MIN_LR_RATIO) or not 0.0 <= t.MIN_LR_RATIO <= 1.0:
        _fail("MIN_LR_RATIO", t.MIN_LR_RATIO, "a number in [0, 1]")
    if t.LR_SCHEDULE == "warmup_step":
        try:
            tricks_lr_schedule(cfg)
        except ValueError:
            raise ValueError(f"cfg.SOLVER.STEPS={tuple(cfg.SOLVER.STEPS)!r} is not accepted with TRICKS.LR_SCHEDULE="
                             f"'warmup_step'; accepted: strictly increasing iterations in [1, SOLVER.MAX_ITER="
                             f"{cfg.SOLVER.MAX_ITER}]") from None
    if not _is_int(t.BASE_BATCH_SIZE) or t.BASE_BATCH_SIZE < 0:
        _fail("BASE_BATCH_SIZE", t.BASE_BATCH_SIZE, "an int >= 0 (0 = no linear scaling)")
    if t.BASE_BATCH_SIZE > 0 and cfg.SOLVER.get("REFERENCE_WORLD_SIZE", 0):
        # Detectron2 would scale IMS_PER_BATCH and BASE_LR by the world size first: the lr would scale twice.
        _fail("BASE_BATCH_SIZE", t.BASE_BATCH_SIZE, "0 when SOLVER.REFERENCE_WORLD_SIZE is set (one scaling rule)")
    for key in ("NO_BIAS_DECAY", "ZERO_GAMMA"):
        if not isinstance(t[key], bool):
            _fail(key, t[key], "True or False")
    if t.NO_BIAS_DECAY and cfg.SOLVER.BIAS_LR_FACTOR != 1.0:
        _fail("NO_BIAS_DECAY", t.NO_BIAS_DECAY, "False when SOLVER.BIAS_LR_FACTOR != 1.0 (its groups ignore it)")
    if not _is_number(t.LABEL_SMOOTHING) or not 0.0 <= t.LABEL_SMOOTHING < 1.0:
        _fail("LABEL_SMOOTHING", t.LABEL_SMOOTHING, "a number in [0, 1)")
    if t.LABEL_SMOOTHING_FORM not in SMOOTHING_FORMS:
        _fail("LABEL_SMOOTHING_FORM", t.LABEL_SMOOTHING_FORM, "'paper' (eps / (K - 1)) or 'uniform' (eps / K)")
    alpha = t.get("DET_MIXUP_ALPHA", 0.0)
    if not _is_number(alpha) or not math.isfinite(alpha) or alpha < 0:
        _fail("DET_MIXUP_ALPHA", alpha, "a finite number > 0 (the paper: 1.5), or 0 for no detection mixup")
    stop = t.get("DET_MIXUP_STOP_FRACTION", 1.0)
    if not _is_number(stop) or not 0.0 < stop <= 1.0:
        _fail("DET_MIXUP_STOP_FRACTION", stop, "a number in (0, 1] (the fraction of SOLVER.MAX_ITER that mixes)")
    fixed = t.get("DET_MIXUP_FIXED_RATIO", 0.0)
    if not _is_number(fixed) or not 0.0 <= fixed < 1.0:
        _fail("DET_MIXUP_FIXED_RATIO", fixed, "0 (ratios drawn from Beta(alpha, alpha)) or a number in (0, 1)")
    _validate_timm(t.TIMM)


def _validate_timm(timm_cfg: CN) -> None:
    if not isinstance(timm_cfg.MODEL_NAME, str) or not timm_cfg.MODEL_NAME:
        _fail("TIMM.MODEL_NAME", timm_cfg.MODEL_NAME, "a timm ResNet name, e.g. 'tricks_resnet50d' or 'resnet50d'")
    indices = tuple(timm_cfg.OUT_INDICES)
    if not indices or not all(_is_int(i) and 0 <= i <= 4 for i in indices) or list(indices) != sorted(set(indices)):
        _fail("TIMM.OUT_INDICES", timm_cfg.OUT_INDICES, "strictly increasing ints in 0..4 (0 = stem, k = res(k+1))")
    if not _is_int(timm_cfg.FREEZE_AT) or not 0 <= timm_cfg.FREEZE_AT <= 5:
        _fail("TIMM.FREEZE_AT", timm_cfg.FREEZE_AT, "an int in 0..5 (0 nothing, 1 stem, k stem + res2..res_k)")
    if timm_cfg.NORM not in NORMS:
        _fail("TIMM.NORM", timm_cfg.NORM, "'FrozenBN' or 'BN'")
    if timm_cfg.OUTPUT_STRIDE not in OUTPUT_STRIDES:
        _fail("TIMM.OUTPUT_STRIDE", timm_cfg.OUTPUT_STRIDE, "8, 16 or 32")
