"""A timm ResNet (the ``tricks_*`` variants or timm's own) as a Detectron2 ``Backbone``.

Registered in ``BACKBONE_REGISTRY`` (contract: ``fn(cfg, input_shape) -> Backbone``):

- ``build_timm_backbone``: the bare ResNet; outputs named like Detectron2's ResNet (timm feature index 0 is
  ``"stem"``, 1..4 are ``"res2"``..``"res5"``), returning those listed in ``MODEL.RESNETS.OUT_FEATURES``.
- ``build_timm_fpn_backbone``: Detectron2's ``FPN`` (with ``LastLevelMaxPool``) over it, configured by
  ``MODEL.FPN.*`` exactly as ``build_resnet_fpn_backbone``, so ``Base-RCNN-FPN.yaml`` works unchanged.

Both read ``cfg.TRICKS.TIMM`` (see ``d2_ext.config``). The weights come from a timm_ext ``backbone.pth``
through ``plugins.models.features.TimmFeatures`` (``plugins.runtime.checkpoint.load_backbone``: any backbone tensor left
unmatched raises); the load report is logged.
"""

from __future__ import annotations

import logging

from detectron2.layers import FrozenBatchNorm2d, ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone
from detectron2.modeling.backbone.fpn import FPN, LastLevelMaxPool

from plugins.models import timm_models as _timm_models  # noqa: F401  registers the tricks_* models in timm
from plugins.models.features import TimmFeatures
from plugins.tricks.resnet import zero_gamma_

from ._registry import register
from .config import validate_tricks_config

__all__ = ["TimmBackbone", "build_timm_backbone", "build_timm_fpn_backbone", "feature_name"]

logger = logging.getLogger(__name__)


def feature_name(index: int) -> str:
    """Detectron2 name of timm feature index ``index``: 0 -> ``"stem"``, k (1..4) -> ``"res{k+1}"``."""
    return "stem" if index == 0 else f"res{index + 1}"


class TimmBackbone(Backbone):
    """Detectron2 ``Backbone`` over a ``TimmFeatures`` extractor.

    Args:
        features: the extractor; its ``out_indices`` give the output names (see :func:`feature_name`),
            its ``out_channels``/``out_strides`` the ``output_shape()``.
        out_features: names to return from ``forward`` (default None: all of ``features.out_indices``).
    """

    def __init__(self, features: TimmFeatures, out_features: list[str] | None = None) -> None:
        super().__init__()
        self.features = features
        self._names = [feature_name(i) for i in features.out_indices]
        out_features = list(self._names if out_features is None else out_features)
        unknown = [name for name in out_features if name not in self._names]
        if not out_features or unknown:
            raise ValueError(
                f"out_features={out_features!r} must name outputs of the timm backbone; available: {self._names} "
                "(set cfg.TRICKS.TIMM.OUT_INDICES or MODEL.RESNETS.OUT_FEATURES)"
            )
        self._out_features = out_features
        self._out_feature_channels = dict(zip(self._names, features.out_channels))
        self._out_feature_strides = dict(zip(self._names, features.out_strides))

    def forward(self, x):
        """Return ``{name: feature map}`` for the names in ``out_features``."""
        outputs = dict(zip(self._names, self.features(x)))
        return {name: outputs[name] for name in self._out_features}

    def output_shape(self):
        return {
            name: ShapeSpec(channels=self._out_feature_channels[name], stride=self._out_feature_strides[name])
            for name in self._out_features
        }


def _build_features(cfg) -> TimmFeatures:
    validate_tricks_config(cfg)
    timm_cfg = cfg.TRICKS.TIMM
    out_features = list(cfg.MODEL.RESNETS.OUT_FEATURES)
    indices = [i for i in timm_cfg.OUT_INDICES if feature_name(i) in out_features]
    missing = [name for name in out_features if name not in {feature_name(i) for i in indices}]
    if missing:
        raise ValueError(
            f"MODEL.RESNETS.OUT_FEATURES={out_features!r} asks for {missing}, which "
            f"cfg.TRICKS.TIMM.OUT_INDICES={tuple(timm_cfg.OUT_INDICES)!r} does not provide "
            "(0 = stem, 1..4 = res2..res5)"
        )
    checkpoint = timm_cfg.CHECKPOINT or None
    features = TimmFeatures(
        timm_cfg.MODEL_NAME,
        checkpoint=checkpoint,
        out_indices=indices,
        output_stride=timm_cfg.OUTPUT_STRIDE,
        frozen_stages=timm_cfg.FREEZE_AT - 1,
        **dict(timm_cfg.KWARGS),
    )
    if features.load_report is not None:
        report = features.load_report
        logger.info("timm backbone %s from %s: %s", timm_cfg.MODEL_NAME, checkpoint, report.summary())
        if report.unexpected:
            logger.warning("%s holds tensors the model lacks (not loaded): %s", checkpoint, report.unexpected)
    if cfg.TRICKS.ZERO_GAMMA:
        if checkpoint is None:
            count = zero_gamma_(features.model)
            logger.info("zero gamma: %d residual blocks start as identity", count)
        else:
            logger.info("TRICKS.ZERO_GAMMA ignored: the weights come from %s", checkpoint)
    if timm_cfg.NORM == "FrozenBN":
        features.model = FrozenBatchNorm2d.convert_frozen_batchnorm(features.model)
    return features


