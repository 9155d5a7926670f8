"""Configs written as users write them (tests/mm_ext/user_configs/): a stock ``mmdet::``/``mmseg::`` config as
``_base_`` and only what a user changes (the backbone, a loss type, the optimizer constructor, the scheduler,
``model.pretrained``). Each builds, and trains one step the way mmdet's and mmseg's ``tools/train.py`` run a
config (``Config.fromfile``, ``Runner.from_cfg``, ``runner.train()``) on the tiny fashion scenes; the bad
values of these paths stop with one message naming the key."""

# ruff: noqa: E402  (imports follow pytest.importorskip)

import copy
import math
from pathlib import Path

import pytest

pytest.importorskip("mmdet")
pytest.importorskip("mmseg")
pytest.importorskip("timm")

import torch
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.registry import MODELS, DefaultScope
from mmengine.runner import Runner

import mm_ext
from plugins.runtime.checkpoint import load_checkpoint

USER_DIR = Path(__file__).with_name("user_configs")
CONFIG_DIR = Path(mm_ext.__file__).parent / "configs"
DET = [
    "faster-rcnn_timm-r26nd_fpn_1x_coco.py",
    "faster-rcnn_timm-r26nd_fpn_det-mixup_1x_coco.py",
    "faster-rcnn_timm-r26nd_fpn_label-smoothing_1x_coco.py",
    "faster-rcnn_timm-r26nd_fpn_no-bias-decay_cosine_1x_coco.py",
    "faster-rcnn_timm-r26nd_fpn_tricks_1x_voc0712.py",
]
SEG = [
    "fcn_timm-r26nd-d8_pretrained_40k_cityscapes-512x1024.py",
    "fcn_timm-r26nd-d8_label-smoothing_40k_cityscapes-512x1024.py",
    "pspnet_timm-r26nd-d8_tricks_40k_cityscapes-512x1024.py",
]
INHERITED_PRETRAINED = "fcn_timm-r26nd-d8_inherited-pretrained_40k_cityscapes-512x1024.py"
# Where the tiny data comes from: the shipped fashion-scenes configs' datasets (128 px pipelines).
DATA = {
    "det": "faster-rcnn_timm-r26nd_fpn_baseline_fashion-scenes.py",
    "seg": "fcn_timm-r26nd-d8_baseline_fashion-scenes.py",
}
FIRST_LAYER = "conv1.0.weight"


def test_every_user_config_starts_from_a_stock_config():
    assert sorted(p.name for p in USER_DIR.glob("*.py")) == sorted([*DET, *SEG, INHERITED_PRETRAINED])
    for name in [*DET, *SEG, INHERITED_PRETRAINED]:
        text = (USER_DIR / name).read_text()
        assert ("'mmdet::" in text) == (name in DET) and ("'mmseg::" in text) == (name not in DET), name


def _user_config(name, export):
    """The user's config with their backbone export (the config's path is theirs, not this machine's)."""
    cfg = Config.fromfile(str(USER_DIR / name))
    if isinstance(cfg.model.get("pretrained"), str) and "://" not in cfg.model.pretrained:
        cfg.model.pretrained = str(export)
    else:
        cfg.model.backbone.checkpoint = str(export)
    return cfg


def _on_tiny_data(cfg, work_dir):
    """Point the config at the tiny fashion scenes (as a user points it at their data) and shorten it to one step."""
    kind = "seg" if cfg.model.type == "EncoderDecoder" else "det"
    data = Config.fromfile(str(CONFIG_DIR / DATA[kind]))
    cfg.train_dataloader.dataset = data.train_dataloader.dataset
    cfg.train_dataloader.dataset.indices = 2  # one batch of 2: one iteration per epoch
    cfg.train_dataloader.update(batch_size=2, num_workers=0, persistent_workers=False)
    for key in (
        "val_dataloader",
        "val_cfg",
        "val_evaluator",
        "test_dataloader",
        "test_cfg",
        "test_evaluator",
    ):
        cfg[key] = None
    if kind == "seg":
        cfg.model.data_preprocessor.size = (128, 128)
    if "max_epochs" in cfg.train_cfg:
        cfg.train_cfg.update(max_epochs=1, val_interval=1)
    else:
        cfg.train_cfg.update(max_iters=1, val_interval=1)
    for scheduler in cfg.param_scheduler:
        if scheduler.type == "WarmupCosineLR" and not scheduler.get("convert_to_iter_based"):
            scheduler.warmup_steps = 1  # the config's warmup is longer than the one-step run
    cfg.default_hooks.checkpoint.update(interval=1)
    cfg.default_hooks.logger.update(interval=1)
    cfg.work_dir = str(work_dir)
    return cfg


