"""``python -m mm_ext.train CONFIG --recipe paper.yaml``: one ``plugins.recipe.Recipe`` laid over an MMEngine config.

The recipe sets, in MMEngine's own terms (``--cfg-options`` given on the same command line still win):

=====================================  =========================================================================
recipe field                           config key
=====================================  =========================================================================
base_lr, base_batch_size               optim_wrapper.optimizer.lr and auto_scale_lr=dict(enable=True,
                                       base_batch_size=...) (MMEngine's linear scaling by the real batch)
momentum, nesterov, weight_decay       optim_wrapper.optimizer (type SGD)
no_bias_decay                          optim_wrapper.constructor='NoBiasDecayOptimWrapperConstructor' (True) or
                                       MMEngine's default constructor, decay on every parameter (False)
schedule, warmup_epochs,               param_scheduler=[TricksLR] (cosine, step or constant) over the config's
min_lr_ratio, step_milestones,         max_iters or max_epochs; with max_iters, warmup and milestone epochs become
step_gamma                             iterations in the recipe's ``lr_schedule`` (``epochs_to_steps``)
label_smoothing(_form)                 the config's CrossEntropyLoss of the box classifier (mmdet) or decode
                                       heads (mmseg), swapped by type for LabelSmoothingCrossEntropyLoss
zero_gamma                             model.backbone.zero_gamma for a TimmTransferBackbone of a tricks_* model
det_mixup_alpha, _stop_fraction,       custom_hooks gets DetectionMixupHook(alpha, stop_fraction, fixed_ratio) and
_fixed_ratio                           the stock RPNHead / StandardRoIHead / CascadeRoIHead their MixWeight* types
amp                                    AmpOptimWrapper where CUDA is available
=====================================  =========================================================================

Not applied, and printed (:func:`plugins.recipe.frameworks.not_applied`, the list Detectron2's adapter prints
too): ``epochs``, ``batch_size`` (the config's schedule length and dataloader batch decide), ``variant``/``depth``
(``model.backbone.model_name`` decides), mixup and distillation (classification tricks), ``amp`` without CUDA. The resolved recipe is saved as ``recipe.yaml`` in the work dir and as the config's
``tricks_recipe`` key (so the dumped config records it).

The frameworks' own ``tools/train.py``: put ``runner_type = 'RecipeRunner'`` and ``tricks_recipe = 'paper'`` in
the config (:class:`RecipeRunner`); ``mm_ext.train`` applies such a config's ``tricks_recipe`` too.
"""

from __future__ import annotations

import copy
import os

import torch
from mmengine.config import Config, ConfigDict
from mmengine.runner import Runner

from plugins.recipe import Recipe
from plugins.recipe.frameworks import load_recipe as _load_recipe
from plugins.recipe.frameworks import not_applied

__all__ = ["RecipeRunner", "apply_recipe", "load_recipe"]

_CE = ("CrossEntropyLoss", "mmdet.CrossEntropyLoss", "mmseg.CrossEntropyLoss", "LabelSmoothingCrossEntropyLoss")
_WHY = {"amp": "amp (MMEngine's AmpOptimWrapper needs CUDA)"}


def load_recipe(spec: str) -> Recipe:
    """:func:`plugins.recipe.frameworks.load_recipe`; ValueError naming ``--recipe``."""
    return _load_recipe(spec, source=f"--recipe {spec}")


def _smooth(loss: dict, recipe: Recipe) -> bool:
    if not isinstance(loss, dict | ConfigDict) or loss.get("type") not in _CE or loss.get("use_sigmoid"):
        return False
    loss["type"] = "LabelSmoothingCrossEntropyLoss"
    loss["epsilon"], loss["form"] = float(recipe.label_smoothing), recipe.label_smoothing_form
    return True


