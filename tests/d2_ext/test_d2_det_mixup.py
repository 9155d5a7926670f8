"""Detection mixup and cascade label smoothing in Detectron2: MixWeightRPN and the ROI heads of d2_ext against
Detectron2's own and a hand computation, the batch mixing of d2_ext.build_train_loader, and bad values."""

import re

import pytest

pytest.importorskip("detectron2")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from detectron2.config import get_cfg  # noqa: E402
from detectron2.layers import ShapeSpec, cat  # noqa: E402
from detectron2.modeling import build_proposal_generator, build_roi_heads  # noqa: E402
from detectron2.modeling.proposal_generator import RPN  # noqa: E402
from detectron2.structures import Boxes, ImageList, Instances, pairwise_iou  # noqa: E402
from detectron2.utils.events import EventStorage  # noqa: E402

from d2_ext import add_tricks_config, validate_tricks_config  # noqa: E402
from d2_ext.det_mixup import DetectionMixupLoader, MixWeightRPN, mix_d2_batch  # noqa: E402
from d2_ext.roi_heads import LabelSmoothingFastRCNNOutputLayers  # noqa: E402
from plugins.tricks.detection_mixup import mix_detection_pair, ratio_generator, sample_mix_ratio  # noqa: E402

NUM_CLASSES, SIZE, CHANNELS = 5, 64, 8
SHAPES = {"p2": ShapeSpec(channels=CHANNELS, stride=4), "p3": ShapeSpec(channels=CHANNELS, stride=8)}
WEIGHTS = [torch.tensor([0.3, 0.3, 0.7, 0.7]), torch.tensor([0.9, 0.1, 0.1, 0.9])]


def _cfg(roi_heads="LabelSmoothingStandardROIHeads", epsilon=0.0, proposal_generator="MixWeightRPN"):
    cfg = get_cfg()
    add_tricks_config(cfg)
    cfg.MODEL.PROPOSAL_GENERATOR.NAME = proposal_generator
    cfg.MODEL.RPN.IN_FEATURES = ["p2", "p3"]
    cfg.MODEL.RPN.BATCH_SIZE_PER_IMAGE = 64
    cfg.MODEL.ANCHOR_GENERATOR.SIZES = [[16], [32]]
    cfg.MODEL.ROI_HEADS.NAME = roi_heads
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = NUM_CLASSES
    cfg.MODEL.ROI_HEADS.IN_FEATURES = ["p2", "p3"]
    cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 32
    cfg.MODEL.ROI_BOX_HEAD.NAME = "FastRCNNConvFCHead"
    cfg.MODEL.ROI_BOX_HEAD.NUM_FC = 2
    cfg.MODEL.ROI_BOX_HEAD.FC_DIM = 32
    cfg.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION = 7
    if "Cascade" in roi_heads:  # what Detectron2's cascade yamls set
        cfg.MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG = True
    cfg.TRICKS.LABEL_SMOOTHING = epsilon
    return cfg


def _boxes(generator, count, low=2, high=20):
    xy = torch.rand(count, 2, generator=generator) * (SIZE - high - 1)
    wh = torch.rand(count, 2, generator=generator) * (high - low) + low
    return torch.cat([xy, xy + wh], dim=1)


def _targets(weights=None, seed=5):
    g = torch.Generator().manual_seed(seed)
    targets = []
    for i in range(2):
        target = Instances((SIZE, SIZE))
        target.gt_boxes = Boxes(_boxes(g, 4, 10, 30))
        target.gt_classes = torch.randint(0, NUM_CLASSES, (4,), generator=g)
        if weights is not None:
            target.gt_mix_weights = weights[i]
        targets.append(target)
    return targets


