"""User configs that switch detection mixup on with TRICKS keys (tests/d2_ext/user_configs/*det_mixup.yaml, on the
installed model zoo's Base-RCNN-FPN.yaml and Misc/cascade_mask_rcnn_R_50_FPN_1x.yaml) train a few CPU iterations
through the own DefaultTrainer subclass of docs/detectron2.md, d2_ext.Trainer and d2_ext.train_net, the mixed batches reaching the model until
DET_MIXUP_STOP_FRACTION; trainers and models that would not apply the keys fail before training, naming them."""

import re
import shutil
from pathlib import Path

import pytest

pytest.importorskip("detectron2")
pytest.importorskip("timm")

import torch  # noqa: E402
from detectron2 import model_zoo  # noqa: E402
from detectron2.config import get_cfg  # noqa: E402
from detectron2.engine import DefaultTrainer  # noqa: E402

import d2_ext  # noqa: E402
from d2_ext.det_mixup import DetectionMixupLoader, MixWeightRPN  # noqa: E402
from d2_ext.roi_heads import LabelSmoothingFastRCNNOutputLayers  # noqa: E402

USER_CONFIGS = Path(__file__).resolve().parent / "user_configs"
DOC = Path(__file__).resolve().parents[2] / "docs" / "detectron2.md"  # the Detectron2 page the README links
NAMES = ["faster_rcnn_timm_fpn_det_mixup.yaml", "cascade_rcnn_timm_fpn_det_mixup.yaml"]
MAX_ITER = 2
CPU = [  # what a test changes on top of a user config: CPU, 96-px scenes, narrow heads, two iterations
    "MODEL.DEVICE", "cpu", "MODEL.FPN.OUT_CHANNELS", "32", "MODEL.ROI_BOX_HEAD.FC_DIM", "128",
    "MODEL.RPN.PRE_NMS_TOPK_TRAIN", "300", "MODEL.RPN.POST_NMS_TOPK_TRAIN", "100",
    "MODEL.RPN.BATCH_SIZE_PER_IMAGE", "64", "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "64",
    "INPUT.MIN_SIZE_TRAIN", "(96,)", "INPUT.MAX_SIZE_TRAIN", "96", "DATALOADER.NUM_WORKERS", "0",
    "SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", str(MAX_ITER), "SOLVER.STEPS", "()",
    "SOLVER.WARMUP_ITERS", "1", "SOLVER.CHECKPOINT_PERIOD", "1000", "DATASETS.TEST", "()",
    "TRICKS.DET_MIXUP_STOP_FRACTION", "0.5",
]  # fmt: skip


def _readme_trainer():
    """The Detectron2 page's own-trainer snippet (Detectron2's section), executed as written."""
    section = DOC.read_text()
    [code] = [b for b in re.findall(r"```python\n(.*?)```", section, flags=re.S) if "class MyTrainer(" in b]
    namespace = {}
    exec(compile(code, "docs/detectron2.md", "exec"), namespace)  # the documented snippet
    return namespace["MyTrainer"]


UserTrainer = _readme_trainer()


class PlainTrainer(DefaultTrainer):
    """Detectron2's own builders: neither the solver keys nor the loader of d2_ext."""


@pytest.fixture(scope="module")
def user_configs(tmp_path_factory):
    """The user configs one folder below links to the installed model zoo's configs they name."""
    root = tmp_path_factory.mktemp("configs")
    (root / "Base-RCNN-FPN.yaml").symlink_to(model_zoo.get_config_file("Base-RCNN-FPN.yaml"))
    (root / "Misc").mkdir()
    (root / "Misc" / "cascade_mask_rcnn_R_50_FPN_1x.yaml").symlink_to(
        model_zoo.get_config_file("Misc/cascade_mask_rcnn_R_50_FPN_1x.yaml"))
    (root / "user").mkdir()
    for name in NAMES:
        shutil.copy(USER_CONFIGS / name, root / "user" / name)
    return {name: root / "user" / name for name in NAMES}


