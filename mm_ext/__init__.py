"""MMEngine adapter: the tricks in MMEngine's root registries, for MMDetection, MMSegmentation and MMPretrain.

Switch it on from any OpenMMLab config with
``custom_imports = dict(imports=['mm_ext'], allow_failed_imports=False)``. Importing this package registers,
in MMEngine's root registries (which the downstream libraries look names up through), never overwriting a name:

- PARAM_SCHEDULERS ``TricksLR`` (warmup + cosine, step or constant) and ``WarmupCosineLR`` (its cosine form)
- OPTIM_WRAPPER_CONSTRUCTORS ``NoBiasDecayOptimWrapperConstructor``
- MODELS ``LabelSmoothingCrossEntropyLoss``, ``KnowledgeDistillationLoss``, ``TimmTransferBackbone``
- HOOKS ``LrRecorderHook`` (the lr of every iteration to ``work_dir/lr_per_step.csv``), ``RandomStateHook``
  (exact resume of the torch random stream), ``NonFiniteLossHook`` (stop at a NaN / infinite loss)

With MMDetection installed it also registers detection mixup with per-box loss weights (:mod:`mm_ext.det_mixup`):
HOOKS ``DetectionMixupHook`` and MODELS ``MixWeightRPNHead``, ``MixWeightStandardRoIHead``,
``MixWeightCascadeRoIHead``.

It also makes ``nms=dict(type='torchvision_nms', ...)`` available to mmcv's ``batched_nms`` (mmcv's NMS on
torchvision's faster CPU kernel, :mod:`mm_ext.ops`), registers the ``tricks_*`` timm models
(``plugins.models.timm_models``) and allows the few MMEngine types that resuming from a Runner checkpoint needs under
``torch.load(weights_only=True)`` (see :mod:`mm_ext.safe_load`).
"""

import importlib.util

from mmengine.registry import HOOKS, MODELS, OPTIM_WRAPPER_CONSTRUCTORS, PARAM_SCHEDULERS, RUNNERS

from plugins.models import timm_models as _timm_models  # noqa: F401  (registers the tricks_* timm models)

from ._registry import register
from .backbones import TimmTransferBackbone
from .hooks import LrRecorderHook, NonFiniteLossError, NonFiniteLossHook, RandomStateHook
from .losses import KnowledgeDistillationLoss, LabelSmoothingCrossEntropyLoss
from .ops import register_torchvision_nms, torchvision_nms
from .optim import NoBiasDecayOptimWrapperConstructor
from .recipe import RecipeRunner
from .safe_load import allow_runner_checkpoint_types
from .schedulers import TricksLR, WarmupCosineLR

__all__ = [
    "KnowledgeDistillationLoss",
    "LabelSmoothingCrossEntropyLoss",
    "LrRecorderHook",
    "NonFiniteLossError",
    "NonFiniteLossHook",
    "NoBiasDecayOptimWrapperConstructor",
    "RandomStateHook",
    "RecipeRunner",
    "TimmTransferBackbone",
    "TricksLR",
    "WarmupCosineLR",
    "torchvision_nms",
]

# Registration happens here, visibly, and nowhere else.
register(PARAM_SCHEDULERS, TricksLR)
register(PARAM_SCHEDULERS, WarmupCosineLR)
register(OPTIM_WRAPPER_CONSTRUCTORS, NoBiasDecayOptimWrapperConstructor)
register(MODELS, LabelSmoothingCrossEntropyLoss)
register(MODELS, KnowledgeDistillationLoss)
register(MODELS, TimmTransferBackbone)
register(HOOKS, LrRecorderHook)
register(HOOKS, RandomStateHook)
register(HOOKS, NonFiniteLossHook)
register(RUNNERS, RecipeRunner)
if importlib.util.find_spec("mmdet") is not None:  # detection mixup binds to mmdet's heads: only with mmdet
    from . import det_mixup

    register(HOOKS, det_mixup.DetectionMixupHook)
    register(MODELS, det_mixup.MixWeightRPNHead)
    register(MODELS, det_mixup.MixWeightStandardRoIHead)
    register(MODELS, det_mixup.MixWeightCascadeRoIHead)
allow_runner_checkpoint_types()
register_torchvision_nms()
