"""TRICKS.RECIPE: one plugins.recipe.Recipe laid over a user's Detectron2 config (d2_ext.apply_recipe and
train_net --recipe), the lr of every iteration from the recipe's closed forms, and the loud cases."""

import shutil
from pathlib import Path

import pytest

pytest.importorskip("detectron2")

import torch  # noqa: E402
from detectron2 import model_zoo  # noqa: E402
from detectron2.config import get_cfg  # noqa: E402

import d2_ext  # noqa: E402
from plugins.recipe import Recipe  # noqa: E402
from plugins.recipe.plan import epochs_to_steps
from plugins.tricks.lr_schedule import scale_lr, warmup_cosine_factor, warmup_step_factor  # noqa: E402

USER_CONFIG = Path(__file__).resolve().parent / "user_configs" / "faster_rcnn_timm_fpn_recipe.yaml"


@pytest.fixture
def user_config(tmp_path):
    (tmp_path / "Base-RCNN-FPN.yaml").symlink_to(model_zoo.get_config_file("Base-RCNN-FPN.yaml"))
    (tmp_path / "user").mkdir()
    return Path(shutil.copy(USER_CONFIG, tmp_path / "user" / USER_CONFIG.name))


def _cfg(path, *opts):
    cfg = get_cfg()
    d2_ext.add_tricks_config(cfg)
    cfg.merge_from_file(str(path))
    cfg.merge_from_list(list(opts))
    d2_ext.apply_recipe(cfg, list(opts))
    return cfg


def test_the_recipe_sets_the_solver_and_trick_keys_and_command_line_keys_win(user_config):
    paper = Recipe.preset("paper")
    cfg = _cfg(user_config, "TRICKS.ITERS_PER_EPOCH", "20", "SOLVER.MAX_ITER", "400")
    s, t = cfg.SOLVER, cfg.TRICKS
    assert (s.BASE_LR, t.BASE_BATCH_SIZE, s.MOMENTUM, s.NESTEROV, s.WEIGHT_DECAY) == (
        paper.base_lr, paper.base_batch_size, paper.momentum, paper.nesterov, paper.weight_decay)
    assert (t.NO_BIAS_DECAY, t.ZERO_GAMMA, t.LABEL_SMOOTHING, t.LABEL_SMOOTHING_FORM) == (
        paper.no_bias_decay, paper.zero_gamma, paper.label_smoothing, paper.label_smoothing_form)
    assert (t.LR_SCHEDULE, t.WARMUP_ITERS) == ("warmup_cosine", epochs_to_steps(paper.warmup_epochs, 20))
    assert Recipe.from_dict(__import__("yaml").safe_load(t.RECIPE_RESOLVED)) == paper
    # the model zoo's SOLVER.BASE_LR 0.02 in the inherited yaml gives way; a KEY VALUE after it wins
    cfg = _cfg(user_config, "TRICKS.ITERS_PER_EPOCH", "20", "SOLVER.MAX_ITER", "400", "SOLVER.BASE_LR", "0.02",
               "TRICKS.LABEL_SMOOTHING", "0.0")
    assert (cfg.SOLVER.BASE_LR, cfg.TRICKS.LABEL_SMOOTHING, cfg.TRICKS.NO_BIAS_DECAY) == (0.02, 0.0, True)


def test_every_iteration_runs_at_the_recipes_lr(user_config):
    cfg = _cfg(user_config, "TRICKS.ITERS_PER_EPOCH", "4", "SOLVER.MAX_ITER", "40", "SOLVER.IMS_PER_BATCH", "8",
               "MODEL.DEVICE", "cpu")
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Linear(4, 2))
    optimizer = d2_ext.build_optimizer(cfg, model)
    scheduler = d2_ext.build_lr_scheduler(cfg, optimizer)
    paper = Recipe.preset("paper")
    peak = scale_lr(paper.base_lr, 8, paper.base_batch_size)
    warmup = epochs_to_steps(paper.warmup_epochs, 4)
    for k in range(40):  # Detectron2's iteration k is the paper's update k + 1
        expected = peak * warmup_cosine_factor(k + 1, 40, warmup, paper.min_lr_ratio)
        assert [g["lr"] for g in optimizer.param_groups] == [expected] * len(optimizer.param_groups), k
        optimizer.step()
        scheduler.step()


def test_a_step_recipe_sets_warmup_step_with_detectron2s_steps_and_gamma(user_config, tmp_path):
    (tmp_path / "step.yaml").write_text("schedule: step\nstep_milestones: [6, 9]\nstep_gamma: 0.5\nepochs: 10\n"
                                        "warmup_epochs: 1\n")
    cfg = _cfg(user_config, "TRICKS.RECIPE", str(tmp_path / "step.yaml"), "TRICKS.ITERS_PER_EPOCH", "4",
               "SOLVER.MAX_ITER", "40", "SOLVER.IMS_PER_BATCH", "8", "MODEL.DEVICE", "cpu")
    assert (cfg.TRICKS.LR_SCHEDULE, tuple(cfg.SOLVER.STEPS), cfg.SOLVER.GAMMA, cfg.TRICKS.WARMUP_ITERS) == (
        "warmup_step", (24, 36), 0.5, 4)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Linear(4, 2))
    optimizer = d2_ext.build_optimizer(cfg, model)
    scheduler = d2_ext.build_lr_scheduler(cfg, optimizer)
    recipe = Recipe.from_yaml(tmp_path / "step.yaml")
    for k in range(40):
        expected = scale_lr(recipe.base_lr, 8, recipe.base_batch_size) * warmup_step_factor(k + 1, 40, 4, (24, 36),
                                                                                               0.5)
        assert [g["lr"] for g in optimizer.param_groups] == [expected] * len(optimizer.param_groups), k
        optimizer.step()
        scheduler.step()