class Probe(Hook):
    def __init__(self):
        self.losses, self.start = [], None

    def before_train(self, runner):
        self.start = {k: v.clone() for k, v in runner.model.backbone.features.model.state_dict().items()}

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        self.losses.append({k: float(v) for k, v in outputs.items() if k.startswith("loss")})


@pytest.mark.parametrize("name", [*DET, *SEG])
def test_user_config_builds(name, timm_export):
    cfg = _user_config(name, timm_export)
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        model = MODELS.build(cfg.model)
    assert isinstance(model.backbone, mm_ext.TimmTransferBackbone)
    assert model.backbone.features.load_report.ok, "the export is loaded"
    if "label-smoothing" in name or "_tricks_1x" in name or "det-mixup" in name:
        losses = (
            [model.decode_head.loss_decode, model.auxiliary_head.loss_decode]
            if name in SEG
            else [model.roi_head.bbox_head.loss_cls]
        )
        assert all(
            isinstance(loss, mm_ext.LabelSmoothingCrossEntropyLoss) and loss.epsilon == 0.1 for loss in losses
        )
        if name in SEG:
            assert [loss.loss_weight for loss in losses] == [1.0, 0.4], "the stock loss weights are kept"


@pytest.mark.slow
@pytest.mark.parametrize("name", [*DET, *SEG])
def test_user_config_trains_a_step_as_tools_train_runs_it(
    name, timm_export, fashion_scenes, monkeypatch, tmp_path
):
    monkeypatch.setenv("FASHION_SCENES_ROOT", f"{fashion_scenes}/")
    cfg = _on_tiny_data(_user_config(name, timm_export), tmp_path)
    runner = Runner.from_cfg(cfg)  # what mmdet's and mmseg's tools/train.py do with the loaded config
    probe = Probe()
    runner.register_hook(probe)
    runner.train()

    assert len(probe.losses) == 1 and all(math.isfinite(v) for v in probe.losses[0].values()), probe.losses
    exported = load_checkpoint(timm_export)["state_dict"]
    torch.testing.assert_close(
        probe.start[FIRST_LAYER], exported[FIRST_LAYER], rtol=0, atol=0, msg="transfer"
    )
    # the config's custom_hooks: the lr record and the random state in the checkpoint
    rows = (tmp_path / "lr_per_step.csv").read_text().split()
    assert rows[0].startswith("step,lr_group0") and [r.split(",")[0] for r in rows[1:]] == ["1"], rows
    checkpoint = torch.load(next(tmp_path.glob("*_1.pth")), map_location="cpu", weights_only=False)
    assert "torch" in checkpoint["random_state"]
    groups = runner.optim_wrapper.optimizer.param_groups
    if "no-bias-decay" in name or "tricks" in name:
        assert len(groups) == 2 and groups[1]["weight_decay"] == 0.0, "no bias decay: two groups"
        assert [type(s).__name__ for s in runner.param_schedulers] == ["WarmupCosineLR"]
    else:
        assert len(groups) == 1


def test_inherited_url_pretrained_names_model_pretrained_and_what_to_set(timm_export):
    """The stock mmseg config's model.pretrained='open-mmlab://resnet50_v1c', kept by a backbone swap."""
    cfg = Config.fromfile(str(USER_DIR / INHERITED_PRETRAINED))
    assert cfg.model.pretrained == "open-mmlab://resnet50_v1c"
    cfg.model.backbone.checkpoint = str(timm_export)
    with DefaultScope.overwrite_default_scope("mmseg"), pytest.raises(ValueError) as error:
        MODELS.build(copy.deepcopy(cfg.model))  # (EncoderDecoder writes pretrained into the backbone dict)
    message = str(error.value)
    assert "model.pretrained='open-mmlab://resnet50_v1c'" in message
    assert (
        "set model.pretrained=None" in message and "model.backbone.checkpoint='.../backbone.pth'" in message
    )
    cfg.model.pretrained = None  # what the message says
    with DefaultScope.overwrite_default_scope("mmseg"):
        assert MODELS.build(cfg.model).backbone.features.load_report.ok


