"""Visually coherent image mixup for detectors (Bag of Freebies, Zhang et al. 2019, arXiv 1902.04103, 3.1).

Two training images keep their geometry: both are placed at the top-left corner of a canvas of the larger
height and the larger width (zeros elsewhere), and blended with ratio ``r ~ Beta(alpha, alpha)`` (the paper:
``alpha = 1.5``)::

    canvas[:, :Ha, :Wa] += r * image_a
    canvas[:, :Hb, :Wb] += (1 - r) * image_b

as the authors' GluonCV does (so where only one image lies, its pixels are scaled by its ratio). All boxes of
both images are kept, unchanged (nothing moves); each box carries its image's weight, ``r`` for ``a``'s boxes
and ``1 - r`` for ``b``'s, and that weight multiplies the losses of the anchors and proposals matched to it.

**Background samples weigh 1.** An anchor or proposal matched to no box is background in the mixed image as a
whole (it overlaps no box of either image enough), so its target is right with full certainty; weighting it by
a ratio would treat the background of the mixed image as half-true and shrink the classifier's negatives. It
also keeps each loss's normaliser (the number of sampled anchors / proposals) exactly the frameworks'. Ignored
samples stay ignored.

Randomness comes only from the ``torch.Generator`` passed in (as :mod:`plugins.tricks.mixup`): the adapters
seed one per (seed, iteration), so a resumed run draws the same ratios. Images are channel-first tensors
``(C, H, W)`` (what MMDetection's data preprocessor and Detectron2's model receive); boxes are ``(N, 4)``
``x1, y1, x2, y2`` in pixels.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "MixedDetection",
    "batch_partners",
    "check_det_mixup_alpha",
    "check_fixed_ratio",
    "check_stop_fraction",
    "check_mix_weights",
    "draw_ratio",
    "mix_detection_pair",
    "mix_images",
    "mixup_active",
    "ratio_generator",
    "sample_mix_ratio",
    "sample_mix_weights",
    "weighted_mean",
]


class MixedDetection(NamedTuple):
    """One mixed training sample: the canvas image, the boxes and labels of both images, each box's weight."""

    image: Tensor
    boxes: Tensor
    labels: Tensor
    weights: Tensor


def check_det_mixup_alpha(alpha: float, name: str = "alpha") -> float:
    """Return ``alpha`` as a float, or raise ValueError naming ``name`` unless it is a finite number > 0."""
    ok = isinstance(alpha, int | float) and not isinstance(alpha, bool) and math.isfinite(alpha) and alpha > 0
    if not ok:
        raise ValueError(f"{name}={alpha!r} is not accepted; accepted: a finite number > 0 (the paper: 1.5)")
    return float(alpha)


def check_fixed_ratio(ratio: float | None, name: str = "fixed_ratio") -> float | None:
    """Return ``ratio`` (None: ratios are drawn), or raise ValueError naming ``name`` unless it lies in (0, 1)."""
    if ratio is None:
        return None
    ok = isinstance(ratio, int | float) and not isinstance(ratio, bool) and 0.0 < ratio < 1.0
    if not ok:
        raise ValueError(f"{name}={ratio!r} is not accepted; accepted: a number in (0, 1) (GluonCV's and "
                         "MMDetection's fixed blend: 0.5), or None to draw r ~ Beta(alpha, alpha)")
    return float(ratio)


def check_mix_weights(weights: Tensor, name: str = "mix_weights") -> Tensor:
    """Return ``weights``, or raise ValueError naming ``name`` if one lies outside [0, 1] (or is not finite)."""
    if weights.numel() and not bool(((weights >= 0) & (weights <= 1)).all()):
        bad = weights[~((weights >= 0) & (weights <= 1))][0].item()
        raise ValueError(f"{name} holds {bad!r}, which is not accepted; accepted: box weights in [0, 1]")
    return weights


def check_stop_fraction(stop_fraction: float, name: str = "stop_fraction") -> float:
    """Return ``stop_fraction`` as a float, or raise ValueError naming ``name`` unless it lies in (0, 1]."""
    ok = isinstance(stop_fraction, int | float) and not isinstance(stop_fraction, bool)
    if not ok or not 0.0 < stop_fraction <= 1.0:
        raise ValueError(f"{name}={stop_fraction!r} is not accepted; accepted: a number in (0, 1] (the fraction of "
                         "the training iterations that mix; 1 = all of them)")
    return float(stop_fraction)


def mixup_active(step: int, total_steps: int, stop_fraction: float = 1.0) -> bool:
    """Whether iteration ``step`` (counted from 0) of ``total_steps`` mixes: ``step < stop_fraction * total_steps``.

    The paper may switch mixup off for the last part of training; ``stop_fraction = 1`` mixes every iteration.
    """
    return step < check_stop_fraction(stop_fraction) * total_steps


def batch_partners(batch_size: int) -> list[int | None]:
    """The partner of each sample of a batch: ``N - 1 - i`` (the batch reversed, as :mod:`plugins.tricks.mixup`).

    The middle sample of an odd batch would meet itself and is left unmixed (None). Sample ``i`` is the
    ``a`` image (weight ``r_i``) of its own mixture, so with a shuffled sampler every image meets a random partner.
    """
    return [None if batch_size - 1 - i == i else batch_size - 1 - i for i in range(batch_size)]


