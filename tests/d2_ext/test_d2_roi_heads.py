"""LabelSmoothingStandardROIHeads against Detectron2's StandardROIHeads and the paper's smoothing formula."""

import re

import pytest

pytest.importorskip("detectron2")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from detectron2.config import get_cfg  # noqa: E402
from detectron2.layers import ShapeSpec, cat  # noqa: E402
from detectron2.modeling import build_roi_heads  # noqa: E402
from detectron2.structures import Boxes, ImageList, Instances  # noqa: E402
from detectron2.utils.events import EventStorage  # noqa: E402

from d2_ext import add_tricks_config  # noqa: E402
from d2_ext.roi_heads import LabelSmoothingFastRCNNOutputLayers  # noqa: E402

NUM_CLASSES = 5
SIZE = 64
SHAPES = {"p2": ShapeSpec(channels=8, stride=4), "p3": ShapeSpec(channels=8, stride=8)}


def _cfg(name, epsilon=0.0, form="paper"):
    cfg = get_cfg()
    add_tricks_config(cfg)
    cfg.MODEL.ROI_HEADS.NAME = name
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = NUM_CLASSES
    cfg.MODEL.ROI_HEADS.IN_FEATURES = ["p2", "p3"]
    cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 32
    cfg.MODEL.ROI_BOX_HEAD.NAME = "FastRCNNConvFCHead"
    cfg.MODEL.ROI_BOX_HEAD.NUM_FC = 2
    cfg.MODEL.ROI_BOX_HEAD.FC_DIM = 32
    cfg.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION = 7
    cfg.TRICKS.LABEL_SMOOTHING = epsilon
    cfg.TRICKS.LABEL_SMOOTHING_FORM = form
    return cfg


def _build(name, epsilon=0.0, form="paper", seed=0):
    torch.manual_seed(seed)
    heads = build_roi_heads(_cfg(name, epsilon, form), SHAPES)
    return heads.train()


def _random_boxes(generator, count):
    xy = torch.rand(count, 2, generator=generator) * (SIZE - 20)
    wh = torch.rand(count, 2, generator=generator) * 18 + 2
    return torch.cat([xy, xy + wh], dim=1)


