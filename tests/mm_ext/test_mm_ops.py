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


def test_shipped_fashion_detector_gives_the_same_losses_and_detections_with_mmcv_ops(monkeypatch):
    """The fashion-scenes configs' CPU fast path (torchvision RoIAlign + torchvision_nms) changes no result."""
    from mmdet.structures import DetDataSample
    from mmengine.config import Config
    from mmengine.registry import MODELS, DefaultScope
    from mmengine.structures import InstanceData

    monkeypatch.setenv("FASHION_SCENES_ROOT", "/nonexistent/")
    path = "mm_ext/configs/faster-rcnn_timm-r26nd_fpn_baseline_fashion-scenes.py"
    outputs = {}
    for kind in ("torchvision", "mmcv"):
        cfg = Config.fromfile(path)
        assert cfg.model.roi_head.bbox_roi_extractor.roi_layer.use_torchvision is True
        if kind == "mmcv":
            cfg.model.roi_head.bbox_roi_extractor.roi_layer.use_torchvision = False
            for part in (cfg.model.train_cfg.rpn_proposal, cfg.model.test_cfg.rpn, cfg.model.test_cfg.rcnn):
                assert part.nms.type == "torchvision_nms"
                part.nms.type = "nms"
        DefaultScope.get_instance(f"ops-{kind}", scope_name="mmdet")
        torch.manual_seed(0)
        model = MODELS.build(cfg.model)
        g = torch.Generator().manual_seed(0)
        samples = []
        for _ in range(2):
            s = DetDataSample(metainfo=dict(img_shape=(128, 128), ori_shape=(128, 128), pad_shape=(128, 128),
                                            scale_factor=(1.0, 1.0), batch_input_shape=(128, 128)))
            s.gt_instances = InstanceData(bboxes=torch.tensor([[10.0, 12.0, 60.0, 70.0], [40.0, 30.0, 100.0, 90.0]]),
                                          labels=torch.tensor([3, 7]))
            samples.append(s)
        images = [torch.randint(0, 255, (3, 128, 128), generator=g, dtype=torch.uint8) for _ in range(2)]
        torch.manual_seed(1)  # the RoI sampler draws
        data = model.data_preprocessor(dict(inputs=images, data_samples=samples), training=True)
        losses = model(**data, mode="loss")
        model.eval()
        with torch.no_grad():
            preds = model(**model.data_preprocessor(dict(inputs=images, data_samples=samples)), mode="predict")
        outputs[kind] = ({k: float(sum(v).detach() if isinstance(v, list) else v.detach()) for k, v in losses.items()},
                         [p.pred_instances for p in preds])
    (tv_losses, tv_preds), (mm_losses, mm_preds) = outputs["torchvision"], outputs["mmcv"]
    assert tv_losses.keys() == mm_losses.keys()
    for k in tv_losses:
        assert tv_losses[k] == pytest.approx(mm_losses[k], rel=1e-5, abs=1e-6), k
    for a, b in zip(tv_preds, mm_preds, strict=True):
        assert len(a) == len(b) > 0
        torch.testing.assert_close(a.bboxes, b.bboxes, rtol=1e-4, atol=1e-3)
        assert torch.equal(a.labels, b.labels)
