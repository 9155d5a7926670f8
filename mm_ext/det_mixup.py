"""Detection mixup with per-box loss weights for MMDetection's two-stage detectors.

The math is :mod:`plugins.tricks.detection_mixup`; this module binds it to MMDetection 3.x. Three parts, each
switched on from a stock config by a ``type`` (the heads keep every inherited key):

- ``DetectionMixupHook`` (HOOKS; ``custom_hooks``): before each training iteration it mixes the images of the
  batch in pairs (sample ``i`` with sample ``N - 1 - i``, ratio ``r ~ Beta(alpha, alpha)``) on the raw pixels,
  before the data preprocessor normalises and pads them, and writes the boxes of both images with their
  weights (``gt_instances.mix_weights``) into the data samples. A hook, rather than a pipeline transform,
  because it needs nothing else in the config: mmdet's ``PackDetInputs`` would drop an unknown ``gt_*`` key and
  a transform sees neither a partner image (mmdet's own ``MixUp`` needs ``MultiImageMixDataset`` for that) nor
  the iteration it would stop at; the hook runs in the main process, knows ``runner.iter``, checks the model
  before training (a detector whose heads would ignore the weights is refused by name) and draws its ratios
  from a generator seeded by (seed, iteration), so a resumed run mixes as the uninterrupted one.
- ``MixWeightRPNHead`` (MODELS; ``model.rpn_head.type``): ``RPNHead`` whose anchor targets' label and box
  weights are multiplied by the weight of the box each positive anchor is matched to (negatives: 1).
- ``MixWeightStandardRoIHead`` / ``MixWeightCascadeRoIHead`` (MODELS; ``model.roi_head.type``): the RoI heads
  whose box heads' label and box weights (every stage of a cascade) are multiplied likewise; any ``BBoxHead``
  and any loss (``LabelSmoothingCrossEntropyLoss`` included) keep working, the weights reach them as
  MMDetection's own ``label_weights`` / ``bbox_weights``.

Without ``gt_instances.mix_weights`` (mixup off, validation, an iteration past ``stop_fraction``) the heads
are MMDetection's, bit for bit.
"""

from __future__ import annotations

import math

import torch
from mmdet.models.dense_heads import RPNHead
from mmdet.models.roi_heads import CascadeRoIHead, StandardRoIHead
from mmdet.models.task_modules.prior_generators import anchor_inside_flags
from mmdet.models.utils import unmap
from mmdet.structures.bbox import BaseBoxes, bbox2roi, get_box_tensor
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.structures import InstanceData

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

__all__ = [
    "DetectionMixupHook",
    "MixWeightCascadeRoIHead",
    "MixWeightRPNHead",
    "MixWeightStandardRoIHead",
    "mix_det_batch",
]

_WEIGHTS = "gt_instances.mix_weights"


def _mix_pair(sample_a, image_a, sample_b, image_b, ratio):
    """(image, gt_instances, ignored_instances or None) of one mixed sample (``a`` weighted ``ratio``)."""
    gt_a, gt_b = sample_a.gt_instances, sample_b.gt_instances
    for gt in (gt_a, gt_b):
        extra = sorted(set(gt.keys()) - {"bboxes", "labels"})
        if extra:
            raise ValueError(f"DetectionMixupHook mixes boxes only; the data samples' gt_instances carry {extra} "
                             "(e.g. a Mask R-CNN pipeline); accepted: gt_instances with bboxes and labels")
    mixed = mix_detection_pair(image_a, get_box_tensor(gt_a.bboxes), gt_a.labels,
                               image_b, get_box_tensor(gt_b.bboxes), gt_b.labels, ratio)
    boxes = type(gt_a.bboxes)(mixed.boxes) if isinstance(gt_a.bboxes, BaseBoxes) else mixed.boxes
    gt = InstanceData(bboxes=boxes, labels=mixed.labels, mix_weights=mixed.weights)
    ignored = None
    if "ignored_instances" in sample_a and "ignored_instances" in sample_b:
        ignored = InstanceData.cat([sample_a.ignored_instances, sample_b.ignored_instances])
    return mixed.image, gt, ignored


