"""User-written Detectron2 configs (tests/d2_ext/user_configs/, each ``_BASE_`` on the installed model zoo's
Base-RCNN-FPN.yaml) train a few CPU iterations through a user's own ``DefaultTrainer`` subclass that calls
``d2_ext.build_optimizer`` / ``build_lr_scheduler``, through ``d2_ext.TricksSolverMixin``, ``d2_ext.Trainer`` and
``d2_ext.train_net``; param groups and lr per iteration are checked against ``plugins``. A plain
``DefaultTrainer`` fails before its first iteration, naming the keys it leaves unapplied."""

import json
import re
import shutil
from bisect import bisect_right
from pathlib import Path

import pytest

pytest.importorskip("detectron2")
pytest.importorskip("timm")

import torch  # noqa: E402
from detectron2 import model_zoo  # noqa: E402
from detectron2.config import get_cfg  # noqa: E402
from detectron2.engine import DefaultTrainer, HookBase  # noqa: E402
from detectron2.solver import build_optimizer as d2_build_optimizer  # noqa: E402

import d2_ext  # noqa: E402
from d2_ext.backbone import TimmBackbone  # noqa: E402
from d2_ext.roi_heads import LabelSmoothingFastRCNNOutputLayers  # noqa: E402
from d2_ext.train_net import build_parser, cli  # noqa: E402
from plugins.tricks.lr_schedule import scale_lr, warmup_cosine_factor  # noqa: E402
from plugins.tricks.no_bias_decay import no_bias_decay_param_groups  # noqa: E402

USER_CONFIGS = Path(__file__).resolve().parent / "user_configs"
DOC = Path(__file__).resolve().parents[2] / "docs" / "detectron2.md"  # the Detectron2 page the README links
MAX_ITER = 3
# What the plain DefaultTrainer leaves unapplied, per config.
UNAPPLIED = {
    "faster_rcnn_timm_fpn_tricks.yaml": ("NO_BIAS_DECAY", "BASE_BATCH_SIZE", "LR_SCHEDULE"),
    "faster_rcnn_timm_fpn_solver_only.yaml": ("NO_BIAS_DECAY", "BASE_BATCH_SIZE"),
    "faster_rcnn_timm_fpn_cosine_uniform.yaml": ("LR_SCHEDULE",),
}


# What a test changes on top of a user config: CPU, 96-px scenes, narrower heads, fewer proposals, three
# iterations, no evaluation.
CPU = {
    "MODEL.DEVICE": "cpu",
    "MODEL.FPN.OUT_CHANNELS": "32",
    "MODEL.ROI_BOX_HEAD.FC_DIM": "128",
    "MODEL.RPN.PRE_NMS_TOPK_TRAIN": "300",
    "MODEL.RPN.POST_NMS_TOPK_TRAIN": "100",
    "MODEL.RPN.PRE_NMS_TOPK_TEST": "300",
    "MODEL.RPN.POST_NMS_TOPK_TEST": "100",
    "MODEL.RPN.BATCH_SIZE_PER_IMAGE": "64",
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE": "64",
    "MODEL.ROI_HEADS.SCORE_THRESH_TEST": "0.0",
    "INPUT.MIN_SIZE_TRAIN": "(96,)",
    "INPUT.MAX_SIZE_TRAIN": "96",
    "INPUT.MIN_SIZE_TEST": "96",
    "INPUT.MAX_SIZE_TEST": "96",
    "DATALOADER.NUM_WORKERS": "0",
    "SOLVER.IMS_PER_BATCH": "2",
    "SOLVER.MAX_ITER": str(MAX_ITER),
    "SOLVER.STEPS": "(2,)",
    "SOLVER.WARMUP_ITERS": "1",
    "SOLVER.CHECKPOINT_PERIOD": "1000",
    "TRICKS.WARMUP_ITERS": "1",
    "DATASETS.TEST": "()",
}


def _cpu_opts(output_dir, *extra):
    return [*(v for item in CPU.items() for v in item), "OUTPUT_DIR", str(output_dir), *extra]