@pytest.fixture(scope="module")
def inputs():
    g = torch.Generator().manual_seed(1)
    images = ImageList(torch.zeros(2, 3, SIZE, SIZE), [(SIZE, SIZE), (SIZE, SIZE)])
    features = {name: torch.randn(2, CHANNELS, SIZE // s.stride, SIZE // s.stride, generator=g)
                for name, s in SHAPES.items()}
    proposals = []
    for _ in range(2):
        proposal = Instances((SIZE, SIZE))
        proposal.proposal_boxes = Boxes(_boxes(g, 64, 4, 32).clamp(0, SIZE))
        proposal.objectness_logits = torch.randn(64, generator=g)
        proposals.append(proposal)
    return images, features, proposals


def _rpn(name, seed=0):
    torch.manual_seed(seed)
    return build_proposal_generator(_cfg(proposal_generator=name), SHAPES).train()


def _rpn_losses(rpn, inputs, targets, seed=3):
    images, features, _ = inputs
    torch.manual_seed(seed)  # anchor sampling draws from the global RNG
    with EventStorage():
        _, losses = rpn(images, features, targets)
    return losses


def test_rpn_without_weights_and_with_unit_weights_is_detectron2s(inputs):
    plain = _rpn_losses(_rpn("RPN"), inputs, _targets())
    ours = _rpn("MixWeightRPN")
    assert isinstance(ours, MixWeightRPN)
    unweighted = _rpn_losses(ours, inputs, _targets())
    ones = _rpn_losses(ours, inputs, _targets([torch.ones(4), torch.ones(4)]))
    for key in plain:
        torch.testing.assert_close(unweighted[key], plain[key], rtol=0, atol=0, msg=f"{key} without gt_mix_weights")
        torch.testing.assert_close(ones[key], plain[key], rtol=0, atol=0, msg=f"{key} with weights 1")


def test_rpn_losses_weight_each_positive_anchor_by_hand(inputs):
    """loss_rpn_cls = sum_valid w_a BCE_a / (B N), loss_rpn_loc = sum_pos w_a |delta_a - target_a|_1 / (B N)."""
    rpn = _rpn("MixWeightRPN")
    images, features, _ = inputs
    targets = _targets(WEIGHTS)
    losses = _rpn_losses(rpn, inputs, targets)

    feats = [features[f] for f in rpn.in_features]
    anchors = rpn.anchor_generator(feats)
    logits, deltas = rpn.rpn_head(feats)
    logits = cat([x.permute(0, 2, 3, 1).flatten(1) for x in logits], dim=1)
    deltas = cat([x.view(x.shape[0], -1, 4, x.shape[-2], x.shape[-1]).permute(0, 3, 4, 1, 2).flatten(1, -2)
                  for x in deltas], dim=1)
    torch.manual_seed(3)  # the same sampling as in the forward above (nothing before it draws)
    with EventStorage():
        gt_labels, matched_boxes = RPN.label_and_sample_anchors(rpn, anchors, targets)
    all_anchors = Boxes.cat(anchors)
    cls_sum, loc_sum = 0.0, 0.0
    for i, target in enumerate(targets):
        matched_idxs, _ = rpn.anchor_matcher(pairwise_iou(target.gt_boxes, all_anchors))
        labels = gt_labels[i]
        w = torch.where(labels == 1, WEIGHTS[i][matched_idxs], torch.ones(len(labels)))
        valid, positive = labels >= 0, labels == 1
        assert positive.any() and (w[positive] != 1).any(), "the case has weighted positive anchors"
        bce = F.binary_cross_entropy_with_logits(logits[i], labels.clamp(min=0).float(), reduction="none")
        cls_sum = cls_sum + (w * bce)[valid].sum()
        target_deltas = rpn.box2box_transform.get_deltas(all_anchors.tensor, matched_boxes[i])
        l1 = (deltas[i] - target_deltas).abs().sum(dim=1)  # MODEL.RPN.SMOOTH_L1_BETA 0: L1
        loc_sum = loc_sum + (w * l1)[positive].sum()
    normalizer = rpn.batch_size_per_image * len(targets)
    torch.testing.assert_close(losses["loss_rpn_cls"], cls_sum / normalizer, rtol=1e-5, atol=1e-7, msg="objectness")
    torch.testing.assert_close(losses["loss_rpn_loc"], loc_sum / normalizer, rtol=1e-5, atol=1e-7, msg="boxes")


def _heads(name, epsilon=0.0, seed=0):
    torch.manual_seed(seed)
    return build_roi_heads(_cfg(name, epsilon), SHAPES).train()


def _roi_run(heads, inputs, targets, seed=3):
    """The losses of one training forward and, per stage, the (predictions, proposals) its losses saw."""
    images, features, proposals = inputs
    predictors = heads.box_predictor if isinstance(heads.box_predictor, torch.nn.ModuleList) else [heads.box_predictor]
    seen = []
    for predictor in predictors:
        def recording(predictions, stage_proposals, _losses=predictor.losses):
            seen.append((predictions, stage_proposals))
            return _losses(predictions, stage_proposals)
        predictor.losses = recording
    fresh = []
    for p in proposals:
        copy = Instances(p.image_size)
        copy.proposal_boxes, copy.objectness_logits = p.proposal_boxes.clone(), p.objectness_logits.clone()
        fresh.append(copy)
    torch.manual_seed(seed)  # proposal sampling draws from the global RNG
    with EventStorage():
        _, losses = heads(images, features, fresh, targets)
    for predictor in predictors:
        del predictor.losses
    return losses, seen


@pytest.mark.parametrize("plain, ours", [("StandardROIHeads", "LabelSmoothingStandardROIHeads"),
                                         ("CascadeROIHeads", "LabelSmoothingCascadeROIHeads")])
def test_roi_heads_at_zero_smoothing_and_unit_weights_are_detectron2s(inputs, plain, ours):
    reference = _heads(plain)
    after_reference = torch.rand(3)
    heads = _heads(ours)
    after_ours = torch.rand(3)
    torch.testing.assert_close(after_ours, after_reference, rtol=0, atol=0, msg="the same random stream after build")
    for key, value in reference.state_dict().items():
        torch.testing.assert_close(heads.state_dict()[key], value, rtol=0, atol=0, msg=f"initial {key}")
    expected, _ = _roi_run(reference, inputs, _targets())
    losses, _ = _roi_run(heads, inputs, _targets())
    assert losses.keys() == expected.keys()
    for key in expected:
        torch.testing.assert_close(losses[key], expected[key], rtol=0, atol=0, msg=f"{key} without gt_mix_weights")
    # unit weights take the weighted path (a weighted sum over N instead of torch's mean): equal up to rounding
    ones, _ = _roi_run(heads, inputs, _targets([torch.ones(4), torch.ones(4)]))
    for key in expected:
        torch.testing.assert_close(ones[key], expected[key], rtol=1e-6, atol=0, msg=f"{key} with weights 1")


@pytest.mark.parametrize("name", ["LabelSmoothingStandardROIHeads", "LabelSmoothingCascadeROIHeads"])
@pytest.mark.parametrize("epsilon, form, weighted", [(0.0, "paper", True), (0.1, "paper", False),
                                                      (0.1, "uniform", True), (0.1, "paper", True)])
def test_every_stage_smooths_and_weights_by_hand(inputs, name, epsilon, form, weighted):
    """Per stage: loss_cls = sum_i w_i CE(q_i, p_i) / N with q the smoothed target over K + 1 classes (background
    = K), loss_box_reg = sum_fg w_i |delta_i - target_i|_1 / N; w = the matched box's weight, background 1."""
    heads = _heads(name, epsilon)
    for predictor in heads.box_predictor if "Cascade" in name else [heads.box_predictor]:
        predictor.label_smoothing_form = form
        with torch.no_grad():  # confident logits, where smoothing matters
            predictor.cls_score.weight.mul_(300.0)
    targets = _targets(WEIGHTS if weighted else None)
    losses, seen = _roi_run(heads, inputs, targets)
    assert len(seen) == (3 if "Cascade" in name else 1)
    for stage, ((scores, deltas), proposals) in enumerate(seen):
        predictor = heads.box_predictor[stage] if "Cascade" in name else heads.box_predictor
        gt_classes = cat([p.gt_classes for p in proposals])
        weights = []
        for i, (p, target) in enumerate(zip(proposals, targets)):  # an independent re-match to the ground truth
            matched = pairwise_iou(target.gt_boxes, p.proposal_boxes).argmax(dim=0)
            fg = p.gt_classes < NUM_CLASSES
            box_weights = WEIGHTS[i] if weighted else torch.ones(4)
            weights.append(torch.where(fg, box_weights[matched], torch.ones(len(p))))
        w = cat(weights)
        n, k1 = scores.shape
        if form == "paper":
            q = torch.full_like(scores, epsilon / (k1 - 1))
            q[torch.arange(n), gt_classes] = 1 - epsilon
        else:
            q = torch.full_like(scores, epsilon / k1)
            q[torch.arange(n), gt_classes] += 1 - epsilon
        expected_cls = (w * -(q * F.log_softmax(scores, dim=1)).sum(dim=1)).sum() / n
        fg = gt_classes < NUM_CLASSES
        boxes = cat([p.proposal_boxes.tensor for p in proposals])
        gt_boxes = cat([p.gt_boxes.tensor for p in proposals])
        target_deltas = predictor.box2box_transform.get_deltas(boxes[fg], gt_boxes[fg])
        pred = deltas[fg] if deltas.shape[1] == 4 else deltas.view(n, NUM_CLASSES, 4)[fg, gt_classes[fg]]
        expected_box = (w[fg] * (pred - target_deltas).abs().sum(dim=1)).sum() / n
        suffix = f"_stage{stage}" if "Cascade" in name else ""
        torch.testing.assert_close(losses[f"loss_cls{suffix}"], expected_cls, rtol=1e-5, atol=1e-7,
                                   msg=f"stage {stage} loss_cls")
        torch.testing.assert_close(losses[f"loss_box_reg{suffix}"], expected_box, rtol=1e-5, atol=1e-6,
                                   msg=f"stage {stage} loss_box_reg")
        assert fg.any() and (~fg).any() and (w != 1).any() == weighted


def _batch(generator):
    batch = []
    for h, w in ((40, 56), (48, 32), (24, 24)):
        instances = Instances((h, w))
        instances.gt_boxes = Boxes(_boxes(generator, 3) * 0.3)
        instances.gt_classes = torch.randint(0, NUM_CLASSES, (3,), generator=generator)
        batch.append({"image": torch.randint(0, 256, (3, h, w), generator=generator, dtype=torch.uint8),
                      "instances": instances, "height": h, "width": w})
    return batch


def test_mix_d2_batch_mixes_in_pairs_with_the_plugins_formula():
    batch = _batch(torch.Generator().manual_seed(0))
    mixed = mix_d2_batch(batch, 1.5, ratio_generator(0, 4))
    g = ratio_generator(0, 4)
    ratios = [sample_mix_ratio(1.5, g), None, sample_mix_ratio(1.5, g)]
    for i, j in ((0, 2), (2, 0)):
        a, b = batch[i]["instances"], batch[j]["instances"]
        expected = mix_detection_pair(batch[i]["image"], a.gt_boxes.tensor, a.gt_classes,
                                      batch[j]["image"], b.gt_boxes.tensor, b.gt_classes, ratios[i])
        torch.testing.assert_close(mixed[i]["image"], expected.image, rtol=0, atol=0, msg=f"image {i}")
        torch.testing.assert_close(mixed[i]["instances"].gt_boxes.tensor, expected.boxes, rtol=0, atol=0)
        torch.testing.assert_close(mixed[i]["instances"].gt_mix_weights, expected.weights, rtol=0, atol=0)
        assert mixed[i]["instances"].image_size == tuple(expected.image.shape[1:])
    assert mixed[1] is batch[1], "the middle sample of an odd batch is left as it is"
    assert not batch[0]["instances"].has("gt_mix_weights"), "the loader's dicts are not changed"


def test_the_loader_mixes_until_the_stop_fraction():
    batches = [_batch(torch.Generator().manual_seed(k)) for k in range(4)]
    loader = DetectionMixupLoader(batches, alpha=1.5, max_iter=4, stop_fraction=0.5, seed=0)
    mixed = [[d["instances"].has("gt_mix_weights") for d in batch] for batch in loader]
    assert mixed == [[True, False, True]] * 2 + [[False, False, False]] * 2
    fixed = DetectionMixupLoader(batches[:1], alpha=1.5, max_iter=4, seed=0, fixed_ratio=0.5)
    [batch] = list(fixed)
    torch.testing.assert_close(batch[0]["instances"].gt_mix_weights, torch.full((6,), 0.5), rtol=0, atol=0)


@pytest.mark.parametrize("key, value, accepted", [
    ("DET_MIXUP_ALPHA", -1.5, "a finite number > 0 (the paper: 1.5), or 0 for no detection mixup"),
    ("DET_MIXUP_STOP_FRACTION", 0.0, "a number in (0, 1]"),
    ("DET_MIXUP_STOP_FRACTION", 1.5, "a number in (0, 1]"),
    ("DET_MIXUP_FIXED_RATIO", 1.0, "0 (ratios drawn from Beta(alpha, alpha)) or a number in (0, 1)"),
])
def test_bad_keys_are_named(key, value, accepted):
    cfg = _cfg()
    cfg.TRICKS[key] = value
    with pytest.raises(ValueError, match=re.escape(f"cfg.TRICKS.{key}={value!r} is not accepted; accepted: {accepted}")):
        validate_tricks_config(cfg)


def test_a_weight_outside_zero_one_names_the_field(inputs):
    targets = _targets([torch.tensor([0.5, -0.2, 0.5, 0.5]), torch.ones(4)])
    with pytest.raises(ValueError, match=re.escape("Instances.gt_mix_weights holds -0.2")):
        _rpn_losses(_rpn("MixWeightRPN"), inputs, targets)


def test_a_batch_of_one_has_no_partner():
    with pytest.raises(ValueError, match=re.escape("accepted: SOLVER.IMS_PER_BATCH >= 2 images per process")):
        mix_d2_batch(_batch(torch.Generator().manual_seed(0))[:1], 1.5)


def test_cascade_predictors_are_smoothing_ones():
    heads = _heads("LabelSmoothingCascadeROIHeads", 0.1)
    assert len(heads.box_predictor) == 3
    assert all(isinstance(p, LabelSmoothingFastRCNNOutputLayers) and p.label_smoothing == 0.1
               for p in heads.box_predictor)
    weights = [tuple(p.box2box_transform.weights) for p in heads.box_predictor]
    assert weights == [tuple(w) for w in _cfg().MODEL.ROI_BOX_CASCADE_HEAD.BBOX_REG_WEIGHTS], "each stage's own"


def test_a_recipe_sets_the_detection_mixup_keys(tmp_path):
    from d2_ext import apply_recipe

    recipe = tmp_path / "det_mixup.yaml"
    recipe.write_text("det_mixup_alpha: 1.5\ndet_mixup_stop_fraction: 0.8\ndet_mixup_fixed_ratio: 0.5\n")
    cfg = _cfg()
    cfg.TRICKS.RECIPE, cfg.TRICKS.ITERS_PER_EPOCH = str(recipe), 10
    cfg.SOLVER.STEPS = ()
    apply_recipe(cfg, ["TRICKS.DET_MIXUP_STOP_FRACTION", "0.5"])
    assert (cfg.TRICKS.DET_MIXUP_ALPHA, cfg.TRICKS.DET_MIXUP_STOP_FRACTION) == (1.5, 0.5), "the command line wins"
    assert cfg.TRICKS.DET_MIXUP_FIXED_RATIO == 0.5


def test_a_sigmoid_box_classifier_is_refused_by_name(inputs):
    """Detectron2 main's MODEL.ROI_BOX_HEAD.USE_SIGMOID_CE (absent from v0.6: set on the predictor here)."""
    heads = _heads("LabelSmoothingStandardROIHeads")
    heads.box_predictor.use_sigmoid_ce = True
    with pytest.raises(ValueError, match=re.escape("accepted: MODEL.ROI_BOX_HEAD.USE_SIGMOID_CE False")):
        _roi_run(heads, inputs, _targets(WEIGHTS))