@register(BACKBONE_REGISTRY)
def build_timm_backbone(cfg, input_shape: ShapeSpec) -> Backbone:
    """The timm ResNet of ``cfg.TRICKS.TIMM`` as a ``Backbone`` returning ``MODEL.RESNETS.OUT_FEATURES``.

    ``input_shape.channels`` must match the model's input channels (``TRICKS.TIMM.KWARGS.in_chans``, default 3).
    """
    kwargs_channels = cfg.TRICKS.TIMM.KWARGS.get("in_chans", 3)
    if input_shape.channels != kwargs_channels:
        raise ValueError(
            f"input_shape.channels={input_shape.channels} (len(MODEL.PIXEL_MEAN)) differs from the timm model's "
            f"in_chans={kwargs_channels} (cfg.TRICKS.TIMM.KWARGS.in_chans)"
        )
    return TimmBackbone(_build_features(cfg), list(cfg.MODEL.RESNETS.OUT_FEATURES))


@register(BACKBONE_REGISTRY)
def build_timm_fpn_backbone(cfg, input_shape: ShapeSpec) -> Backbone:
    """FPN over :func:`build_timm_backbone`, from ``MODEL.FPN.{IN_FEATURES,OUT_CHANNELS,NORM,FUSE_TYPE}``."""
    bottom_up = build_timm_backbone(cfg, input_shape)
    fpn = FPN(
        bottom_up=bottom_up,
        in_features=cfg.MODEL.FPN.IN_FEATURES,
        out_channels=cfg.MODEL.FPN.OUT_CHANNELS,
        norm=cfg.MODEL.FPN.NORM,
        top_block=LastLevelMaxPool(),
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
    )
    _check_fpn_levels(cfg, fpn)
    return fpn


def _check_fpn_levels(cfg, fpn: FPN) -> None:
    """ValueError naming ``MODEL.RPN.IN_FEATURES`` / ``MODEL.ROI_HEADS.IN_FEATURES`` when they ask for FPN levels
    this backbone does not output (Detectron2 fails later with a bare KeyError). FPN names a level by its stride
    (``p{log2(stride)}``), so a timm model without the stem max-pool (the ``tricks_resnet*n*`` variants, made for
    28 px inputs) outputs p1..p5 where ``Base-RCNN-FPN.yaml`` expects p2..p6."""
    levels = list(fpn.output_shape())
    wanted = []
    if cfg.MODEL.PROPOSAL_GENERATOR.NAME == "RPN":
        wanted.append("RPN")
    if cfg.MODEL.META_ARCHITECTURE == "GeneralizedRCNN":
        wanted.append("ROI_HEADS")
    for head in wanted:
        missing = [name for name in cfg.MODEL[head].IN_FEATURES if name not in levels]
        if missing:
            strides = [fpn.output_shape()[name].stride for name in levels]
            hint = (
                " (with a tricks_resnet*n* model, set TRICKS.TIMM.KWARGS.small_input False to keep the stem "
                "max-pool and Detectron2's strides 4..64)"
                if strides[0] < 4
                else ""
            )
            raise ValueError(
                f"MODEL.{head}.IN_FEATURES={list(cfg.MODEL[head].IN_FEATURES)!r} asks for {missing}, which the timm "
                f"FPN backbone of TRICKS.TIMM.MODEL_NAME={cfg.TRICKS.TIMM.MODEL_NAME!r} does not output; it outputs "
                f"{levels} at strides {strides}{hint}"
            )