@pytest.fixture(scope="module")
def user_configs(tmp_path_factory):
    """The user configs, one folder below a link to the installed model zoo's Base-RCNN-FPN.yaml."""
    root = tmp_path_factory.mktemp("configs")
    (root / "Base-RCNN-FPN.yaml").symlink_to(model_zoo.get_config_file("Base-RCNN-FPN.yaml"))
    (root / "user").mkdir()
    for name in UNAPPLIED:
        shutil.copy(USER_CONFIGS / name, root / "user" / name)
    return {name: root / "user" / name for name in UNAPPLIED}


@pytest.fixture(scope="module")
def scenes(scenes_root):
    from detectron2.data import DatasetCatalog, MetadataCatalog

    # fashion_scenes_train / _val, as the user configs name them; removed afterwards, so that later tests (and
    # train_net runs in this process) may register the same names from another folder
    names = d2_ext.register_fashion_scenes(scenes_root)
    yield scenes_root
    for name in names:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def _cfg(path, output_dir, *extra):
    cfg = get_cfg()
    d2_ext.add_tricks_config(cfg)
    cfg.merge_from_file(str(path))
    cfg.merge_from_list(_cpu_opts(output_dir, *extra))
    return cfg


def expected_lrs(cfg):
    """The lr of Detectron2 iterations 0..MAX_ITER-1 from the closed forms of ``plugins.tricks.lr_schedule``."""
    t, solver = cfg.TRICKS, cfg.SOLVER
    base = (
        scale_lr(solver.BASE_LR, solver.IMS_PER_BATCH, t.BASE_BATCH_SIZE)
        if t.BASE_BATCH_SIZE
        else solver.BASE_LR
    )
    if t.LR_SCHEDULE == "warmup_cosine":
        return [
            base * warmup_cosine_factor(k + 1, solver.MAX_ITER, t.WARMUP_ITERS, t.MIN_LR_RATIO)
            for k in range(solver.MAX_ITER)
        ]
    # Detectron2's WarmupMultiStepLR with SOLVER.WARMUP_ITERS 1: the warmup factor at iteration 0, then steps
    return [
        base * (solver.WARMUP_FACTOR if k < solver.WARMUP_ITERS else 0.1 ** bisect_right(solver.STEPS, k))
        for k in range(solver.MAX_ITER)
    ]


def _readme_blocks(language):
    """The ``language`` code blocks of docs/detectron2.md (linked from the README)."""
    section = DOC.read_text()
    return re.findall(rf"```{language}\n(.*?)```", section, flags=re.S)


def _readme_trainer():
    """The Detectron2 page's own-trainer snippet (Detectron2's own route to custom solvers), executed as written."""
    [code] = [block for block in _readme_blocks("python") if "class MyTrainer(DefaultTrainer)" in block]
    namespace = {}
    exec(compile(code, "docs/detectron2.md", "exec"), namespace)  # the documented snippet
    return namespace["MyTrainer"]


UserTrainer = _readme_trainer()


class MixinTrainer(d2_ext.TricksSolverMixin, DefaultTrainer):
    pass


class PlainTrainer(DefaultTrainer):
    """The silent case: add_tricks_config and TRICKS keys, but Detectron2's own builders."""


class OptimizerOnlyTrainer(DefaultTrainer):
    @classmethod
    def build_optimizer(cls, cfg, model):
        return d2_ext.build_optimizer(cfg, model)


class _RecordLR(HookBase):
    def __init__(self):
        self.lrs = []

    def before_step(self):
        self.lrs.append([group["lr"] for group in self.trainer.optimizer.param_groups])


