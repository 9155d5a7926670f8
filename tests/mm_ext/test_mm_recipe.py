"""mm_ext.train --recipe: one plugins.recipe.Recipe laid over a stock-based MMEngine config (what each field
sets, --cfg-options still win), and a short training whose every iteration runs at the recipe's lr."""

from pathlib import Path

import pytest

pytest.importorskip("mmdet")

import torch  # noqa: E402

from mm_ext.train import build_parser, load_config, main  # noqa: E402
from plugins.recipe import Recipe  # noqa: E402
from plugins.recipe.plan import epochs_to_steps
from plugins.runtime.lr_record import read_lr_record  # noqa: E402
from plugins.tricks.lr_schedule import warmup_cosine_factor  # noqa: E402

USER_CONFIGS = Path(__file__).resolve().parent / "user_configs"
# batch 2 = base_batch_size: MMEngine's auto_scale_lr (lr * 2 / 2) and the recipe's scaled lr are the same float
RECIPE = "base_batch_size: 2\nbatch_size: 2\nwarmup_epochs: 0.5\nschedule: cosine\nno_bias_decay: true\n"


def _assert_the_recipes_lr(recipe_path, lr_csv, total=6, per_epoch=8 // 2):
    """Every update of both param groups (decay, no decay) ran at the recipe's closed form, to the last bit."""
    recipe = Recipe.from_yaml(recipe_path)
    plan = recipe.lr_schedule(per_epoch, total_steps=total)  # the 8 training scenes at batch 2 count the epoch
    assert plan.warmup_steps == epochs_to_steps(0.5, per_epoch) == 2
    steps, lrs = read_lr_record(lr_csv)
    assert steps == list(range(1, total + 1)) and len(lrs) == 2
    for group in lrs:
        assert group == [recipe.scaled_lr() * warmup_cosine_factor(i, total, plan.warmup_steps) for i in steps]


def test_the_recipe_sets_mmengines_keys_and_cfg_options_win(tmp_path):
    paper = Recipe.preset("paper")
    config = str(USER_CONFIGS / "faster-rcnn_timm-r26nd_fpn_1x_coco.py")  # _base_: mmdet's 1x schedule (epochs)
    cfg = load_config(build_parser().parse_args([config, "--recipe", "paper", "--work-dir", str(tmp_path)]))
    opt = cfg.optim_wrapper.optimizer
    assert (opt.type, opt.lr, opt.momentum, opt.nesterov, opt.weight_decay) == (
        "SGD", paper.base_lr, paper.momentum, paper.nesterov, paper.weight_decay)
    assert cfg.optim_wrapper.constructor == "NoBiasDecayOptimWrapperConstructor"
    assert (cfg.auto_scale_lr.enable, cfg.auto_scale_lr.base_batch_size) == (True, paper.base_batch_size)
    [sched] = cfg.param_scheduler
    assert (sched.type, sched.schedule, sched.by_epoch, sched.convert_to_iter_based, sched.warmup_steps,
            sched.end) == ("TricksLR", "cosine", True, True, paper.warmup_epochs, cfg.train_cfg.max_epochs)
    loss = cfg.model.roi_head.bbox_head.loss_cls  # swapped by type, the inherited keys kept
    assert (loss.type, loss.epsilon, loss.form, loss.loss_weight) == ("LabelSmoothingCrossEntropyLoss",
                                                                      paper.label_smoothing, "paper", 1.0)
    assert cfg.model.backbone.zero_gamma is True
    assert Recipe.from_yaml(tmp_path / "recipe.yaml") == paper
    cfg = load_config(build_parser().parse_args([config, "--recipe", "paper", "--work-dir", str(tmp_path),
                                                 "--cfg-options", "optim_wrapper.optimizer.lr=0.02"]))
    assert cfg.optim_wrapper.optimizer.lr == 0.02


def test_bad_recipes_exit_2_naming_the_flag(tmp_path, capsys):
    config = str(USER_CONFIGS / "faster-rcnn_timm-r26nd_fpn_1x_coco.py")
    assert main([config, "--recipe", "nope", "--work-dir", str(tmp_path)]) == 2
    assert "--recipe nope: not a preset nor a file" in capsys.readouterr().err
    (tmp_path / "w.yaml").write_text("warmup_epochs: 3\n")  # 3 epochs of 4 iterations > max_iters=6
    fashion = str(Path(__file__).resolve().parents[2] / "mm_ext" / "configs" /
                  "faster-rcnn_timm-r26nd_fpn_baseline_fashion-scenes.py")
    assert main([fashion, "--recipe", str(tmp_path / "w.yaml"), "--recipe-iters-per-epoch", "4", "--work-dir",
                 str(tmp_path), "--cfg-options", "train_cfg.max_iters=6"]) == 2
    err = capsys.readouterr().err
    assert "--recipe " in err and "train_cfg.max_iters=6" in err and "warmup_steps" in err, err


def test_a_step_recipe_becomes_tricks_lr_in_iterations_or_epochs(tmp_path):
    (tmp_path / "s.yaml").write_text("schedule: step\nstep_milestones: [8, 11]\nstep_gamma: 0.1\nepochs: 12\n"
                                     "warmup_epochs: 0.5\n")
    config = str(USER_CONFIGS / "faster-rcnn_timm-r26nd_fpn_1x_coco.py")  # max_epochs 12: stays in epochs
    cfg = load_config(build_parser().parse_args([config, "--recipe", str(tmp_path / "s.yaml"), "--work-dir",
                                                 str(tmp_path)]))
    [sched] = cfg.param_scheduler
    assert (sched.type, sched.schedule, sched.milestones, sched.gamma, sched.warmup_steps, sched.by_epoch,
            sched.convert_to_iter_based) == ("TricksLR", "step", [8, 11], 0.1, 0.5, True, True)
    fashion = str(Path(__file__).resolve().parents[2] / "mm_ext" / "configs" /
                  "faster-rcnn_timm-r26nd_fpn_baseline_fashion-scenes.py")  # max_iters: milestones in iterations
    cfg = load_config(build_parser().parse_args([fashion, "--recipe", str(tmp_path / "s.yaml"),
                                                 "--recipe-iters-per-epoch", "10", "--work-dir", str(tmp_path),
                                                 "--cfg-options", "train_cfg.max_iters=120"]))
    [sched] = cfg.param_scheduler
    assert (sched.schedule, sched.milestones, sched.warmup_steps, sched.by_epoch, sched.end) == (
        "step", [80, 110], 5, False, 120)


@pytest.mark.parametrize("text", ["distill_temperature: 5.0\n",  # distillation off: its temperature means nothing
                                  "distill_teacher: teacher.pth\nmixup_alpha: 0.2\n", "amp: true\n"])
def test_the_printed_list_of_what_mmengine_does_not_apply_is_the_one_list(tmp_path, capsys, text):
    from plugins.recipe import not_applied

    (tmp_path / "r.yaml").write_text("schedule: cosine\n" + text)
    config = str(USER_CONFIGS / "faster-rcnn_timm-r26nd_fpn_1x_coco.py")
    load_config(build_parser().parse_args([config, "--recipe", str(tmp_path / "r.yaml"), "--work-dir",
                                           str(tmp_path)]))
    [line] = [line for line in capsys.readouterr().out.splitlines() if "not applied to MMEngine" in line]
    listed = line.split("not applied to MMEngine: ")[1]
    printed = () if listed == "nothing" else tuple(item.split(" (")[0] for item in listed.split(", "))
    recipe = Recipe.from_yaml(tmp_path / "r.yaml")
    assert printed == not_applied(recipe, "mmengine", cuda=torch.cuda.is_available())
    assert ("distill_temperature" in printed) == (recipe.distill_teacher is not None)


@pytest.mark.slow
def test_training_with_the_recipe_runs_at_its_lr(fashion_argv, tmp_path):
    (tmp_path / "r.yaml").write_text(RECIPE)
    argv = fashion_argv("faster-rcnn_timm-r26nd_fpn_baseline_fashion-scenes.py", tmp_path / "w", max_iters=6,
                        extra=["--recipe", str(tmp_path / "r.yaml")])
    assert main(argv) == 0
    _assert_the_recipes_lr(tmp_path / "r.yaml", tmp_path / "w" / "lr_per_step.csv")


@pytest.mark.slow
def test_mmdets_own_tools_train_lays_a_recipe_named_in_the_config(fashion_argv, fashion_scenes, tmp_path):
    import importlib.util
    import os
    import subprocess
    import sys

    import mm_ext

    tools = Path(importlib.util.find_spec("mmdet").origin).parent / ".mim" / "tools" / "train.py"
    if not tools.is_file():
        pytest.skip(f"mmdet is installed without its tools/train.py ({tools})")
    (tmp_path / "r.yaml").write_text(RECIPE)
    base = Path(mm_ext.__file__).parent / "configs" / "faster-rcnn_timm-r26nd_fpn_baseline_fashion-scenes.py"
    user = tmp_path / "my_faster-rcnn_recipe.py"  # a user's config: the shipped one, and the recipe named
    user.write_text(f"_base_ = {str(base)!r}\nrunner_type = 'RecipeRunner'\ntricks_recipe = {str(tmp_path / 'r.yaml')!r}\n"
                    "train_dataloader = dict(batch_size=2)\ntrain_cfg = dict(max_iters=6, val_interval=6)\n")
    argv = fashion_argv("faster-rcnn_timm-r26nd_fpn_baseline_fashion-scenes.py", tmp_path / "w", max_iters=6)
    argv[0] = str(user)
    argv = [a for a in argv if not a.startswith(("train_cfg.max_iters", "train_cfg.val_interval",
                                                 "train_dataloader.batch_size"))]
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run([sys.executable, str(tools), *argv], cwd=tmp_path, capture_output=True, text=True,
                            env={**os.environ, "FASHION_SCENES_ROOT": f"{fashion_scenes}/", "PYTHONPATH": str(root)},
                            timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    _assert_the_recipes_lr(tmp_path / "r.yaml", tmp_path / "w" / "lr_per_step.csv")
    assert Recipe.from_yaml(tmp_path / "w" / "recipe.yaml") == Recipe.from_yaml(tmp_path / "r.yaml")