def mix_det_batch(data_batch: dict, alpha: float, generator: torch.Generator | None = None,
                  fixed_ratio: float | None = None) -> list[float | None]:
    """Mix an MMDetection training batch in place (before the data preprocessor); returns each sample's ratio.

    Args:
        data_batch: ``{'inputs': [C x H x W tensors], 'data_samples': [DetDataSample]}`` as the dataloader gives
            it (mmdet's ``pseudo_collate``).
        alpha: ``r ~ Beta(alpha, alpha)``, > 0.
        generator: where the ratios come from (one draw per mixed sample, in sample order).
        fixed_ratio: every sample's ratio instead of a draw (None, default: drawn).

    Sample ``i`` becomes ``mix(inputs[i], inputs[N - 1 - i], r_i)`` with the boxes of both and
    ``gt_instances.mix_weights`` (``r_i`` on its own boxes, ``1 - r_i`` on its partner's); ``img_shape`` becomes
    the canvas size. The middle sample of an odd batch is left as it is (ratio None).
    """
    alpha = check_det_mixup_alpha(alpha)
    inputs, samples = data_batch["inputs"], data_batch["data_samples"]
    if not isinstance(inputs, list | tuple):
        raise ValueError("DetectionMixupHook needs the batch's inputs as a list of (C, H, W) tensors (mmdet's "
                         f"pseudo_collate), got {type(inputs).__name__}")
    if len(inputs) < 2:
        raise ValueError(f"DetectionMixupHook pairs the images of a batch; a batch of {len(inputs)} image has no "
                         "partner; accepted: train_dataloader.batch_size >= 2")
    images, originals = list(inputs), list(samples)
    mixed_samples = [sample.new() for sample in originals]  # shallow: the originals stay as they were
    ratios: list[float | None] = []
    for i, j in enumerate(batch_partners(len(images))):
        if j is None:
            ratios.append(None)
            continue
        ratio = draw_ratio(alpha, generator, fixed_ratio)
        image, gt, ignored = _mix_pair(originals[i], images[i], originals[j], images[j], ratio)
        inputs[i] = image
        mixed_samples[i].gt_instances = gt
        if ignored is not None:
            mixed_samples[i].ignored_instances = ignored
        mixed_samples[i].set_metainfo({"img_shape": tuple(image.shape[-2:])})
        ratios.append(ratio)
    samples[:] = mixed_samples
    return ratios


