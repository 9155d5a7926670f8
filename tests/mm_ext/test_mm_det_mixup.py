"""Detection mixup in MMDetection: the heads of mm_ext.det_mixup against MMDetection's own and a hand computation,
the batch mixing of DetectionMixupHook, and stock configs that switch it on by ``type`` and train through
``Runner.from_cfg`` (what mmdet's tools/train.py runs)."""

# ruff: noqa: E402  (imports follow pytest.importorskip)

import copy
import importlib.util
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mmdet")

import torch
import torch.nn.functional as F
from mmdet.structures import DetDataSample
from mmdet.structures.bbox import HorizontalBoxes
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.registry import MODELS, DefaultScope
from mmengine.runner import Runner
from mmengine.structures import InstanceData

import mm_ext  # noqa: F401  registration
from mm_ext.det_mixup import DetectionMixupHook, MixWeightRPNHead, mix_det_batch
from plugins.tricks.detection_mixup import mix_detection_pair, ratio_generator, sample_mix_ratio

FASTER = "mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py"
CASCADE = "mmdet::cascade_rcnn/cascade-rcnn_r50_fpn_1x_coco.py"
SIZE, CHANNELS, NUM_CLASSES = 64, 8, 5


def _stock(base):
    return Config.fromstring(f"_base_ = '{base}'\n", ".py")


def _build(cfg_dict, seed=0):
    torch.manual_seed(seed)
    with DefaultScope.overwrite_default_scope("mmdet"):
        return MODELS.build(copy.deepcopy(cfg_dict)).train()


def _rpn_dict(cfg, type_):
    head = copy.deepcopy(cfg.model.rpn_head)
    head.update(type=type_, in_channels=CHANNELS, feat_channels=CHANNELS,
                train_cfg=cfg.model.train_cfg.rpn, test_cfg=cfg.model.test_cfg.rpn)
    return head


def _roi_dict(cfg, type_, **loss_cls):
    head = copy.deepcopy(cfg.model.roi_head)
    head.type = type_
    head.bbox_roi_extractor.out_channels = CHANNELS
    heads = head.bbox_head if isinstance(head.bbox_head, list) else [head.bbox_head]
    for bbox_head in heads:
        bbox_head.update(in_channels=CHANNELS, fc_out_channels=16, num_classes=NUM_CLASSES)
        if loss_cls:
            bbox_head.loss_cls = dict(bbox_head.loss_cls, **loss_cls)
    head.update(train_cfg=cfg.model.train_cfg.rcnn, test_cfg=cfg.model.test_cfg.rcnn)
    return head


