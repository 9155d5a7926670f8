"""Label smoothing for the Fast R-CNN box classifier.

``LabelSmoothingStandardROIHeads`` (registered in ``ROI_HEADS_REGISTRY``; contract: ``cls(cfg, input_shape)``
returns an ``ROIHeads``) is Detectron2's ``StandardROIHeads`` with its box predictor replaced by
:class:`LabelSmoothingFastRCNNOutputLayers`, whose classification loss is
``plugins.tricks.label_smoothing.label_smoothing_cross_entropy`` over the K + 1 classes (background = index K) with
``cfg.TRICKS.LABEL_SMOOTHING`` and ``cfg.TRICKS.LABEL_SMOOTHING_FORM``. The box regression loss, the
inference and the parameter names are Detectron2's own, so checkpoints stay interchangeable; with smoothing 0
the losses are exactly ``StandardROIHeads``'.
"""

from __future__ import annotations

import torch
from detectron2.config import configurable
from detectron2.layers import cat
from detectron2.modeling import ROI_HEADS_REGISTRY
from detectron2.modeling.roi_heads import FastRCNNOutputLayers, StandardROIHeads

from plugins.tricks.label_smoothing import label_smoothing_cross_entropy

from ._registry import register
from .config import SMOOTHING_FORMS, validate_tricks_config

__all__ = ["LabelSmoothingFastRCNNOutputLayers", "LabelSmoothingStandardROIHeads"]


class LabelSmoothingFastRCNNOutputLayers(FastRCNNOutputLayers):
    """``FastRCNNOutputLayers`` whose ``loss_cls`` is the label-smoothed cross entropy.

    Args:
        input_shape, **kwargs: as ``FastRCNNOutputLayers``.
        label_smoothing: epsilon in [0, 1) (default 0.0: Detectron2's own loss, untouched).
        label_smoothing_form: ``"paper"`` (default; ``eps / K`` on each of the K other classes of K + 1) or
            ``"uniform"`` (``eps / (K + 1)`` on every class); formulas in ``plugins.tricks.label_smoothing``.
    """

    @configurable
    def __init__(self, input_shape, *, label_smoothing: float = 0.0, label_smoothing_form: str = "paper", **kwargs):
        super().__init__(input_shape, **kwargs)
        is_number = isinstance(label_smoothing, int | float) and not isinstance(label_smoothing, bool)
        if not is_number or not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing={label_smoothing!r} is not accepted; accepted: a number in [0, 1)")
        if label_smoothing_form not in SMOOTHING_FORMS:
            raise ValueError(
                f"label_smoothing_form={label_smoothing_form!r} is not accepted; accepted: {SMOOTHING_FORMS}"
            )
        if label_smoothing > 0 and getattr(self, "use_sigmoid_ce", False):
            # Detectron2 main's sigmoid (federated) classification has no softmax target to smooth.
            raise ValueError("label_smoothing > 0 needs softmax cross entropy; MODEL.ROI_BOX_HEAD.USE_SIGMOID_CE is on")
        self.label_smoothing = float(label_smoothing)
        self.label_smoothing_form = label_smoothing_form

    @classmethod
    def from_config(cls, cfg, input_shape):
        validate_tricks_config(cfg)
        ret = super().from_config(cfg, input_shape)
        ret["label_smoothing"] = cfg.TRICKS.LABEL_SMOOTHING
        ret["label_smoothing_form"] = cfg.TRICKS.LABEL_SMOOTHING_FORM
        return ret

    def losses(self, predictions, proposals):
        """Detectron2's losses, with ``loss_cls`` replaced by the smoothed one when epsilon > 0."""
        losses = super().losses(predictions, proposals)
        if self.label_smoothing == 0 or not proposals:
            return losses
        gt_classes = cat([p.gt_classes for p in proposals], dim=0)
        if gt_classes.numel() == 0:  # no sampled proposal: keep Detectron2's zero loss
            return losses
        loss_cls = label_smoothing_cross_entropy(
            predictions[0], gt_classes, epsilon=self.label_smoothing, form=self.label_smoothing_form
        )
        losses["loss_cls"] = loss_cls * self.loss_weight.get("loss_cls", 1.0)
        return losses

    def extra_repr(self) -> str:
        return f"label_smoothing={self.label_smoothing}, label_smoothing_form={self.label_smoothing_form!r}"


@register(ROI_HEADS_REGISTRY)
class LabelSmoothingStandardROIHeads(StandardROIHeads):
    """``StandardROIHeads`` with :class:`LabelSmoothingFastRCNNOutputLayers` as box predictor.

    Built from ``cfg`` like ``StandardROIHeads``; the smoothing comes from ``cfg.TRICKS.LABEL_SMOOTHING`` and
    ``cfg.TRICKS.LABEL_SMOOTHING_FORM``. From Python or a LazyConfig, pass
    ``box_predictor=LabelSmoothingFastRCNNOutputLayers(..., label_smoothing=0.1)`` to ``StandardROIHeads``.
    """

    @classmethod
    def _init_box_head(cls, cfg, input_shape):
        ret = super()._init_box_head(cfg, input_shape)
        plain = ret["box_predictor"]
        # Build the replacement without touching the global RNG and give it the plain predictor's initial
        # weights: the same seed then yields the same model and the same later random stream as
        # StandardROIHeads.
        with torch.random.fork_rng(devices=[]):
            predictor = LabelSmoothingFastRCNNOutputLayers(cfg, ret["box_head"].output_shape)
        predictor.load_state_dict(plain.state_dict())
        ret["box_predictor"] = predictor
        return ret