class DetectionMixupHook(Hook):
    """Mix each training batch in pairs (see the module docstring); HOOKS ``DetectionMixupHook``.

    Args:
        alpha: ``r ~ Beta(alpha, alpha)``, a number > 0 (default 1.5, the paper's).
        stop_fraction: mix iterations ``< stop_fraction * max_iters`` (default 1.0: all of them).
        seed: the ratios of iteration ``k`` come from a generator seeded by ``(seed, k)`` (default None: the
            runner's ``randomness.seed``, 0 when unset).
        fixed_ratio: a ratio in (0, 1) used for every pair instead of the Beta draws (default None), e.g. 0.5 for
            the anchors' fixed blend (each box then weighs 0.5).
    """

    priority = "ABOVE_NORMAL"  # before hooks that read the batch (NORMAL and lower)

    def __init__(self, alpha: float = 1.5, stop_fraction: float = 1.0, seed: int | None = None,
                 fixed_ratio: float | None = None) -> None:
        self.alpha = check_det_mixup_alpha(alpha, "DetectionMixupHook alpha")
        self.stop_fraction = check_stop_fraction(stop_fraction, "DetectionMixupHook stop_fraction")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ValueError(f"DetectionMixupHook seed={seed!r} is not accepted; accepted: an int or None")
        self.seed = seed
        self.fixed_ratio = check_fixed_ratio(fixed_ratio, "DetectionMixupHook fixed_ratio")

    def before_train(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        roi_head = getattr(model, "roi_head", None)
        if roi_head is None:
            raise ValueError(
                f"DetectionMixupHook(alpha={self.alpha}) is not accepted for {type(model).__name__}: it has no RoI "
                "classifier (one-stage or sigmoid-only heads take no per-box weights); accepted: a two-stage "
                "detector with model.rpn_head.type='MixWeightRPNHead' and model.roi_head.type="
                "'MixWeightStandardRoIHead' or 'MixWeightCascadeRoIHead'")
        if not isinstance(roi_head, _MixWeightRoIHeadMixin):
            raise ValueError(
                f"DetectionMixupHook needs model.roi_head.type='MixWeightStandardRoIHead' (or "
                f"'MixWeightCascadeRoIHead'), got {type(roi_head).__name__}, which would ignore the box weights")
        rpn_head = getattr(model, "rpn_head", None)
        if rpn_head is not None and not isinstance(rpn_head, MixWeightRPNHead):
            raise ValueError(f"DetectionMixupHook needs model.rpn_head.type='MixWeightRPNHead', got "
                             f"{type(rpn_head).__name__}, which would ignore the box weights")
        last = math.ceil(self.stop_fraction * runner.max_iters)
        ratio = f"r = {self.fixed_ratio}" if self.fixed_ratio is not None else f"r ~ Beta({self.alpha}, {self.alpha})"
        runner.logger.info(f"DetectionMixupHook: batches mixed in pairs, {ratio}, iterations 1..{last} of "
                           f"{runner.max_iters}")

    def before_train_iter(self, runner, batch_idx: int, data_batch: dict | None = None) -> None:
        if data_batch is None or not mixup_active(runner.iter, runner.max_iters, self.stop_fraction):
            return
        seed = self.seed if self.seed is not None else (runner.seed or 0)
        mix_det_batch(data_batch, self.alpha, ratio_generator(seed, runner.iter), self.fixed_ratio)


class MixWeightRPNHead(RPNHead):
    """``RPNHead`` whose anchor losses weight each positive anchor by its matched box's ``mix_weights``.

    Built like ``RPNHead`` (swap ``model.rpn_head.type`` only). Negative anchors keep weight 1; the loss
    normaliser (``avg_factor``, the sampled anchors) is MMDetection's.
    """

    def _get_targets_single(self, flat_anchors, valid_flags, gt_instances, img_meta, gt_instances_ignore=None,
                            unmap_outputs=True):
        targets = super()._get_targets_single(flat_anchors, valid_flags, gt_instances, img_meta,
                                              gt_instances_ignore, unmap_outputs)
        if "mix_weights" not in gt_instances:
            return targets
        labels, label_weights, bbox_targets, bbox_weights, pos_inds, neg_inds, sampling_result = targets
        gt_weights = check_mix_weights(gt_instances.mix_weights, _WEIGHTS)
        # the same inside flags as the parent's: pos_inds index the anchors inside the image
        inside = anchor_inside_flags(flat_anchors, valid_flags, img_meta["img_shape"][:2],
                                     self.train_cfg["allowed_border"])
        num_inside = int(inside.sum())
        matched = torch.zeros(num_inside, dtype=torch.long, device=inside.device)
        foreground = torch.zeros(num_inside, dtype=torch.bool, device=inside.device)
        matched[pos_inds] = sampling_result.pos_assigned_gt_inds
        foreground[pos_inds] = True
        weights = sample_mix_weights(gt_weights, matched, foreground).to(label_weights)
        if unmap_outputs:
            weights = unmap(weights, flat_anchors.size(0), inside, fill=1)
        return (labels, label_weights * weights, bbox_targets, bbox_weights * weights[:, None], pos_inds, neg_inds,
                sampling_result)


class _MixWeightSampler:
    """A box sampler that hands each sampling result its image's ``gt_instances.mix_weights``."""

    def __init__(self, sampler) -> None:
        self.sampler = sampler

    def sample(self, assign_result, pred_instances, gt_instances, **kwargs):
        result = self.sampler.sample(assign_result, pred_instances, gt_instances, **kwargs)
        if "mix_weights" in gt_instances:
            result.gt_mix_weights = check_mix_weights(gt_instances.mix_weights, _WEIGHTS)
        return result


class _MixWeightRoIHeadMixin:
    """The weighted box loss shared by the RoI heads below."""

    @staticmethod
    def _wrap(sampler):
        return None if sampler is None else _MixWeightSampler(sampler)

    @staticmethod
    def _sample_weights(sampling_results):
        """Each sampled RoI's weight, in ``BBoxHead.get_targets``' order (per image: positives, then negatives)."""
        if not any(hasattr(res, "gt_mix_weights") for res in sampling_results):
            return None
        weights = []
        for res in sampling_results:
            num_pos, num_neg = len(res.pos_inds), len(res.neg_inds)
            device = res.pos_inds.device
            foreground = torch.cat([torch.ones(num_pos, dtype=torch.bool, device=device),
                                    torch.zeros(num_neg, dtype=torch.bool, device=device)])
            matched = torch.cat([res.pos_assigned_gt_inds.long(), torch.zeros(num_neg, dtype=torch.long,
                                                                              device=device)])
            gt_weights = getattr(res, "gt_mix_weights", torch.ones(0, device=device))
            weights.append(sample_mix_weights(gt_weights, matched, foreground))
        return torch.cat(weights)

    def _weighted_loss_and_target(self, bbox_head, bbox_results, rois, sampling_results, rcnn_train_cfg):
        targets = bbox_head.get_targets(sampling_results, rcnn_train_cfg, concat=True)
        weights = self._sample_weights(sampling_results)
        if weights is not None:
            labels, label_weights, bbox_targets, bbox_weights = targets
            weights = weights.to(label_weights)
            targets = (labels, label_weights * weights, bbox_targets, bbox_weights * weights[:, None])
        losses = bbox_head.loss(bbox_results["cls_score"], bbox_results["bbox_pred"], rois, *targets)
        return dict(loss_bbox=losses, bbox_targets=targets)


class MixWeightStandardRoIHead(_MixWeightRoIHeadMixin, StandardRoIHead):
    """``StandardRoIHead`` whose box loss weights each positive RoI by its matched box's ``mix_weights``.

    Built like ``StandardRoIHead`` (swap ``model.roi_head.type`` only); negatives keep weight 1 and the loss
    normaliser is MMDetection's.
    """

    def init_assigner_sampler(self) -> None:
        super().init_assigner_sampler()
        self.bbox_sampler = self._wrap(self.bbox_sampler)

    def bbox_loss(self, x, sampling_results) -> dict:
        rois = bbox2roi([res.priors for res in sampling_results])
        bbox_results = self._bbox_forward(x, rois)
        result = self._weighted_loss_and_target(self.bbox_head, bbox_results, rois, sampling_results,
                                                self.train_cfg)
        bbox_results.update(loss_bbox=result["loss_bbox"])
        return bbox_results


class MixWeightCascadeRoIHead(_MixWeightRoIHeadMixin, CascadeRoIHead):
    """``CascadeRoIHead`` whose box loss of every stage weights each positive RoI by its matched box's weight.

    Built like ``CascadeRoIHead`` (swap ``model.roi_head.type`` only).
    """

    def init_assigner_sampler(self) -> None:
        super().init_assigner_sampler()
        self.bbox_sampler = [self._wrap(sampler) for sampler in self.bbox_sampler]

    def bbox_loss(self, stage, x, sampling_results) -> dict:
        rois = bbox2roi([res.priors for res in sampling_results])
        bbox_results = self._bbox_forward(stage, x, rois)
        bbox_results.update(rois=rois)
        bbox_results.update(self._weighted_loss_and_target(self.bbox_head[stage], bbox_results, rois,
                                                           sampling_results, self.train_cfg[stage]))
        return bbox_results
