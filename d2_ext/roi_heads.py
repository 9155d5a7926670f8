"""Label smoothing and detection mixup's per-box weights for the Fast R-CNN box classifiers.

``LabelSmoothingStandardROIHeads`` and ``LabelSmoothingCascadeROIHeads`` (registered in ``ROI_HEADS_REGISTRY``;
contract: ``cls(cfg, input_shape)`` returns an ``ROIHeads``) are Detectron2's ``StandardROIHeads`` and
``CascadeROIHeads`` with their box predictors (every stage of a cascade) replaced by
:class:`LabelSmoothingFastRCNNOutputLayers`, whose classification loss is
``plugins.tricks.label_smoothing.label_smoothing_cross_entropy`` over the K + 1 classes (background = index K) with
``cfg.TRICKS.LABEL_SMOOTHING`` and ``cfg.TRICKS.LABEL_SMOOTHING_FORM``. When the proposals carry
``gt_mix_weights`` (detection mixup, ``d2_ext.det_mixup``), both losses weight each foreground proposal by its
matched box's weight and each background proposal by 1 (``plugins.tricks.detection_mixup``). The box regression
loss, the inference and the parameter names are Detectron2's own, so checkpoints stay interchangeable; with
smoothing 0 and no weights the losses are exactly Detectron2's.
"""

from __future__ import annotations

import torch
from detectron2.config import configurable
from detectron2.layers import cat
from detectron2.modeling import ROI_HEADS_REGISTRY
from detectron2.modeling.roi_heads import CascadeROIHeads, FastRCNNOutputLayers, StandardROIHeads
from detectron2.modeling.roi_heads.fast_rcnn import _log_classification_stats

from plugins.tricks.detection_mixup import weighted_mean
from plugins.tricks.label_smoothing import label_smoothing_cross_entropy

from ._registry import register
from .config import SMOOTHING_FORMS, validate_tricks_config
from .det_mixup import WEIGHTS_FIELD, RecordingMatcher, image_weights

__all__ = ["LabelSmoothingCascadeROIHeads", "LabelSmoothingFastRCNNOutputLayers", "LabelSmoothingStandardROIHeads"]


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
        """Detectron2's losses, with ``loss_cls`` replaced by the smoothed one when epsilon > 0, and both losses
        weighted per proposal when the proposals carry ``gt_mix_weights``."""
        weights = self._proposal_weights(proposals)
        if weights is not None:
            return self._weighted_losses(predictions, proposals, weights)
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

    def _proposal_weights(self, proposals):
        """Each proposal's weight (foreground: its box's ``gt_mix_weights``, background 1), or None without any."""
        if not any(p.has(WEIGHTS_FIELD) for p in proposals):
            return None
        weights = []
        for p in proposals:
            foreground = (p.gt_classes >= 0) & (p.gt_classes < self.num_classes)
            w = image_weights(p, torch.arange(len(p), device=foreground.device), foreground)
            weights.append(torch.ones(len(p), device=foreground.device) if w is None else w)
        return cat(weights, dim=0)

    def _weighted_losses(self, predictions, proposals, weights):
        if getattr(self, "use_sigmoid_ce", False):  # Detectron2 main's federated classifier: not a softmax
            raise ValueError("cfg.TRICKS.DET_MIXUP_ALPHA weights the losses of a softmax box classifier; accepted: "
                             "MODEL.ROI_BOX_HEAD.USE_SIGMOID_CE False")
        scores, proposal_deltas = predictions
        gt_classes = cat([p.gt_classes for p in proposals], dim=0)
        _log_classification_stats(scores, gt_classes)
        proposal_boxes = cat([p.proposal_boxes.tensor for p in proposals], dim=0)
        gt_boxes = cat([(p.gt_boxes if p.has("gt_boxes") else p.proposal_boxes).tensor for p in proposals], dim=0)
        per_proposal = label_smoothing_cross_entropy(
            scores, gt_classes, epsilon=self.label_smoothing, form=self.label_smoothing_form, reduction="none"
        )
        loss_cls = weighted_mean(per_proposal, weights)
        # Detectron2's own box loss on the foreground of each weight value, summed with that weight: any
        # MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_TYPE works and the normaliser (all sampled proposals) is Detectron2's.
        foreground = (gt_classes >= 0) & (gt_classes < self.num_classes)
        loss_box_reg = proposal_deltas.sum() * 0.0
        for value in torch.unique(weights[foreground]).tolist():
            group = torch.where(foreground & (weights == value), gt_classes, torch.full_like(gt_classes, self.num_classes))
            loss_box_reg = loss_box_reg + value * self.box_reg_loss(proposal_boxes, gt_boxes, proposal_deltas, group)
        losses = {"loss_cls": loss_cls, "loss_box_reg": loss_box_reg}
        return {k: v * self.loss_weight.get(k, 1.0) for k, v in losses.items()}

    def extra_repr(self) -> str:
        return f"label_smoothing={self.label_smoothing}, label_smoothing_form={self.label_smoothing_form!r}"


def _same_init(plain, *args, **kwargs):
    """``LabelSmoothingFastRCNNOutputLayers(*args, **kwargs)`` built without touching the global RNG and given
    ``plain``'s initial weights: the same seed then yields the same model and the same later random stream as
    Detectron2's head."""
    with torch.random.fork_rng(devices=[]):
        predictor = LabelSmoothingFastRCNNOutputLayers(*args, **kwargs)
    predictor.load_state_dict(plain.state_dict())
    return predictor


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
        shape = ret["box_head"].output_shape
        ret["box_predictor"] = _same_init(ret["box_predictor"], cfg, shape)
        return ret


@register(ROI_HEADS_REGISTRY)
class LabelSmoothingCascadeROIHeads(CascadeROIHeads):
    """``CascadeROIHeads`` with :class:`LabelSmoothingFastRCNNOutputLayers` as the box predictor of every stage.

    Built from ``cfg`` like ``CascadeROIHeads`` (``MODEL.ROI_HEADS.NAME: "LabelSmoothingCascadeROIHeads"``);
    each stage keeps its ``ROI_BOX_CASCADE_HEAD.BBOX_REG_WEIGHTS`` and smooths with ``cfg.TRICKS.LABEL_SMOOTHING``
    and ``LABEL_SMOOTHING_FORM``. The proposals that later stages re-match to the ground truth carry their
    matched box's ``gt_mix_weights`` too.
    """

    @classmethod
    def _init_box_head(cls, cfg, input_shape):
        ret = super()._init_box_head(cfg, input_shape)
        ret["box_predictors"] = [
            _same_init(plain, cfg, head.output_shape, box2box_transform=plain.box2box_transform)
            for plain, head in zip(ret["box_predictors"], ret["box_heads"])
        ]
        return ret

    @torch.no_grad()
    def _match_and_label_boxes(self, proposals, stage, targets):
        recorder = RecordingMatcher(self.proposal_matchers[stage])
        self.proposal_matchers[stage] = recorder
        try:
            proposals = super()._match_and_label_boxes(proposals, stage, targets)
        finally:
            self.proposal_matchers[stage] = recorder.matcher
        for p, target, matched in zip(proposals, targets, recorder.matches):
            if target.has(WEIGHTS_FIELD) and len(target) > 0:
                p.set(WEIGHTS_FIELD, target.get(WEIGHTS_FIELD)[matched])
        return proposals