def _stock(base, **model):
    cfg = Config.fromstring(f"_base_ = '{base}'\ncustom_imports = dict(imports=['mm_ext'])\n", ".py")
    cfg.merge_from_dict(dict(model=model))
    return cfg


@pytest.mark.parametrize(
    "base, model, needle",
    [
        (
            "mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py",  # the RPN's loss is a sigmoid one
            dict(rpn_head=dict(loss_cls=dict(type="LabelSmoothingCrossEntropyLoss"))),
            "use_sigmoid=True is not accepted (accepted: False): label smoothing here is for softmax heads",
        ),
        (
            "mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py",
            dict(roi_head=dict(mask_head=dict(loss_mask=dict(type="LabelSmoothingCrossEntropyLoss")))),
            "use_mask=True is not accepted (accepted: False)",
        ),
        (
            "mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py",  # no _delete_=True: merged into the stock ResNet
            dict(backbone=dict(type="TimmTransferBackbone", model_name="tricks_resnet26nd")),
            "model.backbone keys of OpenMMLab's ResNet (depth, norm_cfg, num_stages, style): the backbone dict was "
            "merged into the stock config's",
        ),
        (
            "mmseg::fcn/fcn_r50-d8_4xb2-40k_cityscapes-512x1024.py",
            dict(backbone=dict(_delete_=True, type="TimmTransferBackbone", model_name="tricks_resnet26nd")),
            "model.pretrained='open-mmlab://resnet50_v1c'",
        ),
    ],
)
def test_bad_values_in_user_configs_name_the_key(base, model, needle):
    cfg = _stock(base, **model)
    with DefaultScope.overwrite_default_scope(cfg.default_scope), pytest.raises(ValueError) as error:
        MODELS.build(cfg.model)
    assert needle in str(error.value)


def _readme_configs():
    """The python config blocks of docs/mmdet.md (linked from the README), by their file name."""
    section = (Path(__file__).resolve().parents[2] / "docs" / "mmdet.md").read_text()
    blocks = [b.split("\n```", 1)[0] for b in section.split("```python\n")[1:]]
    return {b.split("\n", 1)[0].lstrip("# ").split(":")[0]: b for b in blocks}


def test_readme_shows_a_detection_and_a_segmentation_config():
    assert sorted(_readme_configs()) == ["my_faster-rcnn.py", "my_faster-rcnn_mixup.py", "my_fcn.py"]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["my_faster-rcnn.py", "my_faster-rcnn_mixup.py", "my_fcn.py"])
def test_readme_config_trains_a_step_by_both_routes(name, fashion_scenes, monkeypatch, tmp_path):
    from mm_ext.train import build_parser, load_config

    monkeypatch.setenv("FASHION_SCENES_ROOT", f"{fashion_scenes}/")
    for readme_name, text in _readme_configs().items():  # side by side, as a reader saves them (one inherits)
        (tmp_path / readme_name).write_text(text)
    path = tmp_path / name
    cfg = Config.fromfile(str(path))
    assert cfg.model.backbone.model_name == "tricks_resnet50d"
    if name == "my_fcn.py":  # the README's export path is the reader's: train from timm's initialisation here
        assert cfg.model.pretrained == "runs/r50d/backbone.pth"
        cfg.model.pretrained = None
    else:
        cfg.model.backbone.checkpoint = None
    runner = Runner.from_cfg(_on_tiny_data(cfg, tmp_path / "work"))  # the frameworks' tools/train.py route
    runner.train()
    rows = (tmp_path / "work" / "lr_per_step.csv").read_text().split()
    assert [r.split(",")[0] for r in rows[1:]] == ["1"]
    # python -m mm_ext.train on the same file: the config's hooks, none added twice
    ours = load_config(build_parser().parse_args([str(path), "--work-dir", str(tmp_path / "ours")]))
    assert [h["type"] for h in ours.custom_hooks] == [
        "LrRecorderHook",
        "RandomStateHook",
        "NonFiniteLossHook",
        *(["DetectionMixupHook"] if "mixup" in name else []),
    ]
