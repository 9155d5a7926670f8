"""``torchvision_nms``: mmcv's ``nms`` contract on torchvision's kernel, for MMDetection configs on the CPU.

mmcv 2.1's CPU NMS is about 10x slower than torchvision's on the same boxes (``benchmarks/bench_detector_cost.py``),
and a Faster R-CNN step on the CPU spends a large share of its time there. mmcv's ``batched_nms`` (which
MMDetection's RPN and box heads call with their ``nms`` config) looks a string ``type`` up in the namespace of
``mmcv.ops.nms``; importing ``mm_ext`` adds ``torchvision_nms`` there (never replacing a name), so a config
selects it by name::

    model = dict(test_cfg=dict(rpn=dict(nms=dict(type='torchvision_nms', iou_threshold=0.7)),
                               rcnn=dict(nms=dict(type='torchvision_nms', iou_threshold=0.5))),
                 train_cfg=dict(rpn_proposal=dict(nms=dict(type='torchvision_nms', iou_threshold=0.7))))

The kept boxes are mmcv's: the same IoU rule (suppress above ``iou_threshold``), the same score order, the same
``score_threshold`` and ``max_num`` handling. Only ``offset=0`` exists in torchvision (mmcv's default and
MMDetection 3's); ``offset=1`` raises.
"""

from __future__ import annotations

import sys

import torch
from torch import Tensor

__all__ = ["register_torchvision_nms", "torchvision_nms"]


def torchvision_nms(boxes: Tensor, scores: Tensor, iou_threshold: float, offset: int = 0,
                    score_threshold: float = 0, max_num: int = -1) -> tuple[Tensor, Tensor]:
    """``mmcv.ops.nms`` computed by ``torchvision.ops.nms``.

    Args:
        boxes: ``(N, 4)`` boxes ``x1, y1, x2, y2``.
        scores: ``(N,)`` scores.
        iou_threshold: boxes overlapping a kept box by more than this IoU are suppressed.
        offset: must be 0 (torchvision's box width is ``x2 - x1``).
        score_threshold: boxes scoring at most this are dropped first (default 0: none).
        max_num: keep at most this many (default -1: all).

    Returns:
        ``(dets, inds)``: kept boxes with their score as a fifth column, and their indices into ``boxes``.
    """
    from torchvision.ops import nms

    if offset != 0:
        raise ValueError(f"torchvision_nms: offset={offset!r} is not supported; accepted: 0 (use type='nms' for 1)")
    if boxes.ndim != 2 or boxes.shape[1] != 4 or scores.shape != boxes.shape[:1]:
        raise ValueError(f"torchvision_nms: boxes must be (N, 4) and scores (N,), got {tuple(boxes.shape)} and "
                         f"{tuple(scores.shape)}")
    valid = None
    if score_threshold > 0:
        valid = torch.nonzero(scores > score_threshold).squeeze(1)
        boxes, scores = boxes[valid], scores[valid]
    inds = nms(boxes.float(), scores.float(), float(iou_threshold))
    if max_num > 0:
        inds = inds[:max_num]
    kept_boxes, kept_scores = boxes[inds], scores[inds]
    if valid is not None:
        inds = valid[inds]
    return torch.cat((kept_boxes, kept_scores.reshape(-1, 1)), dim=1), inds


def register_torchvision_nms() -> None:
    """Make ``type='torchvision_nms'`` resolvable by ``mmcv.ops.batched_nms`` (idempotent, never overwrites)."""
    import mmcv.ops.nms  # noqa: F401  (the module, which the package attribute of the same name hides)

    namespace = sys.modules["mmcv.ops.nms"].__dict__
    existing = namespace.get("torchvision_nms")
    if existing is not None and existing is not torchvision_nms:
        raise RuntimeError("mmcv.ops.nms already defines torchvision_nms; mm_ext leaves it as it is")
    namespace["torchvision_nms"] = torchvision_nms