def _check_groups(cfg, model, optimizer):
    if cfg.TRICKS.NO_BIAS_DECAY:
        plugin = no_bias_decay_param_groups(model, cfg.SOLVER.WEIGHT_DECAY)
        assert [[id(p) for p in g["params"]] for g in optimizer.param_groups] == [
            [id(p) for p in g["params"]] for g in plugin
        ], "the plugin's two groups"
        decay_of = {id(p): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
        biases = [(n, p) for n, p in model.named_parameters() if n.endswith(".bias") and p.requires_grad]
        assert biases and all(decay_of[id(p)] == 0.0 for _, p in biases), "no bias decay"
        assert {g["weight_decay"] for g in optimizer.param_groups} == {cfg.SOLVER.WEIGHT_DECAY, 0.0}
    else:  # Detectron2's own groups, at the (possibly scaled) lr
        theirs = d2_build_optimizer(cfg, model).param_groups
        assert [[id(p) for p in g["params"]] for g in optimizer.param_groups] == [
            [id(p) for p in g["params"]] for g in theirs
        ]
        assert [g["weight_decay"] for g in optimizer.param_groups] == [g["weight_decay"] for g in theirs]


@pytest.mark.slow
@pytest.mark.parametrize("name", list(UNAPPLIED))
@pytest.mark.parametrize(
    "trainer_cls", [UserTrainer, MixinTrainer, d2_ext.Trainer], ids=["own-trainer", "mixin", "d2_ext.Trainer"]
)
def test_user_config_trains_with_the_tricks(name, trainer_cls, user_configs, scenes, tmp_path):
    cfg = _cfg(user_configs[name], tmp_path)
    torch.manual_seed(0)
    trainer = trainer_cls(cfg)
    model = trainer.model
    assert any(isinstance(m, TimmBackbone) for m in model.modules()), "the timm backbone from the user config"
    smoothing = [m for m in model.modules() if isinstance(m, LabelSmoothingFastRCNNOutputLayers)]
    assert [(m.label_smoothing, m.label_smoothing_form) for m in smoothing] == (
        [(cfg.TRICKS.LABEL_SMOOTHING, cfg.TRICKS.LABEL_SMOOTHING_FORM)] if cfg.TRICKS.LABEL_SMOOTHING else []
    )
    _check_groups(cfg, model, trainer.optimizer)
    recorder = _RecordLR()
    trainer.register_hooks([recorder])
    trainer.resume_or_load(resume=False)
    trainer.train()
    assert trainer.iter == MAX_ITER  # Detectron2 counts one past the last iteration when training completes
    expected = expected_lrs(cfg)
    assert len(recorder.lrs) == MAX_ITER
    for k, group_lrs in enumerate(recorder.lrs):
        torch.testing.assert_close(
            group_lrs, [expected[k]] * len(group_lrs), rtol=1e-12, atol=0.0, msg=f"{name} lr at iteration {k}"
        )
    losses = [v for v, _ in trainer.storage.history("total_loss").values()]
    assert len(losses) == MAX_ITER and all(torch.isfinite(torch.tensor(losses)))


@pytest.mark.slow
def test_readme_config_trains_through_the_readme_trainer(user_configs, scenes, tmp_path):
    [text] = [block for block in _readme_blocks("yaml") if "_BASE_" in block]  # the whole user config
    path = user_configs["faster_rcnn_timm_fpn_tricks.yaml"].parent / "readme.yaml"
    path.write_text(text)
    cfg = _cfg(path, tmp_path, "DATASETS.TRAIN", "('fashion_scenes_train',)", "TRICKS.TIMM.CHECKPOINT", "")
    trainer = UserTrainer(cfg)
    _check_groups(cfg, trainer.model, trainer.optimizer)
    trainer.resume_or_load(resume=False)
    trainer.train()
    lrs = [v for v, _ in trainer.storage.history("lr").values()]
    torch.testing.assert_close(lrs, expected_lrs(cfg), rtol=1e-12, atol=0.0, msg="README config lr")


@pytest.mark.parametrize("name", list(UNAPPLIED))
def test_plain_default_trainer_fails_before_training(name, user_configs, scenes, tmp_path):
    cfg = _cfg(user_configs[name], tmp_path)
    trainer = PlainTrainer(cfg)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    recorder = _RecordLR()
    trainer.register_hooks([recorder])
    trainer.resume_or_load(resume=False)
    with pytest.raises(ValueError) as info:
        trainer.train()
    message = str(info.value)
    assert message.startswith("PlainTrainer does not apply cfg.TRICKS keys that are set"), message
    for key in UNAPPLIED[name]:
        assert f"cfg.TRICKS.{key}=" in message, (key, message)
    for key in {"NO_BIAS_DECAY", "BASE_BATCH_SIZE", "LR_SCHEDULE", "LABEL_SMOOTHING", "ZERO_GAMMA"} - set(
        UNAPPLIED[name]
    ):
        assert f"cfg.TRICKS.{key}=" not in message, (key, message)
    assert "d2_ext.build_optimizer(cfg, model) from PlainTrainer.build_optimizer" in message
    assert "d2_ext.build_lr_scheduler(cfg, optimizer) from PlainTrainer.build_lr_scheduler" in message
    assert recorder.lrs == [], "no iteration ran"
    for key, value in trainer.model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_trainer_with_only_the_optimizer_routed_names_the_schedule(user_configs, scenes, tmp_path):
    trainer = OptimizerOnlyTrainer(_cfg(user_configs["faster_rcnn_timm_fpn_tricks.yaml"], tmp_path))
    with pytest.raises(
        ValueError,
        match=r"cfg.TRICKS.LR_SCHEDULE='warmup_cosine': the lr scheduler is "
        r"LRMultiplier over WarmupParamScheduler",
    ) as info:
        trainer.train()
    assert "NO_BIAS_DECAY" not in str(info.value) and "BASE_BATCH_SIZE" not in str(info.value)


def test_label_smoothing_without_its_heads_fails_in_d2_ext_trainer(user_configs, scenes, tmp_path):
    cfg = _cfg(
        user_configs["faster_rcnn_timm_fpn_solver_only.yaml"], tmp_path, "TRICKS.LABEL_SMOOTHING", "0.1"
    )
    trainer = d2_ext.Trainer(cfg)
    with pytest.raises(
        ValueError,
        match=r"cfg.TRICKS.LABEL_SMOOTHING=0.1: no box predictor smooths with it "
        r"\(MODEL.ROI_HEADS.NAME='StandardROIHeads'\); set MODEL.ROI_HEADS.NAME "
        r"to 'LabelSmoothingStandardROIHeads'",
    ):
        trainer.train()


def _train_net_args(path, output_dir, *extra):
    """The command line of a user running d2_ext.train_net on their config (the scenes already registered)."""
    return ["--config-file", str(path), *_cpu_opts(output_dir, *extra)]


@pytest.mark.slow
@pytest.mark.parametrize("name", list(UNAPPLIED))
def test_user_config_trains_with_train_net(name, user_configs, scenes, tmp_path):
    cli(_train_net_args(user_configs[name], tmp_path))
    rows = (tmp_path / "lr_per_step.csv").read_text().split()
    recorded = [[float(v) for v in row.split(",")[1:]] for row in rows[1:]]
    expected = expected_lrs(_cfg(user_configs[name], tmp_path))
    assert [int(row.split(",")[0]) for row in rows[1:]] == list(range(1, MAX_ITER + 1))
    for k, group_lrs in enumerate(recorded):
        torch.testing.assert_close(
            group_lrs,
            [expected[k]] * len(group_lrs),
            rtol=1e-12,
            atol=0.0,
            msg=f"{name} lr_per_step.csv row {k + 1}",
        )
    assert (tmp_path / "model_final.pth").is_file()


TTA_OPTS = {
    "TEST.AUG.ENABLED": "True",
    "TEST.AUG.MIN_SIZES": "(80, 96)",
    "TEST.AUG.MAX_SIZE": "128",
    "TEST.AUG.FLIP": "True",
    "DATASETS.TEST": "('fashion_scenes_val',)",
}
TTA = [v for item in TTA_OPTS.items() for v in item]


@pytest.mark.slow
def test_training_evaluates_with_tta_and_verifies(user_configs, scenes, tmp_path):
    expected = "[['bbox', 'AP', 50.0, 50.0], ['bbox_TTA', 'AP50', 50.0, 50.0]]"  # any value in [0, 100]
    path = user_configs["faster_rcnn_timm_fpn_tricks.yaml"]
    cli(_train_net_args(path, tmp_path, *TTA, "TEST.EXPECTED_RESULTS", expected))
    metrics = [json.loads(line) for line in (tmp_path / "metrics.json").read_text().splitlines()]
    assert any("bbox/AP" in m for m in metrics) and any("bbox_TTA/AP" in m for m in metrics), metrics[-1]
    assert (tmp_path / "inference_TTA" / "coco_instances_results.json").is_file()


@pytest.mark.slow
def test_eval_only_runs_tta_and_verify_results(user_configs, scenes, tmp_path):
    from d2_ext.train_net import main

    path = user_configs["faster_rcnn_timm_fpn_tricks.yaml"]

    def eval_only(*extra):  # SEED 0: every run evaluates the same (randomly initialized) model
        opts = [*TTA, "SEED", "0", *extra]
        return main(build_parser().parse_args(["--eval-only", *_train_net_args(path, tmp_path, *opts)]))

    results = eval_only()
    assert set(results) == {"bbox", "bbox_TTA"}, results.keys()
    assert set(results["bbox_TTA"]) == set(results["bbox"]) and 0.0 <= results["bbox_TTA"]["AP"] <= 100.0
    assert (tmp_path / "inference_TTA" / "coco_instances_results.json").is_file()

    ap = results["bbox_TTA"]["AP"]
    verified = eval_only("TEST.EXPECTED_RESULTS", f"[['bbox_TTA', 'AP', {ap!r}, 0.01]]")
    assert verified["bbox_TTA"]["AP"] == ap, "the same model, verified"
    with pytest.raises(SystemExit) as info:  # Detectron2's verify_results: exit status 1 when a value is off
        eval_only("TEST.EXPECTED_RESULTS", f"[['bbox_TTA', 'AP', {ap + 1.0!r}, 0.01]]")
    assert info.value.code == 1
    with pytest.raises(
        ValueError,
        match=r"cfg.TEST.EXPECTED_RESULTS entry \['segm', 'AP', 1.0, 0.1\] is not "
        r"accepted: the results have no 'segm'/'AP'; accepted tasks: "
        r"\['bbox', 'bbox_TTA'\]",
    ):
        eval_only("TEST.EXPECTED_RESULTS", "[['segm', 'AP', 1.0, 0.1]]")


@pytest.mark.parametrize(
    ("opts", "fragment"),
    [
        (["TRICKS.LR_SCHEDULE", "cosine"], "cfg.TRICKS.LR_SCHEDULE='cosine' is not accepted"),
        (["TRICKS.BASE_BATCH_SIZE", "-8"], "cfg.TRICKS.BASE_BATCH_SIZE=-8 is not accepted"),
        ([*TTA, "TEST.AUG.MIN_SIZES", "(0, 96)"], "cfg.TEST.AUG.MIN_SIZES=(0, 96) is not accepted"),
        ([*TTA, "TEST.AUG.MAX_SIZE", "0"], "cfg.TEST.AUG.MAX_SIZE=0 is not accepted"),
        (
            [*TTA, "MODEL.META_ARCHITECTURE", "ProposalNetwork"],
            "cfg.TEST.AUG.ENABLED=True is not accepted with MODEL.META_ARCHITECTURE='ProposalNetwork'",
        ),
        (
            ["TEST.EXPECTED_RESULTS", "[['bbox', 'AP']]"],
            "cfg.TEST.EXPECTED_RESULTS entry ['bbox', 'AP'] is not accepted",
        ),
        (["TEST.EXPECTED_RESULTS", "[['bbox', 'AP', 1.0, -1.0]]"], "tolerance >= 0"),
        (
            ["TEST.EXPECTED_RESULTS", "[['bbox', 'AP', 1.0, 0.1]]"],
            "cfg.TEST.EXPECTED_RESULTS is set with an empty DATASETS.TEST",
        ),
    ],
)
def test_bad_value_in_a_user_config_exits_2(opts, fragment, user_configs, tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        cli(_train_net_args(user_configs["faster_rcnn_timm_fpn_tricks.yaml"], tmp_path, *opts))
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert fragment in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