def ratio_generator(seed: int, step: int) -> torch.Generator:
    """A CPU generator that depends only on ``(seed, step)``: the draws of one iteration, on any machine."""
    return torch.Generator().manual_seed((int(seed) * 1_000_003 + int(step)) % (2**63 - 1))


def sample_mix_ratio(alpha: float, generator: torch.Generator | None = None) -> float:
    """Draw ``r ~ Beta(alpha, alpha)``; one 64-bit seed from ``generator`` feeds NumPy's Beta sampler."""
    alpha = check_det_mixup_alpha(alpha)
    seed = int(torch.randint(0, 2**63 - 1, (1,), generator=generator, dtype=torch.int64))
    return float(np.random.default_rng(seed).beta(alpha, alpha))


def draw_ratio(alpha: float, generator: torch.Generator | None = None, fixed_ratio: float | None = None) -> float:
    """``fixed_ratio`` when given (the anchors' fixed blend, nothing drawn), else :func:`sample_mix_ratio`."""
    if fixed_ratio is not None:
        return check_fixed_ratio(fixed_ratio)
    return sample_mix_ratio(alpha, generator)


def mix_images(image_a: Tensor, image_b: Tensor, ratio: float) -> Tensor:
    """``ratio * image_a + (1 - ratio) * image_b``, both at the top-left of a canvas of the larger size.

    Args:
        image_a, image_b: ``(C, H, W)`` tensors with the same number of channels (any dtype).
        ratio: the weight of ``image_a`` in [0, 1].

    Returns:
        A float32 ``(C, max(Ha, Hb), max(Wa, Wb))`` tensor on ``image_a``'s device.
    """
    if image_a.ndim != 3 or image_b.ndim != 3 or image_a.shape[0] != image_b.shape[0]:
        raise ValueError(f"images must be (C, H, W) with the same C, got {tuple(image_a.shape)} and "
                         f"{tuple(image_b.shape)}")
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"ratio={ratio!r} is not accepted; accepted: a number in [0, 1]")
    (channels, ha, wa), (_, hb, wb) = image_a.shape, image_b.shape
    canvas = image_a.new_zeros((channels, max(ha, hb), max(wa, wb)), dtype=torch.float32)
    canvas[:, :ha, :wa] += image_a.float() * ratio
    canvas[:, :hb, :wb] += image_b.to(canvas.device).float() * (1.0 - ratio)
    return canvas


def mix_detection_pair(
    image_a: Tensor, boxes_a: Tensor, labels_a: Tensor,
    image_b: Tensor, boxes_b: Tensor, labels_b: Tensor,
    ratio: float,
) -> MixedDetection:
    """Mix two detection samples (see the module docstring); boxes keep their coordinates.

    Returns the canvas (:func:`mix_images`), ``a``'s then ``b``'s boxes and labels, and their weights
    (``ratio`` for ``a``'s boxes, ``1 - ratio`` for ``b``'s; float32).
    """
    image = mix_images(image_a, image_b, ratio)
    boxes = torch.cat([boxes_a, boxes_b.to(boxes_a)])
    labels = torch.cat([labels_a, labels_b.to(labels_a)])
    weights = torch.cat([
        torch.full((len(boxes_a),), ratio, dtype=torch.float32, device=boxes_a.device),
        torch.full((len(boxes_b),), 1.0 - ratio, dtype=torch.float32, device=boxes_a.device),
    ])
    return MixedDetection(image, boxes, labels, weights)


def sample_mix_weights(gt_weights: Tensor, matched_gt_inds: Tensor, foreground: Tensor) -> Tensor:
    """The loss weight of each sampled anchor or proposal.

    Args:
        gt_weights: ``(G,)`` weight of each ground-truth box of the image.
        matched_gt_inds: ``(S,)`` index of the box each sample is matched to (any value where not foreground).
        foreground: ``(S,)`` bool, True where the sample is foreground (positive).

    Returns:
        ``(S,)`` float: ``gt_weights[matched_gt_inds]`` on foreground samples, 1 on the others (module docstring).
    """
    ones = torch.ones(foreground.shape, dtype=gt_weights.dtype if gt_weights.is_floating_point() else torch.float32,
                      device=foreground.device)
    if gt_weights.numel() == 0 or not bool(foreground.any()):
        return ones
    index = torch.where(foreground, matched_gt_inds, torch.zeros_like(matched_gt_inds)).long()
    return torch.where(foreground, gt_weights.to(ones)[index], ones)


def weighted_mean(per_sample_loss: Tensor, weights: Tensor, normalizer: float | None = None) -> Tensor:
    """``sum_i weights[i] * per_sample_loss[i] / normalizer`` (default: the number of samples, at least 1).

    The normaliser is the unweighted one, so that all-ones weights give the plain mean.
    """
    count = per_sample_loss.numel() if normalizer is None else normalizer
    return (per_sample_loss * weights.to(per_sample_loss)).sum() / max(count, 1)
