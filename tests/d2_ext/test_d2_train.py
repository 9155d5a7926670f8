"""The shipped fashion-scenes configs train a few iterations on CPU in d2_ext.Trainer with a timm_ext backbone,
evaluate with COCOEvaluator, and resume from their own checkpoint (torch.load with weights_only)."""

import math

import pytest

pytest.importorskip("detectron2")
pytest.importorskip("timm")

import torch  # noqa: E402
from detectron2.config import get_cfg  # noqa: E402
from detectron2.evaluation import COCOEvaluator  # noqa: E402

import d2_ext  # noqa: E402
from d2_ext import Trainer, add_tricks_config, register_fashion_scenes  # noqa: E402
from d2_ext.roi_heads import LabelSmoothingFastRCNNOutputLayers  # noqa: E402
from plugins.tricks.lr_schedule import warmup_cosine_factor  # noqa: E402

PREFIX = "d2train_scenes"
MAX_ITER = 3


def _cfg(name, scenes_root, backbone_path, output_dir, max_iter=MAX_ITER):
    register_fashion_scenes(scenes_root, name_prefix=PREFIX)
    cfg = get_cfg()
    add_tricks_config(cfg)
    cfg.merge_from_file(d2_ext.get_config_file(name))
    cfg.merge_from_list([
        "DATASETS.TRAIN", (f"{PREFIX}_train",), "DATASETS.TEST", (f"{PREFIX}_val",),
        "MODEL.DEVICE", "cpu", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", 0.0,
        "INPUT.MIN_SIZE_TRAIN", (96,), "INPUT.MAX_SIZE_TRAIN", 96, "INPUT.MIN_SIZE_TEST", 96,
        "INPUT.MAX_SIZE_TEST", 96, "DATALOADER.NUM_WORKERS", 0, "SOLVER.IMS_PER_BATCH", 2,
        "SOLVER.MAX_ITER", max_iter, "SOLVER.STEPS", (2,), "SOLVER.WARMUP_ITERS", 1,
        "SOLVER.CHECKPOINT_PERIOD", 1000, "TRICKS.WARMUP_ITERS", 1,
        "TRICKS.TIMM.CHECKPOINT", str(backbone_path), "OUTPUT_DIR", str(output_dir),
    ])
    return cfg


def _first_conv(model):
    return model.pretrained_cfg["first_conv"] + ".weight"


@pytest.mark.parametrize("variant", ["baseline", "tricks"])
def test_fashion_config_trains_and_evaluates(variant, scenes_root, exported_backbone, tmp_path):
    source, path = exported_backbone
    torch.manual_seed(0)
    cfg = _cfg(f"faster_rcnn_timm_R_26n_D_FPN_{variant}_fashion_scenes.yaml", scenes_root, path, tmp_path)
    trainer = Trainer(cfg)
    features = trainer.model.backbone.bottom_up.features
    report = features.load_report
    assert report.ok and set(report.matched) == set(source.state_dict()) - {k for k in source.state_dict()
                                                                            if k.startswith("fc.")}
    first = _first_conv(source)
    exported = source.state_dict()[first]
    torch.testing.assert_close(features.model.state_dict()[first], exported, rtol=0.0, atol=0.0,
                               msg=f"first layer {first} after building")
    strides = [s.stride for s in trainer.model.backbone.bottom_up.output_shape().values()]
    assert strides == [4, 8, 16, 32], "res2..res5 at Detectron2's usual strides (stem max-pool kept)"
    smoothing = isinstance(trainer.model.roi_heads.box_predictor, LabelSmoothingFastRCNNOutputLayers)
    assert smoothing == (variant == "tricks")

    trainer.resume_or_load(resume=False)
    trainer.train()
    assert trainer.iter == MAX_ITER  # Detectron2 counts one past the last iteration when training completes
    history = trainer.storage.history
    for key in ("total_loss", "loss_cls", "loss_box_reg", "loss_rpn_cls", "loss_rpn_loc"):
        values = [v for v, _ in history(key).values()]
        assert len(values) == MAX_ITER and all(math.isfinite(v) for v in values), (key, values)
    torch.testing.assert_close(features.model.state_dict()[first], exported, rtol=0.0, atol=0.0,
                               msg="frozen stem after training (FREEZE_AT 2)")
    lrs = [v for v, _ in history("lr").values()]
    if variant == "tricks":  # 0.02 at batch 16, scaled to batch 2; plugin warmup + cosine per iteration
        expected = [0.02 * 2 / 16 * warmup_cosine_factor(k + 1, MAX_ITER, 1) for k in range(MAX_ITER)]
    else:  # Detectron2's WarmupMultiStepLR: warmup factor 0.001 at iteration 0, x0.1 from iteration 2
        expected = [0.02 * 0.001, 0.02, 0.002]
    torch.testing.assert_close(lrs, expected, rtol=1e-9, atol=0.0, msg=f"{variant} lr per iteration")
    rows = (tmp_path / "lr_per_step.csv").read_text().split()
    assert rows[0].startswith("step,lr_group0"), rows[0]
    recorded = [float(r.split(",")[1]) for r in rows[1:]]
    assert [int(r.split(",")[0]) for r in rows[1:]] == list(range(1, MAX_ITER + 1))
    torch.testing.assert_close(recorded, expected, rtol=1e-12, atol=0.0, msg=f"{variant} lr_per_step.csv")

    evaluator = Trainer.build_evaluator(cfg, f"{PREFIX}_val")
    assert isinstance(evaluator, COCOEvaluator) and evaluator._use_fast_impl is False
    results = Trainer.test(cfg, trainer.model)
    bbox = results["bbox"]
    assert 0.0 <= bbox["AP"] <= 100.0 and 0.0 <= bbox["AP50"] <= 100.0, bbox
    assert {f"AP-{name}" for name in ("Trouser", "Ankle boot")} <= set(bbox), "per-class AP by thing_classes"


def test_resume_reads_checkpoint_with_weights_only(scenes_root, exported_backbone, tmp_path):
    _, path = exported_backbone
    name = "faster_rcnn_timm_R_26n_D_FPN_tricks_fashion_scenes.yaml"
    first = Trainer(_cfg(name, scenes_root, path, tmp_path, max_iter=2))
    first.resume_or_load(resume=False)
    first.train()
    saved = torch.load(tmp_path / "model_final.pth", weights_only=True)  # the checkpoint holds only safe types
    assert saved["iteration"] == 1 and saved["trainer"]["hooks"]["LRScheduler"]["last_epoch"] == 2

    resumed = Trainer(_cfg(name, scenes_root, path, tmp_path, max_iter=3))
    resumed.resume_or_load(resume=True)
    assert resumed.start_iter == 2
    for key, value in saved["model"].items():
        torch.testing.assert_close(resumed.model.state_dict()[key], value, rtol=0.0, atol=0.0, msg=f"resumed {key}")
    assert resumed.scheduler.last_epoch == 2
    resumed.train()
    assert resumed.iter == 3
    # Detectron2 main also checkpoints the optimizer: its state (no-bias-decay groups included) is safe too
    extra = tmp_path / "optimizer.pth"
    torch.save({"optimizer": resumed.optimizer.state_dict(), "scheduler": resumed.scheduler.state_dict()}, extra)
    state = torch.load(extra, weights_only=True)
    assert [g["name"] for g in state["optimizer"]["param_groups"]] == ["decay", "no_decay"]