@pytest.fixture(scope="module")
def scenes(scenes_root):
    from detectron2.data import DatasetCatalog, MetadataCatalog

    names = d2_ext.register_fashion_scenes(scenes_root)
    yield scenes_root
    for name in names:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def _cfg(path, output_dir, *extra):
    cfg = get_cfg()
    d2_ext.add_tricks_config(cfg)
    cfg.merge_from_file(str(path))
    cfg.merge_from_list([*CPU, "OUTPUT_DIR", str(output_dir), *extra])
    return cfg


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("trainer_cls", [UserTrainer, d2_ext.Trainer], ids=["own-trainer", "d2_ext.Trainer"])
def test_user_config_mixes_and_trains(name, trainer_cls, user_configs, scenes, tmp_path):
    cfg = _cfg(user_configs[name], tmp_path)
    torch.manual_seed(0)
    trainer = trainer_cls(cfg)
    model = trainer.model
    assert isinstance(model.proposal_generator, MixWeightRPN)
    predictors = [m for m in model.modules() if isinstance(m, LabelSmoothingFastRCNNOutputLayers)]
    assert [p.label_smoothing for p in predictors] == [0.1] * (3 if "cascade" in name else 1)
    assert isinstance(trainer._trainer.data_loader, DetectionMixupLoader)
    mixed = []  # what reached the RPN: every image mixed, then none after DET_MIXUP_STOP_FRACTION x MAX_ITER
    model.proposal_generator.register_forward_pre_hook(
        lambda module, args: mixed.append([inst.has("gt_mix_weights") for inst in args[2]]))
    trainer.resume_or_load(resume=False)
    trainer.train()
    assert mixed == [[True, True], [False, False]]
    losses = [v for v, _ in trainer.storage.history("total_loss").values()]
    assert len(losses) == MAX_ITER and all(torch.isfinite(torch.tensor(losses)))


def test_a_plain_default_trainer_fails_before_training_naming_the_key(user_configs, scenes, tmp_path):
    trainer = PlainTrainer(_cfg(user_configs[NAMES[0]], tmp_path))
    trainer.resume_or_load(resume=False)
    with pytest.raises(ValueError, match=re.escape(
        "cfg.TRICKS.DET_MIXUP_ALPHA=1.5: the training loader is AspectRatioGroupedDataset, which does not mix: "
        "return d2_ext.build_train_loader(cfg) from the trainer's build_train_loader (d2_ext.Trainer does)")):
        trainer.train()


@pytest.mark.parametrize("extra, needle", [
    (("MODEL.PROPOSAL_GENERATOR.NAME", "RPN"),
     "MODEL.PROPOSAL_GENERATOR.NAME='RPN' ignores the box weights; set it to 'MixWeightRPN'"),
    (("MODEL.ROI_HEADS.NAME", "CascadeROIHeads", "TRICKS.LABEL_SMOOTHING", "0.0"),
     "MODEL.ROI_HEADS.NAME='CascadeROIHeads' ignores the box weights; set MODEL.ROI_HEADS.NAME to "
     "'LabelSmoothingCascadeROIHeads'"),
    (("MODEL.ROI_HEADS.NAME", "CascadeROIHeads"),
     "cfg.TRICKS.LABEL_SMOOTHING=0.1: no box predictor smooths with it (MODEL.ROI_HEADS.NAME='CascadeROIHeads'); "
     "set MODEL.ROI_HEADS.NAME to 'LabelSmoothingCascadeROIHeads'"),
    (("MODEL.META_ARCHITECTURE", "RetinaNet", "MODEL.RETINANET.IN_FEATURES", "['p2', 'p3', 'p4', 'p5', 'p6']",
      "TRICKS.LABEL_SMOOTHING", "0.0"),
     "cfg.TRICKS.DET_MIXUP_ALPHA=1.5: MODEL.META_ARCHITECTURE='RetinaNet' has no ROI box classifier to weight"),
])
def test_models_that_would_not_apply_the_keys_are_refused_by_name(extra, needle, user_configs, scenes, tmp_path):
    trainer = d2_ext.Trainer(_cfg(user_configs[NAMES[1]], tmp_path, *extra))
    with pytest.raises(ValueError, match=re.escape(needle)):
        trainer.train()


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_user_config_trains_with_train_net(name, user_configs, scenes, tmp_path):
    import json

    from d2_ext.train_net import cli

    cli(["--config-file", str(user_configs[name]), *CPU, "OUTPUT_DIR", str(tmp_path)])
    records = [json.loads(line) for line in (tmp_path / "metrics.json").read_text().splitlines() if line.strip()]
    losses = [r["total_loss"] for r in records if "total_loss" in r]
    assert losses and all(torch.isfinite(torch.tensor(losses))), records
    assert (tmp_path / "model_final.pth").is_file()
    assert "DET_MIXUP_ALPHA: 1.5" in (tmp_path / "config.yaml").read_text()