def _smoothing_targets(cfg: Config) -> list:
    model = cfg.get("model", {})
    targets = []
    roi = model.get("roi_head", {})
    heads = roi.get("bbox_head") if isinstance(roi, dict | ConfigDict) else None
    for head in heads if isinstance(heads, list) else [heads]:
        if isinstance(head, dict | ConfigDict) and "loss_cls" in head:
            targets.append(head["loss_cls"])
    for key in ("decode_head", "auxiliary_head"):
        heads = model.get(key)
        for head in heads if isinstance(heads, list) else [heads]:
            if isinstance(head, dict | ConfigDict) and "loss_decode" in head:
                losses = head["loss_decode"]
                targets.extend(losses if isinstance(losses, list) else [losses])
    return targets


_MIX_WEIGHT_HEADS = {"RPNHead": "MixWeightRPNHead", "StandardRoIHead": "MixWeightStandardRoIHead",
                     "CascadeRoIHead": "MixWeightCascadeRoIHead"}


def _det_mixup(cfg: Config, recipe: Recipe) -> None:
    """Detection mixup by type swaps: the hook, and the stock two-stage heads' MixWeight* types (any other head
    is left for DetectionMixupHook to refuse by name before training)."""
    model = cfg.get("model", {})
    for key in ("rpn_head", "roi_head"):
        head = model.get(key)
        if isinstance(head, dict | ConfigDict):
            kind = str(head.get("type", "")).split(".")[-1]
            head["type"] = _MIX_WEIGHT_HEADS.get(kind, head.get("type"))
    hooks = [h for h in cfg.get("custom_hooks", None) or [] if h.get("type") != "DetectionMixupHook"]
    hook = ConfigDict(type="DetectionMixupHook", alpha=float(recipe.det_mixup_alpha),
                      stop_fraction=float(recipe.det_mixup_stop_fraction))
    if recipe.det_mixup_fixed_ratio:
        hook["fixed_ratio"] = float(recipe.det_mixup_fixed_ratio)
    hooks.append(hook)
    cfg.custom_hooks = hooks


