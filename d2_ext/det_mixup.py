"""Detection mixup with per-box loss weights for Detectron2 (``TRICKS.DET_MIXUP_ALPHA``).

The math is :mod:`plugins.tricks.detection_mixup`; this module binds it to Detectron2:

- :func:`build_train_loader` (``d2_ext.build_train_loader(cfg)``, what ``d2_ext.Trainer.build_train_loader``
  returns): Detectron2's ``build_detection_train_loader(cfg)``, wrapped, when ``TRICKS.DET_MIXUP_ALPHA > 0``, in
  :class:`DetectionMixupLoader`, which mixes each batch in pairs (sample ``i`` with sample ``N - 1 - i``) on the
  mapped images and sets ``Instances.gt_mix_weights`` (``r`` on the sample's own boxes, ``1 - r`` on its
  partner's). It mixes iterations ``< TRICKS.DET_MIXUP_STOP_FRACTION x SOLVER.MAX_ITER`` (the iteration read
  from Detectron2's event storage), with ratios drawn from a generator seeded by (``SEED``, iteration), so a
  resumed run mixes as the uninterrupted one. A loader wrapper, not a dataset mapper, because a mapper sees one
  dataset dict and neither a partner nor the iteration.
- ``MixWeightRPN`` (``PROPOSAL_GENERATOR_REGISTRY``; ``MODEL.PROPOSAL_GENERATOR.NAME``): Detectron2's ``RPN``
  whose losses weight each positive anchor by its matched box's ``gt_mix_weights`` (negatives: 1).
- The ROI heads of ``d2_ext.roi_heads`` (``LabelSmoothingStandardROIHeads``, ``LabelSmoothingCascadeROIHeads``)
  weight each foreground proposal likewise: Detectron2 copies every ``gt_*`` field onto the sampled proposals.

Without ``gt_mix_weights`` the RPN and the heads are Detectron2's, bit for bit.
"""

from __future__ import annotations

import torch
from detectron2.data import build_detection_train_loader
from detectron2.modeling import PROPOSAL_GENERATOR_REGISTRY
from detectron2.modeling.proposal_generator import RPN
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import get_event_storage

from plugins.tricks.detection_mixup import (
    batch_partners,
    check_det_mixup_alpha,
    check_fixed_ratio,
    check_mix_weights,
    check_stop_fraction,
    draw_ratio,
    mix_detection_pair,
    mixup_active,
    ratio_generator,
    sample_mix_weights,
)

from ._registry import register

__all__ = ["DetectionMixupLoader", "MixWeightRPN", "RecordingMatcher", "build_train_loader", "mix_d2_batch"]

WEIGHTS_FIELD = "gt_mix_weights"


def _mix_pair(dict_a: dict, dict_b: dict, ratio: float) -> dict:
    inst_a, inst_b = dict_a["instances"], dict_b["instances"]
    for inst in (inst_a, inst_b):
        extra = sorted(set(inst.get_fields()) - {"gt_boxes", "gt_classes"})
        if extra:
            raise ValueError(f"cfg.TRICKS.DET_MIXUP_ALPHA mixes boxes only; the mapped instances carry {extra} "
                             "(e.g. MODEL.MASK_ON); accepted: instances with gt_boxes and gt_classes")
    mixed = mix_detection_pair(dict_a["image"], inst_a.gt_boxes.tensor, inst_a.gt_classes,
                               dict_b["image"], inst_b.gt_boxes.tensor, inst_b.gt_classes, ratio)
    instances = Instances(tuple(mixed.image.shape[-2:]))
    instances.gt_boxes = Boxes(mixed.boxes)
    instances.gt_classes = mixed.labels
    instances.set(WEIGHTS_FIELD, mixed.weights)
    return {**dict_a, "image": mixed.image, "instances": instances}


def mix_d2_batch(batch: list[dict], alpha: float, generator: torch.Generator | None = None,
                 fixed_ratio: float | None = None) -> list[dict]:
    """A mixed copy of a Detectron2 training batch (a list of mapped dataset dicts with ``image``, ``instances``).

    Sample ``i`` becomes ``mix(image_i, image_{N-1-i}, r_i)`` with the boxes of both and ``gt_mix_weights``;
    the middle sample of an odd batch stays as it is. Ratios are drawn from ``generator`` in sample order, or
    are all ``fixed_ratio`` when it is given.
    """
    alpha = check_det_mixup_alpha(alpha, "cfg.TRICKS.DET_MIXUP_ALPHA")
    if len(batch) < 2:
        raise ValueError(f"cfg.TRICKS.DET_MIXUP_ALPHA pairs the images of a batch; a batch of {len(batch)} image has "
                         "no partner; accepted: SOLVER.IMS_PER_BATCH >= 2 images per process")
    mixed = []
    for i, j in enumerate(batch_partners(len(batch))):
        if j is None:
            mixed.append(batch[i])
            continue
        mixed.append(_mix_pair(batch[i], batch[j], draw_ratio(alpha, generator, fixed_ratio)))
    return mixed


