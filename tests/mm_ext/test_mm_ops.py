"""``torchvision_nms`` keeps exactly the boxes mmcv's own ``nms`` keeps, through mmcv's ``batched_nms`` too."""

import pytest
import torch

mmcv_ops = pytest.importorskip("mmcv.ops")

import mm_ext  # noqa: E402,F401  (registers torchvision_nms)
from mm_ext.ops import torchvision_nms  # noqa: E402


def _boxes(n, seed):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 100
    wh = torch.rand(n, 2, generator=g) * 40 + 1
    return torch.cat([xy, xy + wh], 1), torch.rand(n, generator=g)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("kwargs", [dict(iou_threshold=0.7), dict(iou_threshold=0.5, score_threshold=0.3),
                                    dict(iou_threshold=0.3, max_num=17)])
def test_same_boxes_and_order_as_mmcv_nms(seed, kwargs):
    boxes, scores = _boxes(600, seed)
    dets, inds = mmcv_ops.nms(boxes, scores, **kwargs)
    ours_dets, ours_inds = torchvision_nms(boxes, scores, **kwargs)
    assert torch.equal(ours_inds, inds)
    assert torch.equal(ours_dets, dets)


def test_selected_by_type_in_mmcv_batched_nms():
    boxes, scores = _boxes(800, 7)
    idxs = torch.randint(0, 5, (800,), generator=torch.Generator().manual_seed(0))
    ref = mmcv_ops.batched_nms(boxes, scores, idxs, dict(type="nms", iou_threshold=0.7))
    ours = mmcv_ops.batched_nms(boxes, scores, idxs, dict(type="torchvision_nms", iou_threshold=0.7))
    assert torch.equal(ours[1], ref[1]) and torch.equal(ours[0], ref[0])


def test_offset_one_is_refused_with_the_alternative():
    boxes, scores = _boxes(10, 0)
    with pytest.raises(ValueError, match=r"offset=1 is not supported; accepted: 0 \(use type='nms' for 1\)"):
        torchvision_nms(boxes, scores, 0.5, offset=1)