def _iters_per_epoch(cfg: Config, given: int | None) -> int:
    if given:
        return int(given)
    from mmengine.registry import DATASETS, init_default_scope

    if cfg.get("default_scope"):
        init_default_scope(cfg.default_scope)
    loader = cfg.train_dataloader
    world = int(os.environ.get("WORLD_SIZE", "1"))
    try:
        images = len(DATASETS.build(loader.dataset))
    except Exception as err:  # noqa: BLE001 (any dataset error: say what to pass instead)
        raise ValueError(f"--recipe: its warmup is in epochs, and the training set could not be built to count "
                         f"them ({type(err).__name__}: {err}); pass --recipe-iters-per-epoch N") from None
    return max(1, images // (loader.batch_size * world))


def _scheduler_args(schedule: str, warmup, min_lr_ratio: float, milestones: list, gamma: float) -> dict:
    """TricksLR's arguments for a recipe's schedule (only the ones that schedule reads)."""
    args = dict(schedule=schedule, warmup_steps=warmup)
    if schedule == "cosine":
        args["min_lr_ratio"] = min_lr_ratio
    if schedule == "step":
        args.update(milestones=milestones, gamma=float(gamma))
    return args


def apply_recipe(cfg: Config, spec: str, iters_per_epoch: int | None = None, log=print) -> Recipe:
    """Lay the recipe ``spec`` (preset name or yaml) over ``cfg`` in place; returns the recipe."""
    recipe = load_recipe(spec)
    wrapper = cfg.setdefault("optim_wrapper", ConfigDict(type="OptimWrapper"))
    wrapper["optimizer"] = ConfigDict(type="SGD", lr=float(recipe.base_lr), momentum=float(recipe.momentum),
                                      nesterov=bool(recipe.nesterov), weight_decay=float(recipe.weight_decay))
    wrapper.pop("paramwise_cfg", None)
    if recipe.no_bias_decay:
        wrapper["constructor"] = "NoBiasDecayOptimWrapperConstructor"
    else:
        wrapper.pop("constructor", None)
    cfg.auto_scale_lr = ConfigDict(enable=True, base_batch_size=int(recipe.base_batch_size))
    skipped = [_WHY.get(f, f) for f in not_applied(recipe, "mmengine", cuda=torch.cuda.is_available())]
    if recipe.amp and torch.cuda.is_available():
        wrapper["type"] = "AmpOptimWrapper"

    train_cfg = cfg.get("train_cfg", {})
    if "max_iters" in train_cfg:
        iters, per_epoch = int(train_cfg["max_iters"]), _iters_per_epoch(cfg, iters_per_epoch)
        try:
            plan = recipe.lr_schedule(per_epoch, total_steps=iters)
        except ValueError as err:
            raise ValueError(f"--recipe {spec}: at {per_epoch} iterations per epoch over train_cfg.max_iters={iters} "
                             f"its schedule is not valid ({err}); change warmup_epochs / step_milestones or pass "
                             "--recipe-iters-per-epoch") from None
        cfg.param_scheduler = [ConfigDict(type="TricksLR", by_epoch=False, begin=0, end=iters, **_scheduler_args(
            plan.schedule, plan.warmup_steps, plan.min_lr_ratio, list(plan.milestones), plan.gamma))]
    elif "max_epochs" in train_cfg:
        cfg.param_scheduler = [ConfigDict(
            type="TricksLR", by_epoch=True, convert_to_iter_based=True, begin=0, end=int(train_cfg["max_epochs"]),
            **_scheduler_args(recipe.schedule, float(recipe.warmup_epochs), float(recipe.min_lr_ratio),
                              list(recipe.step_milestones) if recipe.schedule == "step" else [], recipe.step_gamma))]
    else:
        raise ValueError(f"--recipe {spec}: the config's train_cfg has neither max_iters nor max_epochs")

    smoothed = [_smooth(loss, recipe) for loss in _smoothing_targets(cfg)] if recipe.label_smoothing else []
    if recipe.label_smoothing and not any(smoothed):
        skipped.append("label_smoothing (no softmax CrossEntropyLoss in the box or decode heads)")
    backbone = cfg.get("model", {}).get("backbone", {})
    if recipe.zero_gamma and backbone.get("type") in ("TimmTransferBackbone", "mm_ext.TimmTransferBackbone"):
        if str(backbone.get("model_name", "")).startswith("tricks_"):
            backbone["zero_gamma"] = True
    if recipe.det_mixup_alpha:
        _det_mixup(cfg, recipe)
    cfg.tricks_recipe = recipe.to_dict()
    log(f"mm_ext.train: --recipe {spec} laid over the config; not applied to MMEngine: "
        f"{', '.join(skipped) or 'nothing'}")
    return recipe


class RecipeRunner(Runner):
    """The recipe for the frameworks' own ``tools/train.py``: a config with ``runner_type='RecipeRunner'`` and
    ``tricks_recipe='paper'`` (a preset name or a recipe yaml path; ``tricks_recipe_iters_per_epoch`` optional)
    has the recipe laid over it when the runner is built (``RUNNERS.build(cfg)`` calls :meth:`from_cfg`).

    The tools merge ``--cfg-options`` into the config before the runner exists, so on that route the recipe wins
    over an option that sets one of its keys; ``python -m mm_ext.train`` lays the recipe first and the options
    after it. A ``tricks_recipe`` that is already resolved (a dict, as ``mm_ext.train`` leaves it) is kept.
    """

    @classmethod
    def from_cfg(cls, cfg) -> Runner:
        cfg = copy.deepcopy(cfg)
        spec = cfg.get("tricks_recipe")
        if isinstance(spec, str) and spec:
            apply_recipe(cfg, spec, cfg.get("tricks_recipe_iters_per_epoch"))
        elif not spec:
            raise ValueError("runner_type='RecipeRunner' needs tricks_recipe='<preset or recipe yaml>' in the config")
        runner = super().from_cfg(cfg)
        if runner.rank == 0:
            os.makedirs(runner.work_dir, exist_ok=True)
            Recipe.from_dict(dict(cfg.tricks_recipe)).to_yaml(os.path.join(runner.work_dir, "recipe.yaml"))
        return runner