def _features(generator, levels=5):
    return tuple(torch.randn(2, CHANNELS, SIZE // 2 ** (k + 2), SIZE // 2 ** (k + 2), generator=generator)
                 for k in range(levels))


def _boxes(generator, count):
    xy = torch.rand(count, 2, generator=generator) * (SIZE - 24)
    wh = torch.rand(count, 2, generator=generator) * 20 + 4
    return torch.cat([xy, xy + wh], dim=1)


def _samples(generator, weights=None):
    samples = []
    for i in range(2):
        sample = DetDataSample(metainfo=dict(img_shape=(SIZE, SIZE), pad_shape=(SIZE, SIZE),
                                             batch_input_shape=(SIZE, SIZE), scale_factor=(1.0, 1.0)))
        # tensors, as DetDataPreprocessor (boxtype2tensor) hands them to the heads
        gt = InstanceData(bboxes=_boxes(generator, 4),
                          labels=torch.randint(0, NUM_CLASSES, (4,), generator=generator))
        if weights is not None:
            gt.mix_weights = weights[i]
        sample.gt_instances = gt
        samples.append(sample)
    return samples


WEIGHTS = [torch.tensor([0.3, 0.3, 0.7, 0.7]), torch.tensor([0.9, 0.1, 0.1, 0.9])]


@pytest.fixture(scope="module")
def inputs():
    g = torch.Generator().manual_seed(0)
    return _features(g), _boxes(g, 60), _boxes(g, 60), torch.Generator().manual_seed(1)


def _rpn_losses(head, features, samples, seed=3):
    for sample in samples:  # as TwoStageDetector hands the RPN its ground truth: one class
        sample.gt_instances.labels = torch.zeros_like(sample.gt_instances.labels)
    torch.manual_seed(seed)  # the anchor sampler draws from the global RNG
    losses = head.loss(features, samples)
    return {key: sum(value) for key, value in losses.items()}


def test_rpn_without_weights_and_with_unit_weights_is_mmdets(inputs):
    cfg = _stock(FASTER)
    features = inputs[0]
    plain = _rpn_losses(_build(_rpn_dict(cfg, "RPNHead")), features, _samples(torch.Generator().manual_seed(5)))
    ours = _build(_rpn_dict(cfg, "MixWeightRPNHead"))
    assert isinstance(ours, MixWeightRPNHead)
    unweighted = _rpn_losses(ours, features, _samples(torch.Generator().manual_seed(5)))
    ones = _rpn_losses(ours, features, _samples(torch.Generator().manual_seed(5), [torch.ones(4), torch.ones(4)]))
    for key in plain:
        torch.testing.assert_close(unweighted[key], plain[key], rtol=0, atol=0, msg=f"{key} without mix_weights")
        torch.testing.assert_close(ones[key], plain[key], rtol=0, atol=0, msg=f"{key} with weights 1")


def test_rpn_anchor_weights_are_the_matched_box_weights(inputs):
    """Each positive anchor's label and box weights are its matched box's weight; every other anchor keeps its own."""
    cfg = _stock(FASTER)
    head = _build(_rpn_dict(cfg, "MixWeightRPNHead"))
    g = torch.Generator().manual_seed(0)
    anchors = torch.cat(head.prior_generator.grid_priors([(16, 16), (8, 8), (4, 4), (2, 2), (1, 1)], device="cpu"))
    valid = torch.ones(len(anchors), dtype=torch.bool)
    sample = _samples(g, WEIGHTS)[0]
    sample.gt_instances.bboxes = torch.tensor(  # sized like the anchors (32 px and more)
        [[0.0, 0, 32, 32], [30, 4, 62, 40], [10, 20, 58, 60], [2, 30, 30, 63]])
    sample.gt_instances.labels = torch.zeros(4, dtype=torch.long)
    torch.manual_seed(7)
    plain = super(MixWeightRPNHead, head)._get_targets_single(anchors, valid, sample.gt_instances, sample.metainfo)
    torch.manual_seed(7)
    ours = head._get_targets_single(anchors, valid, sample.gt_instances, sample.metainfo)
    _, plain_lw, _, plain_bw, pos_inds, _, result = plain
    inside = torch.nonzero(
        (anchors[:, 0] >= 0) & (anchors[:, 1] >= 0) & (anchors[:, 2] < SIZE) & (anchors[:, 3] < SIZE)
    ).squeeze(1) if head.train_cfg["allowed_border"] == 0 else torch.arange(len(anchors))
    expected = torch.ones(len(anchors))
    for k, gt_index in zip(pos_inds.tolist(), result.pos_assigned_gt_inds.tolist()):
        expected[inside[k]] = WEIGHTS[0][gt_index]
    assert len(pos_inds) > 0 and (expected != 1).any(), "the case has weighted positives"
    torch.testing.assert_close(ours[1], plain_lw * expected, rtol=0, atol=0, msg="label weights")
    torch.testing.assert_close(ours[3], plain_bw * expected[:, None], rtol=0, atol=0, msg="bbox weights")


def _roi_run(head, inputs, samples, seed=3):
    """The losses of one training forward and what the box loss saw (the bbox results and sampling results)."""
    features, proposals_a, proposals_b, _ = inputs
    seen = {}
    bbox_loss = head.bbox_loss

    def recording(*args):
        out = bbox_loss(*args)
        seen.setdefault("calls", []).append((args, out))
        return out

    head.bbox_loss = recording
    rpn_results = [InstanceData(bboxes=p.clone(), scores=torch.ones(len(p)), labels=torch.zeros(len(p), dtype=torch.long))
                   for p in (proposals_a, proposals_b)]
    torch.manual_seed(seed)  # the RoI sampler draws from the global RNG
    losses = head.loss(features[:4], rpn_results, samples)
    del head.bbox_loss
    return losses, seen["calls"]


@pytest.mark.parametrize("base, plain_type, our_type", [
    (FASTER, "StandardRoIHead", "MixWeightStandardRoIHead"),
    (CASCADE, "CascadeRoIHead", "MixWeightCascadeRoIHead"),
])
def test_roi_heads_without_weights_are_mmdets(inputs, base, plain_type, our_type):
    cfg = _stock(base)
    plain, _ = _roi_run(_build(_roi_dict(cfg, plain_type)), inputs, _samples(torch.Generator().manual_seed(5)))
    ours, _ = _roi_run(_build(_roi_dict(cfg, our_type)), inputs, _samples(torch.Generator().manual_seed(5)))
    ones, _ = _roi_run(_build(_roi_dict(cfg, our_type)), inputs,
                       _samples(torch.Generator().manual_seed(5), [torch.ones(4), torch.ones(4)]))
    assert plain.keys() == ours.keys() == ones.keys()
    for key in plain:
        torch.testing.assert_close(ours[key], plain[key], rtol=0, atol=0, msg=f"{key} without mix_weights")
        torch.testing.assert_close(ones[key], plain[key], rtol=0, atol=0, msg=f"{key} with weights 1")


@pytest.mark.parametrize("base, our_type", [(FASTER, "MixWeightStandardRoIHead"),
                                            (CASCADE, "MixWeightCascadeRoIHead")])
@pytest.mark.parametrize("epsilon, weighted", [(0.0, True), (0.1, True), (0.1, False)])
def test_roi_box_losses_weight_each_proposal_by_hand(inputs, base, our_type, epsilon, weighted):
    """loss_cls = sum_i w_i CE_i / N and loss_bbox = sum_pos w_i L(pred_i - target_i) / N, every stage (L: the
    config's L1 or smooth L1 summed over the four deltas)."""
    cfg = _stock(base)
    extra = dict(type="LabelSmoothingCrossEntropyLoss", epsilon=epsilon) if epsilon else {}
    head = _build(_roi_dict(cfg, our_type, **extra))
    box_weights = WEIGHTS if weighted else [torch.ones(4), torch.ones(4)]
    losses, calls = _roi_run(head, inputs, _samples(torch.Generator().manual_seed(5), WEIGHTS if weighted else None))
    bbox_heads = head.bbox_head if isinstance(head.bbox_head, torch.nn.ModuleList) else [head.bbox_head]
    assert len(calls) == len(bbox_heads)
    for stage, ((*_, sampling_results), results) in enumerate(calls):
        bbox_head = bbox_heads[stage]
        scores, deltas = results["cls_score"], results["bbox_pred"]
        weights, labels, pos_rows, targets = [], [], [], []
        row = 0
        for image, res in enumerate(sampling_results):
            for k in range(len(res.pos_inds)):
                weights.append(float(box_weights[image][res.pos_assigned_gt_inds[k]]))
                labels.append(int(res.pos_gt_labels[k]))
                pos_rows.append(row + k)
            targets.append(bbox_head.bbox_coder.encode(res.pos_priors, res.pos_gt_bboxes))
            weights += [1.0] * len(res.neg_inds)
            labels += [NUM_CLASSES] * len(res.neg_inds)
            row += len(res.pos_inds) + len(res.neg_inds)
        w, labels = torch.tensor(weights), torch.tensor(labels)
        n = len(labels)
        q = torch.full_like(scores, epsilon / NUM_CLASSES)  # the paper's form over K + 1 classes
        q[torch.arange(n), labels] = 1 - epsilon
        per_roi = -(q * F.log_softmax(scores, dim=1)).sum(dim=1)
        expected_cls = (w * per_roi).sum() / n
        pos_rows = torch.tensor(pos_rows)
        pred = deltas[pos_rows] if bbox_head.reg_class_agnostic else deltas.view(n, NUM_CLASSES, 4)[pos_rows, labels[pos_rows]]
        diff = (pred - torch.cat(targets)).abs()
        beta = getattr(bbox_head.loss_bbox, "beta", None)  # Cascade R-CNN's stages: SmoothL1Loss; Faster's: L1Loss
        if beta is not None:
            diff = torch.where(diff < beta, 0.5 * diff * diff / beta, diff - 0.5 * beta)
        per_box = diff.sum(dim=1)
        expected_box = (w[pos_rows] * per_box).sum() / n
        suffix = f"s{stage}." if len(bbox_heads) > 1 else ""
        stage_weight = head.stage_loss_weights[stage] if len(bbox_heads) > 1 else 1.0
        torch.testing.assert_close(losses[f"{suffix}loss_cls"], stage_weight * expected_cls, rtol=1e-5, atol=1e-7,
                                   msg=f"stage {stage} loss_cls")
        torch.testing.assert_close(losses[f"{suffix}loss_bbox"], stage_weight * expected_box, rtol=1e-5, atol=1e-7,
                                   msg=f"stage {stage} loss_bbox")
        assert (w == 1).any() and (w != 1).any() == weighted, "weighted foreground and unweighted background"


def _batch(generator):
    images = [torch.randint(0, 256, (3, 40, 56), generator=generator, dtype=torch.uint8),
              torch.randint(0, 256, (3, 48, 32), generator=generator, dtype=torch.uint8),
              torch.randint(0, 256, (3, 24, 24), generator=generator, dtype=torch.uint8)]
    samples = []
    for image in images:
        sample = DetDataSample(metainfo=dict(img_shape=tuple(image.shape[1:])))
        boxes = _boxes(generator, 3) * 0.3
        sample.gt_instances = InstanceData(bboxes=HorizontalBoxes(boxes),
                                           labels=torch.randint(0, NUM_CLASSES, (3,), generator=generator))
        samples.append(sample)
    return dict(inputs=images, data_samples=samples)


def test_mix_det_batch_mixes_in_pairs_with_the_plugins_formula():
    batch = _batch(torch.Generator().manual_seed(0))
    original = dict(inputs=list(batch["inputs"]), data_samples=list(batch["data_samples"]))
    ratios = mix_det_batch(batch, 1.5, ratio_generator(0, 4))
    g = ratio_generator(0, 4)
    expected_ratios = [sample_mix_ratio(1.5, g), None, sample_mix_ratio(1.5, g)]
    assert ratios == expected_ratios
    for i, j in ((0, 2), (2, 0)):
        a, b = original["data_samples"][i].gt_instances, original["data_samples"][j].gt_instances
        expected = mix_detection_pair(original["inputs"][i], a.bboxes.tensor, a.labels,
                                      original["inputs"][j], b.bboxes.tensor, b.labels, ratios[i])
        gt = batch["data_samples"][i].gt_instances
        torch.testing.assert_close(batch["inputs"][i], expected.image, rtol=0, atol=0, msg=f"image {i}")
        torch.testing.assert_close(gt.bboxes.tensor, expected.boxes, rtol=0, atol=0, msg=f"boxes {i}")
        torch.testing.assert_close(gt.mix_weights, expected.weights, rtol=0, atol=0, msg=f"weights {i}")
        assert isinstance(gt.bboxes, HorizontalBoxes)
        assert batch["data_samples"][i].img_shape == tuple(expected.image.shape[1:])
    assert batch["inputs"][1] is original["inputs"][1], "the middle sample of an odd batch is left as it is"
    assert "mix_weights" not in original["data_samples"][0].gt_instances, "the loader's samples are not changed"


@pytest.mark.parametrize("kwargs, message", [
    (dict(alpha=0), "DetectionMixupHook alpha=0 is not accepted; accepted: a finite number > 0"),
    (dict(alpha=-1.5), "DetectionMixupHook alpha=-1.5 is not accepted; accepted: a finite number > 0"),
    (dict(stop_fraction=0.0), "DetectionMixupHook stop_fraction=0.0 is not accepted; accepted: a number in (0, 1]"),
    (dict(fixed_ratio=1.0), "DetectionMixupHook fixed_ratio=1.0 is not accepted; accepted: a number in (0, 1)"),
])
def test_bad_hook_values_name_the_argument(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        DetectionMixupHook(**kwargs)


def test_a_weight_outside_zero_one_names_the_field(inputs):
    cfg = _stock(FASTER)
    samples = _samples(torch.Generator().manual_seed(5), [torch.tensor([0.5, 1.5, 0.5, 0.5]), torch.ones(4)])
    with pytest.raises(ValueError, match=re.escape("gt_instances.mix_weights holds 1.5, which is not accepted")):
        _roi_run(_build(_roi_dict(cfg, "MixWeightStandardRoIHead")), inputs, samples)


def test_a_fixed_ratio_weighs_every_box_by_it():
    batch = _batch(torch.Generator().manual_seed(0))
    assert mix_det_batch(batch, 1.5, ratio_generator(0, 0), fixed_ratio=0.5) == [0.5, None, 0.5]
    torch.testing.assert_close(batch["data_samples"][0].gt_instances.mix_weights, torch.full((6,), 0.5), rtol=0, atol=0)


def test_a_batch_of_one_has_no_partner():
    batch = _batch(torch.Generator().manual_seed(0))
    batch = dict(inputs=batch["inputs"][:1], data_samples=batch["data_samples"][:1])
    with pytest.raises(ValueError, match="accepted: train_dataloader.batch_size >= 2"):
        mix_det_batch(batch, 1.5)


def _model(base, **types):
    """A small model of a stock config (ResNet-18, no pretrained weights) with head types swapped."""
    cfg = _stock(base)
    cfg.model.backbone.update(depth=18, init_cfg=None)
    cfg.model.neck.in_channels = [64, 128, 256, 512]
    for head, type_ in types.items():
        cfg.model[head].type = type_
    with DefaultScope.overwrite_default_scope("mmdet"):
        return MODELS.build(cfg.model)


@pytest.mark.parametrize("base, types, needle", [
    ("mmdet::retinanet/retinanet_r50_fpn_1x_coco.py", {}, "is not accepted for RetinaNet: it has no RoI classifier"),
    (FASTER, dict(roi_head="MixWeightStandardRoIHead"), "needs model.rpn_head.type='MixWeightRPNHead', got RPNHead"),
    (FASTER, dict(rpn_head="MixWeightRPNHead"), "needs model.roi_head.type='MixWeightStandardRoIHead'"),
])
def test_the_hook_refuses_heads_that_would_ignore_the_weights(base, types, needle):
    runner = type("Runner", (), {})()  # before_train reads runner.model only
    runner.model = _model(base, **types)
    with pytest.raises(ValueError, match=re.escape(needle)):
        DetectionMixupHook().before_train(runner)


def test_loss_is_finite_and_differs_with_mixing(inputs):
    """Guard for the tests above: the weights change the losses (a no-op weighting would pass them trivially)."""
    cfg = _stock(FASTER)
    plain, _ = _roi_run(_build(_roi_dict(cfg, "MixWeightStandardRoIHead")), inputs,
                        _samples(torch.Generator().manual_seed(5)))
    weighted, _ = _roi_run(_build(_roi_dict(cfg, "MixWeightStandardRoIHead")), inputs,
                           _samples(torch.Generator().manual_seed(5), WEIGHTS))
    assert all(math.isfinite(float(v)) for v in weighted.values() if v.numel() == 1)
    assert abs(float(weighted["loss_cls"]) - float(plain["loss_cls"])) > 1e-4


ROOT = Path(__file__).resolve().parents[2]
USER_CONFIG = Path(__file__).with_name("user_configs") / "faster-rcnn_timm-r26nd_fpn_det-mixup_1x_coco.py"
SCENES_DATA = Path(mm_ext.__file__).parent / "configs" / "faster-rcnn_timm-r26nd_fpn_baseline_fashion-scenes.py"
TIMM_BACKBONE = dict(_delete_=True, type="TimmTransferBackbone", model_name="tricks_resnet26nd", checkpoint=None,
                     small_input=False, frozen_stages=1, norm_eval=True)


def _on_tiny_data(cfg, work_dir, iters):
    """The config on 4 tiny fashion scenes, batch 2, ``iters`` iterations, no evaluation (as a user points a
    config at their data), leaving the model and the hooks as written."""
    data = Config.fromfile(str(SCENES_DATA))
    cfg.train_dataloader.dataset = data.train_dataloader.dataset
    cfg.train_dataloader.dataset.indices = 4
    cfg.train_dataloader.update(batch_size=2, num_workers=0, persistent_workers=False)
    for key in ("val_dataloader", "val_cfg", "val_evaluator", "test_dataloader", "test_cfg", "test_evaluator"):
        cfg[key] = None
    cfg.train_cfg = dict(type="IterBasedTrainLoop", max_iters=iters, val_interval=iters)
    cfg.param_scheduler = [dict(type="LinearLR", start_factor=0.1, by_epoch=False, begin=0, end=iters)]
    cfg.default_hooks.checkpoint.update(interval=iters, by_epoch=False)
    cfg.default_hooks.logger.update(interval=1)
    cfg.work_dir = str(work_dir)
    return cfg


class MixProbe(Hook):
    """After DetectionMixupHook (lower priority): whether each batch reached the model mixed, and the losses."""

    priority = "LOW"

    def __init__(self):
        self.mixed, self.losses = [], []

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        self.mixed.append(["mix_weights" in s.gt_instances for s in data_batch["data_samples"]])

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        self.losses.append({k: float(v) for k, v in outputs.items() if "loss" in k})


def _train(cfg):
    runner = Runner.from_cfg(cfg)  # what mmdet's tools/train.py does with the loaded config
    probe = MixProbe()
    runner.register_hook(probe)
    runner.train()
    return runner, probe


@pytest.mark.slow
def test_user_config_mixes_until_stop_fraction_through_runner_from_cfg(fashion_scenes, monkeypatch, tmp_path):
    monkeypatch.setenv("FASHION_SCENES_ROOT", f"{fashion_scenes}/")
    cfg = Config.fromfile(str(USER_CONFIG))
    cfg.model.backbone.checkpoint = None  # the user's export path is theirs; timm's initialisation here
    cfg.custom_hooks[-1].stop_fraction = 0.5
    runner, probe = _train(_on_tiny_data(cfg, tmp_path, iters=2))
    model = runner.model
    assert type(model.rpn_head).__name__ == "MixWeightRPNHead"
    assert model.roi_head.bbox_head.loss_cls.epsilon == 0.1 and model.roi_head.bbox_head.num_classes == 80
    assert probe.mixed == [[True, True], [False, False]], "mixed before stop_fraction x max_iters, not after"
    assert all(math.isfinite(v) for losses in probe.losses for v in losses.values()), probe.losses
    assert (tmp_path / "lr_per_step.csv").is_file(), "the config's other hooks ran"


@pytest.mark.slow
def test_stock_cascade_config_smooths_and_mixes_every_stage_by_type_swaps(fashion_scenes, monkeypatch, tmp_path):
    """Cascade R-CNN: the loss_cls of each stage and the two heads swapped by type alone (as --cfg-options does)."""
    monkeypatch.setenv("FASHION_SCENES_ROOT", f"{fashion_scenes}/")
    cfg = _stock(CASCADE)
    cfg.merge_from_dict({
        "custom_imports": dict(imports=["mm_ext"], allow_failed_imports=False),
        "custom_hooks": [dict(type="DetectionMixupHook", alpha=1.5)],
        "model.backbone": TIMM_BACKBONE,
        "model.neck.in_channels": [64, 128, 256, 512],
        "model.rpn_head.type": "MixWeightRPNHead",
        "model.roi_head.type": "MixWeightCascadeRoIHead",
        **{f"model.roi_head.bbox_head.{k}.loss_cls.type": "LabelSmoothingCrossEntropyLoss" for k in range(3)},
    })
    runner, probe = _train(_on_tiny_data(cfg, tmp_path, iters=1))
    heads = runner.model.roi_head.bbox_head
    assert [type(h.loss_cls).__name__ for h in heads] == ["LabelSmoothingCrossEntropyLoss"] * 3
    assert [h.loss_cls.use_sigmoid for h in heads] == [False] * 3 and [h.loss_cls.loss_weight for h in heads] == [1.0] * 3
    assert probe.mixed == [[True, True]]
    assert {f"s{k}.loss_cls" for k in range(3)} <= probe.losses[0].keys()
    assert all(math.isfinite(v) for v in probe.losses[0].values()), probe.losses


@pytest.mark.slow
def test_user_config_trains_alike_through_mmdets_tools_train_and_mm_ext_train(fashion_scenes, monkeypatch, tmp_path):
    """MMDetection's packaged tools/train.py, in its own process, and ``python -m mm_ext.train`` on the user config
    pointed at the tiny data: both mix (the hook's log line) and give the same losses."""
    from mm_ext.train import main

    tools_train = Path(importlib.util.find_spec("mmdet").origin).parent / ".mim" / "tools" / "train.py"
    if not tools_train.is_file():
        pytest.skip(f"mmdet is installed without its tools/train.py ({tools_train})")
    monkeypatch.setenv("FASHION_SCENES_ROOT", f"{fashion_scenes}/")
    cfg = Config.fromfile(str(USER_CONFIG))
    cfg.model.backbone.checkpoint = None
    cfg.randomness = dict(seed=0)
    config = tmp_path / "faster-rcnn_timm-r26nd_fpn_det-mixup_tiny.py"
    _on_tiny_data(cfg, tmp_path / "tools", iters=2).dump(str(config))
    result = subprocess.run(
        [sys.executable, str(tools_train), str(config), "--work-dir", str(tmp_path / "tools")],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
        env={**os.environ, "FASHION_SCENES_ROOT": f"{fashion_scenes}/", "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert main([str(config), "--work-dir", str(tmp_path / "mm_ext")]) == 0
    losses = {}
    for route in ("tools", "mm_ext"):
        log = next((tmp_path / route).glob("*/*.log")).read_text()
        assert "DetectionMixupHook: batches mixed in pairs, r ~ Beta(1.5, 1.5), iterations 1..2 of 2" in log, route
        losses[route] = [float(m) for m in re.findall(r"\(train\) .*?\bloss: ([0-9.]+)", log)]
        assert len(losses[route]) == 2 and all(math.isfinite(v) for v in losses[route]), losses
    torch.testing.assert_close(losses["tools"], losses["mm_ext"], rtol=1e-4, atol=0, msg="the same mixed run")


def test_a_recipe_switches_detection_mixup_on_by_type_swaps(tmp_path):
    from mm_ext.recipe import apply_recipe

    recipe = tmp_path / "det_mixup.yaml"
    recipe.write_text("det_mixup_alpha: 1.5\ndet_mixup_stop_fraction: 0.8\n")
    for base, roi_type in ((FASTER, "MixWeightStandardRoIHead"), (CASCADE, "MixWeightCascadeRoIHead")):
        cfg = _stock(base)
        apply_recipe(cfg, str(recipe), log=lambda line: None)
        assert (cfg.model.rpn_head.type, cfg.model.roi_head.type) == ("MixWeightRPNHead", roi_type)
        assert cfg.custom_hooks[-1] == dict(type="DetectionMixupHook", alpha=1.5, stop_fraction=0.8)
    recipe.write_text("det_mixup_alpha: 1.5\ndet_mixup_fixed_ratio: 0.5\n")
    fixed = _stock(FASTER)
    apply_recipe(fixed, str(recipe), log=lambda line: None)
    assert fixed.custom_hooks[-1] == dict(type="DetectionMixupHook", alpha=1.5, stop_fraction=1.0, fixed_ratio=0.5)
    plain = _stock(FASTER)
    apply_recipe(plain, "baseline", log=lambda line: None)
    assert plain.model.rpn_head.type == "RPNHead" and not plain.get("custom_hooks"), "det_mixup_alpha 0: untouched"