def test_bad_recipes_and_a_trainer_that_skips_apply_recipe_are_loud(user_config, tmp_path):
    with pytest.raises(ValueError, match=r"cfg\.TRICKS\.RECIPE='nope' is not accepted: not a preset nor a file; accepted: one of"):
        _cfg(user_config, "TRICKS.RECIPE", "nope")
    (tmp_path / "step.yaml").write_text("schedule: step\nstep_milestones: [3]\nepochs: 4\nwarmup_epochs: 0\n")
    with pytest.raises(ValueError, match=r"TRICKS.RECIPE=.*over SOLVER.MAX_ITER=10 .*milestones"):
        _cfg(user_config, "TRICKS.RECIPE", str(tmp_path / "step.yaml"), "TRICKS.ITERS_PER_EPOCH", "5",
             "SOLVER.MAX_ITER", "10")  # the milestone, epoch 3 = iteration 15, lies past the run
    with pytest.raises(ValueError, match=r"DATASETS.TRAIN \('nowhere',\) is not registered.*ITERS_PER_EPOCH"):
        _cfg(user_config, "DATASETS.TRAIN", "('nowhere',)")
    with pytest.raises(ValueError, match=r"over SOLVER.MAX_ITER=10 iterations.*warmup_steps"):
        _cfg(user_config, "TRICKS.ITERS_PER_EPOCH", "100", "SOLVER.MAX_ITER", "10")
    # a user's trainer built from a config whose recipe was never laid over it stops before training
    cfg = get_cfg()
    d2_ext.add_tricks_config(cfg)
    cfg.merge_from_file(str(user_config))
    from d2_ext.check import tricks_not_applied

    problems = tricks_not_applied(cfg, torch.nn.Linear(2, 2), torch.optim.SGD(torch.nn.Linear(2, 2).parameters(),
                                                                              lr=0.1), None)
    assert "call d2_ext.apply_recipe(cfg, opts)" in problems["RECIPE"]


def _logged_not_applied(caplog) -> tuple[str, ...]:
    [message] = [r.getMessage() for r in caplog.records if "not applied to Detectron2" in r.getMessage()]
    listed = message.split("not applied to Detectron2: ")[1]
    return () if listed == "nothing" else tuple(item.split(" (")[0] for item in listed.split(", "))


@pytest.mark.parametrize("text", ["distill_temperature: 5.0\n",  # distillation off: its temperature means nothing
                                  "distill_teacher: teacher.pth\nmixup_alpha: 0.2\n", "amp: true\n"])
def test_the_log_lists_what_detectron2_does_not_apply_from_the_one_list(user_config, tmp_path, caplog, text):
    from plugins.recipe import not_applied

    (tmp_path / "r.yaml").write_text(text)
    with caplog.at_level("INFO", logger="d2_ext.recipe"):
        _cfg(user_config, "TRICKS.RECIPE", str(tmp_path / "r.yaml"), "TRICKS.ITERS_PER_EPOCH", "4",
             "SOLVER.MAX_ITER", "400")
    recipe = Recipe.from_yaml(tmp_path / "r.yaml")
    assert _logged_not_applied(caplog) == not_applied(recipe, "detectron2", cuda=torch.cuda.is_available())
    assert ("distill_temperature" in _logged_not_applied(caplog)) == (recipe.distill_teacher is not None)


# A user's CPU run of the config: small scenes, narrow heads, a few iterations, no evaluation.
CPU = ["MODEL.DEVICE", "cpu", "MODEL.FPN.OUT_CHANNELS", "32", "MODEL.ROI_BOX_HEAD.FC_DIM", "128",
       "MODEL.RPN.PRE_NMS_TOPK_TRAIN", "300", "MODEL.RPN.POST_NMS_TOPK_TRAIN", "100",
       "MODEL.RPN.BATCH_SIZE_PER_IMAGE", "64", "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "64",
       "INPUT.MIN_SIZE_TRAIN", "(96,)", "INPUT.MAX_SIZE_TRAIN", "96", "DATALOADER.NUM_WORKERS", "0",
       "SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", "6", "SOLVER.CHECKPOINT_PERIOD", "1000", "DATASETS.TEST", "()"]


@pytest.mark.slow
def test_train_net_recipe_trains_at_the_recipes_lr(user_config, scenes_root, tmp_path):
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from d2_ext.train_net import cli
    from plugins.runtime.lr_record import read_lr_record

    names = d2_ext.register_fashion_scenes(scenes_root)
    try:
        (tmp_path / "r.yaml").write_text("warmup_epochs: 0.5\nschedule: cosine\n")  # warm up half an epoch
        cli(["--config-file", str(user_config), "--recipe", str(tmp_path / "r.yaml"), *CPU,
             "OUTPUT_DIR", str(tmp_path / "out")])
    finally:
        for name in names:
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
    recipe = Recipe.from_yaml(tmp_path / "r.yaml")
    per_epoch = 8 // 2  # 8 training scenes at IMS_PER_BATCH 2
    warmup = epochs_to_steps(0.5, per_epoch)
    steps, lrs = read_lr_record(tmp_path / "out" / "lr_per_step.csv")
    assert steps == list(range(1, 7))
    for g in lrs:  # every param group, every iteration: the recipe's closed form at the detector's batch
        assert g == [scale_lr(recipe.base_lr, 2, recipe.base_batch_size) * warmup_cosine_factor(i, 6, warmup)
                     for i in steps]
    saved = (tmp_path / "out" / "config.yaml").read_text()
    assert "RECIPE_RESOLVED" in saved and "warmup_epochs: 0.5" in saved