@pytest.fixture(scope="module")
def inputs():
    g = torch.Generator().manual_seed(1)
    images = ImageList(torch.zeros(2, 3, SIZE, SIZE), [(SIZE, SIZE), (SIZE, SIZE)])
    features = {name: torch.randn(2, 8, SIZE // s.stride, SIZE // s.stride, generator=g) for name, s in SHAPES.items()}
    proposals, targets = [], []
    for _ in range(2):
        gt = _random_boxes(g, 4)
        jitter = gt.repeat(6, 1) + torch.randn(24, 4, generator=g) * 2
        proposal = Instances((SIZE, SIZE))
        proposal.proposal_boxes = Boxes(torch.cat([jitter, _random_boxes(g, 40)]).clamp(0, SIZE))
        proposal.objectness_logits = torch.randn(64, generator=g)
        target = Instances((SIZE, SIZE))
        target.gt_boxes = Boxes(gt)
        target.gt_classes = torch.randint(0, NUM_CLASSES, (4,), generator=g)
        proposals.append(proposal)
        targets.append(target)
    return images, features, proposals, targets


def _losses(heads, inputs, seed=3):
    torch.manual_seed(seed)  # proposal sampling draws from the global RNG
    with EventStorage():
        _, losses = heads(*inputs)
    return losses


def _predictions(heads, inputs, seed=3):
    """The sampled proposals and box-predictor outputs of one training forward, recomputed step by step."""
    _, features, proposals, targets = inputs
    torch.manual_seed(seed)
    with EventStorage():
        sampled = heads.label_and_sample_proposals(proposals, targets)
    pooled = heads.box_pooler([features[f] for f in heads.box_in_features], [p.proposal_boxes for p in sampled])
    scores, deltas = heads.box_predictor(heads.box_head(pooled))
    return sampled, scores, deltas


def test_same_model_as_standard_roi_heads():
    plain = _build("StandardROIHeads")
    after_plain = torch.rand(3)
    smooth = _build("LabelSmoothingStandardROIHeads", epsilon=0.1)
    after_smooth = torch.rand(3)
    assert isinstance(smooth.box_predictor, LabelSmoothingFastRCNNOutputLayers)
    plain_state, smooth_state = plain.state_dict(), smooth.state_dict()
    assert plain_state.keys() == smooth_state.keys(), "checkpoints stay interchangeable"
    for key, value in plain_state.items():
        torch.testing.assert_close(smooth_state[key], value, rtol=0.0, atol=0.0, msg=f"initial {key}")
    torch.testing.assert_close(after_smooth, after_plain, rtol=0.0, atol=0.0, msg="RNG stream after build")


def test_zero_smoothing_equals_standard_roi_heads(inputs):
    plain = _losses(_build("StandardROIHeads"), inputs)
    smooth = _losses(_build("LabelSmoothingStandardROIHeads", epsilon=0.0), inputs)
    assert plain.keys() == smooth.keys() == {"loss_cls", "loss_box_reg"}
    for key in plain:
        torch.testing.assert_close(smooth[key], plain[key], rtol=0.0, atol=0.0, msg=f"{key} at smoothing 0")


@pytest.mark.parametrize("form", ["paper", "uniform"])
def test_smoothing_follows_the_formula(inputs, form):
    epsilon = 0.1
    plain_heads = _build("StandardROIHeads")
    smooth_heads = _build("LabelSmoothingStandardROIHeads", epsilon=epsilon, form=form)
    with torch.no_grad():  # confident logits (the 0.01-std init is nearly uniform, where smoothing barely matters)
        for heads in (plain_heads, smooth_heads):
            heads.box_predictor.cls_score.weight.mul_(300.0)
    plain = _losses(plain_heads, inputs)
    smooth = _losses(smooth_heads, inputs)
    torch.testing.assert_close(smooth["loss_box_reg"], plain["loss_box_reg"], rtol=0.0, atol=0.0,
                               msg="box regression untouched")

    sampled, scores, _ = _predictions(smooth_heads, inputs)
    gt_classes = cat([p.gt_classes for p in sampled])
    num_classes = scores.shape[1]
    assert num_classes == NUM_CLASSES + 1, "K foreground classes + background"
    assert (gt_classes == NUM_CLASSES).any() and (gt_classes < NUM_CLASSES).any(), "both fg and bg sampled"
    if form == "paper":  # 1 - eps on the true class, eps / (K + 1 - 1) on each other
        q = torch.full_like(scores, epsilon / (num_classes - 1))
        q[torch.arange(len(gt_classes)), gt_classes] = 1 - epsilon
    else:  # eps / (K + 1) everywhere, plus 1 - eps on the true class
        q = torch.full_like(scores, epsilon / num_classes)
        q[torch.arange(len(gt_classes)), gt_classes] += 1 - epsilon
    expected = -(q * F.log_softmax(scores, dim=1)).sum(dim=1).mean()
    torch.testing.assert_close(smooth["loss_cls"], expected, rtol=1e-5, atol=1e-7, msg=f"smoothed loss_cls ({form})")
    plain_ce = F.cross_entropy(scores, gt_classes)
    torch.testing.assert_close(plain["loss_cls"], plain_ce, rtol=1e-5, atol=1e-7, msg="plain loss_cls")
    assert (smooth["loss_cls"] - plain["loss_cls"]).abs() > 0.05, "smoothing changes the loss"


def test_smoothing_backward(inputs):
    heads = _build("LabelSmoothingStandardROIHeads", epsilon=0.1)
    losses = _losses(heads, inputs)
    sum(losses.values()).backward()
    grad = heads.box_predictor.cls_score.weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


@pytest.mark.parametrize(("kwargs", "fragment"), [
    ({"label_smoothing": 1.0}, "label_smoothing=1.0"),
    ({"label_smoothing": -0.1}, "label_smoothing=-0.1"),
    ({"label_smoothing_form": "eps/K"}, "label_smoothing_form='eps/K'"),
])
def test_bad_predictor_arguments(kwargs, fragment):
    cfg = _cfg("StandardROIHeads")
    args = LabelSmoothingFastRCNNOutputLayers.from_config(cfg, ShapeSpec(channels=8))
    args.update(kwargs)
    with pytest.raises(ValueError, match=re.escape(fragment)):
        LabelSmoothingFastRCNNOutputLayers(**args)