class DetectionMixupLoader:
    """An iterable over ``loader``'s batches, mixed in pairs while ``mixup_active(iteration, max_iter, stop)``.

    Args:
        loader: a Detectron2 training loader (yields lists of mapped dicts).
        alpha: ``r ~ Beta(alpha, alpha)``, > 0.
        max_iter: ``SOLVER.MAX_ITER``.
        stop_fraction: in (0, 1] (default 1.0: every iteration mixes).
        seed: the ratios of iteration ``k`` come from a generator seeded by ``(seed, k)``.
        fixed_ratio: every pair's ratio instead of the draws (default None).
    """

    def __init__(self, loader, alpha: float, max_iter: int, stop_fraction: float = 1.0, seed: int = 0,
                 fixed_ratio: float | None = None) -> None:
        self.loader = loader
        self.alpha = check_det_mixup_alpha(alpha, "cfg.TRICKS.DET_MIXUP_ALPHA")
        self.stop_fraction = check_stop_fraction(stop_fraction, "cfg.TRICKS.DET_MIXUP_STOP_FRACTION")
        self.max_iter = int(max_iter)
        self.seed = int(seed)
        self.fixed_ratio = check_fixed_ratio(fixed_ratio, "cfg.TRICKS.DET_MIXUP_FIXED_RATIO")

    def __iter__(self):
        count = 0
        for batch in self.loader:
            try:  # the trainer's iteration (so a resumed run continues the schedule of draws)
                iteration = get_event_storage().iter
            except AssertionError:  # iterated outside a trainer
                iteration = count
            count += 1
            if mixup_active(iteration, self.max_iter, self.stop_fraction):
                batch = mix_d2_batch(batch, self.alpha, ratio_generator(self.seed, iteration), self.fixed_ratio)
            yield batch

    def __len__(self):
        return len(self.loader)


def build_train_loader(cfg):
    """Detectron2's ``build_detection_train_loader(cfg)``, in a :class:`DetectionMixupLoader` when
    ``cfg.TRICKS.DET_MIXUP_ALPHA > 0``. Return it from a trainer's ``build_train_loader`` classmethod."""
    loader = build_detection_train_loader(cfg)
    alpha = cfg.TRICKS.DET_MIXUP_ALPHA
    if not alpha:
        return loader
    seed = cfg.SEED if cfg.SEED >= 0 else 0
    fixed = cfg.TRICKS.DET_MIXUP_FIXED_RATIO or None
    return DetectionMixupLoader(loader, alpha, cfg.SOLVER.MAX_ITER, cfg.TRICKS.DET_MIXUP_STOP_FRACTION, seed, fixed)


class RecordingMatcher:
    """Calls a Detectron2 ``Matcher`` and keeps each call's matched indices (``matches``), in call order."""

    def __init__(self, matcher) -> None:
        self.matcher = matcher
        self.matches: list[torch.Tensor] = []

    def __call__(self, match_quality_matrix):
        matched_idxs, labels = self.matcher(match_quality_matrix)
        self.matches.append(matched_idxs)
        return matched_idxs, labels


def image_weights(instances: Instances, matched_idxs: torch.Tensor, foreground: torch.Tensor) -> torch.Tensor | None:
    """Per-sample weights of one image from its ``gt_mix_weights`` (None when the image has none)."""
    if not instances.has(WEIGHTS_FIELD):
        return None
    gt_weights = check_mix_weights(instances.get(WEIGHTS_FIELD), f"Instances.{WEIGHTS_FIELD}")
    return sample_mix_weights(gt_weights, matched_idxs, foreground)


@register(PROPOSAL_GENERATOR_REGISTRY)
class MixWeightRPN(RPN):
    """Detectron2's ``RPN``; with ``gt_mix_weights`` on the ground truth, each positive anchor's objectness and
    box losses are weighted by its matched box's weight (negatives 1, the normaliser Detectron2's).

    Built from ``cfg`` like ``RPN`` (``MODEL.PROPOSAL_GENERATOR.NAME: "MixWeightRPN"``). The weighted losses are
    Detectron2's own ``RPN.losses`` evaluated on the anchors of each weight value and summed with that weight,
    so every ``MODEL.RPN.BBOX_REG_LOSS_TYPE`` keeps working.
    """

    _anchor_weights = None  # set by label_and_sample_anchors, taken by the losses of the same forward

    @torch.no_grad()
    def label_and_sample_anchors(self, anchors, gt_instances):
        recorder = RecordingMatcher(self.anchor_matcher)
        self.anchor_matcher = recorder
        try:
            gt_labels, matched_gt_boxes = super().label_and_sample_anchors(anchors, gt_instances)
        finally:
            self.anchor_matcher = recorder.matcher
        weights = [image_weights(inst, matched, labels == 1)
                   for inst, matched, labels in zip(gt_instances, recorder.matches, gt_labels)]
        if all(w is None for w in weights):
            self._anchor_weights = None
        else:
            self._anchor_weights = [torch.ones_like(labels, dtype=torch.float32) if w is None else w
                                    for w, labels in zip(weights, gt_labels)]
        return gt_labels, matched_gt_boxes

    def losses(self, anchors, pred_objectness_logits, gt_labels, pred_anchor_deltas, gt_boxes):
        weights, self._anchor_weights = self._anchor_weights, None
        if weights is None:
            return super().losses(anchors, pred_objectness_logits, gt_labels, pred_anchor_deltas, gt_boxes)
        stacked_labels, stacked_weights = torch.stack(gt_labels), torch.stack(weights)
        total: dict = {}
        for value in torch.unique(stacked_weights[stacked_labels >= 0]).tolist():
            group = [torch.where(w == value, labels, torch.full_like(labels, -1))
                     for w, labels in zip(weights, gt_labels)]
            part = super().losses(anchors, pred_objectness_logits, group, pred_anchor_deltas, gt_boxes)
            for key, loss in part.items():
                total[key] = total.get(key, 0.0) + value * loss
        if not total:  # no anchor sampled at all
            return super().losses(anchors, pred_objectness_logits, gt_labels, pred_anchor_deltas, gt_boxes)
        storage = get_event_storage()  # the counts of the whole batch, not of the last weight group
        storage.put_scalar("rpn/num_pos_anchors", (stacked_labels == 1).sum().item() / len(gt_labels))
        storage.put_scalar("rpn/num_neg_anchors", (stacked_labels == 0).sum().item() / len(gt_labels))
        return total
