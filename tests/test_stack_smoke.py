"""The installed stack really trains on this CPU: one optimisation step per framework, not just imports.

Each test builds its model through the framework's own registry/config, runs one training iteration on tiny
synthetic inputs and checks that the losses are finite and that the parameters moved.
"""

import os.path as osp

import pytest
import torch


def _snapshot(model):
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def _changed(model, before):
    return sum(not torch.equal(p.detach(), before[n]) for n, p in model.named_parameters() if n in before)


def _step(model, losses):
    total = sum(v.sum() for k, v in losses.items() if "loss" in k and torch.is_tensor(v))
    assert torch.isfinite(total), f"non-finite total loss: {losses}"
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01, momentum=0.9)
    opt.zero_grad()
    total.backward()
    opt.step()
    return total


def test_timm_resnet_step():
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = timm.create_model("resnet18", pretrained=False, num_classes=10)
    before = _snapshot(model)
    x, y = torch.randn(4, 3, 64, 64), torch.tensor([0, 1, 2, 3])
    _step(model, {"loss": torch.nn.functional.cross_entropy(model(x), y)})
    # timm zero-initialises each block's last BN gamma, so only part of the tensors get a gradient at step 1.
    assert _changed(model, before) > 0
    assert not torch.equal(model.fc.weight, before["fc.weight"])


def _mim_config(package, rel):
    from mmengine.config import Config

    pkg = pytest.importorskip(package)
    return Config.fromfile(osp.join(osp.dirname(pkg.__file__), ".mim", "configs", rel))


def test_mmdet_faster_rcnn_iteration_uses_mmcv_ops():
    pytest.importorskip("mmcv.ops")
    from mmdet.registry import MODELS
    from mmdet.structures import DetDataSample
    from mmdet.utils import register_all_modules
    from mmengine.structures import InstanceData

    register_all_modules()
    cfg = _mim_config("mmdet", "_base_/models/faster-rcnn_r50_fpn.py").model
    cfg.backbone.update(depth=18, init_cfg=None)
    cfg.neck.in_channels = [64, 128, 256, 512]
    torch.manual_seed(0)
    model = MODELS.build(cfg)
    model.train()
    sample = DetDataSample(metainfo=dict(img_shape=(96, 96), ori_shape=(96, 96), pad_shape=(96, 96),
                                         scale_factor=(1.0, 1.0), batch_input_shape=(96, 96)))
    sample.gt_instances = InstanceData(bboxes=torch.tensor([[10.0, 12.0, 60.0, 70.0], [40.0, 30.0, 90.0, 80.0]]),
                                       labels=torch.tensor([3, 7]))
    data = model.data_preprocessor(dict(inputs=[torch.randint(0, 255, (3, 96, 96), dtype=torch.uint8)],
                                        data_samples=[sample]), training=True)
    before = _snapshot(model)
    losses = model(**data, mode="loss")
    losses = {k: (sum(v) if isinstance(v, list) else v) for k, v in losses.items()}
    assert {"loss_rpn_cls", "loss_rpn_bbox", "loss_cls", "loss_bbox"} <= set(losses)
    _step(model, losses)
    assert _changed(model, before) > 0


def test_mmseg_fcn_iteration():
    pytest.importorskip("mmcv.ops")
    from mmengine.structures import PixelData
    from mmseg.registry import MODELS
    from mmseg.structures import SegDataSample
    from mmseg.utils import register_all_modules

    register_all_modules()
    cfg = _mim_config("mmseg", "_base_/models/fcn_r50-d8.py")
    model_cfg = cfg.model
    norm = dict(type="BN", requires_grad=True)  # SyncBN needs a process group
    model_cfg.backbone.update(depth=18, norm_cfg=norm, pretrained=None)
    model_cfg.pretrained = None
    model_cfg.decode_head.update(in_channels=512, channels=64, norm_cfg=norm, num_classes=5)
    model_cfg.auxiliary_head.update(in_channels=256, channels=32, norm_cfg=norm, num_classes=5)
    model_cfg.data_preprocessor.size = (64, 64)
    torch.manual_seed(0)
    model = MODELS.build(model_cfg)
    model.train()
    samples = []
    for _ in range(2):
        s = SegDataSample(metainfo=dict(img_shape=(64, 64), ori_shape=(64, 64), pad_shape=(64, 64)))
        s.gt_sem_seg = PixelData(data=torch.randint(0, 5, (1, 64, 64)))
        samples.append(s)
    data = model.data_preprocessor(dict(inputs=[torch.randint(0, 255, (3, 64, 64), dtype=torch.uint8)] * 2,
                                        data_samples=samples), training=True)
    before = _snapshot(model)
    losses = model(**data, mode="loss")
    assert "decode.loss_ce" in losses
    _step(model, losses)
    assert _changed(model, before) > 0


def test_detectron2_faster_rcnn_iteration():
    pytest.importorskip("detectron2")
    from detectron2 import model_zoo
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model
    from detectron2.structures import Boxes, Instances
    from detectron2.utils.events import EventStorage

    cfg = get_cfg()
    cfg.merge_from_file(model_zoo.get_config_file("COCO-Detection/faster_rcnn_R_50_FPN_1x.yaml"))
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.RESNETS.NORM = "BN"
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 10
    torch.manual_seed(0)
    model = build_model(cfg)
    model.train()
    inst = Instances((96, 96))
    inst.gt_boxes = Boxes(torch.tensor([[10.0, 12.0, 60.0, 70.0], [40.0, 30.0, 90.0, 80.0]]))
    inst.gt_classes = torch.tensor([3, 7])
    batch = [{"image": torch.randint(0, 255, (3, 96, 96)).float(), "instances": inst, "height": 96, "width": 96}]
    before = _snapshot(model)
    with EventStorage(0):
        losses = model(batch)
        assert {"loss_rpn_cls", "loss_rpn_loc", "loss_cls", "loss_box_reg"} <= set(losses)
        _step(model, losses)
    assert _changed(model, before) > 0
