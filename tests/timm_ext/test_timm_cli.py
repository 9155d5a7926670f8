"""tricks-train is timm's train.py command line: every flag with timm's default, timm's run and outputs.

The table ``data/timm_train_flags.json`` is extracted from timm's train.py (scripts/timm_train_flags.py); the
parser must hold every flag in it with the same aliases, type, choices, nargs, const and default.
"""

import argparse
import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from timm_ext import cli
from timm_ext import train as train_cmd
from timm_ext._timm_flags import WIDENED

TABLE = json.loads((Path(__file__).parent / "data" / "timm_train_flags.json").read_text())
# timm's update_summary columns with validation (timm.utils.summary), in order.
TIMM_SUMMARY_COLUMNS = ["epoch", "train_loss", "eval_loss", "eval_top1", "eval_top5", "lr"]
TYPES = {"int": int, "float": float, "str": None}


def _actions() -> dict[str, argparse.Action]:
    out = {}
    for action in cli.build_parser()._actions:
        for name in action.option_strings or [action.dest]:
            out[name] = action
    return out


def test_the_table_is_timms_whole_command_line():
    assert len(TABLE["flags"]) == 173  # timm train.py's argparse entries, -c/--config and the positional dir
    names = {n for f in TABLE["flags"] for n in f["names"]}
    assert {"-c", "data", "--aa", "--reprob", "--model-ema", "--sched-on-updates", "-j", "--dr"} <= names


@pytest.mark.parametrize("flag", TABLE["flags"], ids=lambda f: f["names"][-1])
def test_parser_has_every_timm_flag_with_timms_default(flag):
    actions = _actions()
    name = flag["names"][-1]
    assert name in actions, f"{name} missing from tricks-train"
    action = actions[name]
    if action.option_strings:
        assert sorted(action.option_strings) == sorted(flag["names"]), name
    expected_default = flag.get("default", False if flag.get("action") == "store_true" else None)
    assert action.default == expected_default, f"{name}: default {action.default!r}, timm {expected_default!r}"
    if "type" in flag and name not in WIDENED:
        want = TYPES.get(flag["type"], flag["type"])
        assert action.type is want or (want is None and action.type is str), f"{name}: type {action.type}"
    for key in ("nargs", "choices", "const"):
        if key in flag:
            got = getattr(action, key)
            assert (list(got) if isinstance(got, tuple) else got) == flag[key], f"{name}: {key}"
    if flag.get("action") == "store_true":
        assert isinstance(action, argparse._StoreTrueAction), name
    if flag.get("action") == "utils.ParseKwargs":
        assert type(action).__name__ == "ParseKwargs", name


def test_widened_flags_accept_every_timm_value_and_timms_run_refuses_the_rest(capsys):
    assert set(WIDENED) == {"--warmup-epochs"}
    args, _, _ = cli.parse_args(["--warmup-epochs", "3"])
    assert args.warmup_epochs == 3
    assert train_cmd.main(["--dataset", "fashion_mnist", "--warmup-epochs", "0.5"]) == 2
    assert "argument --warmup-epochs: timm's --sched cosine takes whole epochs, got 0.5" in capsys.readouterr().err


def test_a_timm_command_line_parses_to_timms_values_and_c_repeats_it(tmp_path):
    argv = ["/data/imagenet", "--model", "resnet50d", "-b", "64", "--sched", "step", "--dr", "0.5", "-j", "2",
            "--aa", "rand-m9-mstd0.5", "--model-kwargs", "output_stride=16"]
    args, given, text = cli.parse_args(argv)
    assert (args.data, args.batch_size, args.sched, args.decay_rate, args.workers) == ("/data/imagenet", 64, "step",
                                                                                        0.5, 2)
    assert args.model_kwargs == {"output_stride": 16}
    assert (args.smoothing, args.weight_decay, args.epochs, args.seed) == (0.1, 2e-5, 300, 42)  # timm's defaults
    assert {"batch_size", "sched", "decay_rate", "aa"} <= given and "smoothing" not in given
    (tmp_path / "args.yaml").write_text(text)
    again, given_again, _ = cli.parse_args(["-c", str(tmp_path / "args.yaml")])
    assert {**vars(again), "config": ""} == vars(args)
    assert "batch_size" in given_again
    override, _, _ = cli.parse_args(["-c", str(tmp_path / "args.yaml"), "-b", "8"])
    assert override.batch_size == 8


def test_bad_config_key_names_the_key_and_the_closest_flag(tmp_path, capsys):
    (tmp_path / "c.yaml").write_text("batch_sise: 8\n")
    with pytest.raises(SystemExit) as err:
        cli.parse_args(["-c", str(tmp_path / "c.yaml")])
    assert err.value.code == 2
    message = capsys.readouterr().err
    assert "-c/--config" in message and "'batch_sise' (did you mean 'batch_size'?)" in message


def _image_folder(root: Path) -> Path:
    """3 classes of RGB images of several sizes, timm's ImageFolder layout (train/, validation/)."""
    rng = np.random.default_rng(0)
    for split, n in (("train", 8), ("validation", 4)):
        for c in range(3):
            d = root / split / f"class{c}"
            d.mkdir(parents=True)
            for i in range(n):
                h, w = (int(v) for v in rng.integers(24, 48, 2))
                Image.fromarray((rng.random((h, w, 3)) * 80 + c * 60).astype(np.uint8)).save(d / f"{i}.png")
    return root


TIMM_LINE = ["--model", "tricks_resnet26nd", "--num-classes", "3", "--img-size", "32", "-b", "4", "-j", "0",
             "--aa", "rand-m9-mstd0.5", "--reprob", "0.25", "--cutmix", "1.0", "--model-ema", "--drop-path", "0.05",
             "--opt", "lamb", "--sched", "cosine", "--sched-on-updates", "--warmup-epochs", "1", "--seed", "3"]


@pytest.mark.slow
def test_timm_command_line_trains_with_timms_outputs_and_resumes(tmp_path):
    data = _image_folder(tmp_path / "data")
    out = tmp_path / "output"
    line = [str(data), *TIMM_LINE, "--output", str(out), "--experiment", "run"]
    assert train_cmd.main([*line, "--epochs", "2"]) == 0
    run = out / "run"
    names = sorted(p.name for p in run.iterdir())
    assert {"args.yaml", "summary.csv", "last.pth.tar", "model_best.pth.tar", "checkpoint-0.pth.tar",
            "checkpoint-1.pth.tar", "lr_per_step.csv", "lr_curve.png"} <= set(names)
    args = yaml.safe_load((run / "args.yaml").read_text())
    assert (args["aa"], args["reprob"], args["cutmix"], args["model_ema"], args["opt"]) == (
        "rand-m9-mstd0.5", 0.25, 1.0, True, "lamb")
    rows = list(csv.reader(open(run / "summary.csv")))
    assert rows[0] == [*TIMM_SUMMARY_COLUMNS, "images_per_s", "epoch_time", "epoch_cpu_time"]  # timm's, then ours appended
    assert [r[0] for r in rows[1:]] == ["0", "1"]
    with torch.serialization.safe_globals([argparse.Namespace]):
        ckpt = torch.load(run / "last.pth.tar", weights_only=True)
    assert {"state_dict", "state_dict_ema", "optimizer", "epoch", "args"} <= set(ckpt) and ckpt["epoch"] == 1
    assert ckpt["args"].model == "tricks_resnet26nd"
    # the lr every update used: warmup then cosine, per update (--sched-on-updates), 6 updates per epoch
    lrs = [float(r["lr_group0"]) for r in csv.DictReader(open(run / "lr_per_step.csv"))]
    assert len(lrs) == 12 and lrs[0] == pytest.approx(1e-5) and max(lrs) > lrs[-1]

    assert train_cmd.main([*line, "--epochs", "3", "--resume", str(run / "last.pth.tar")]) == 0
    rows = list(csv.reader(open(run / "summary.csv")))
    assert rows[0][:6] == TIMM_SUMMARY_COLUMNS and [r[0] for r in rows[1:]] == ["0", "1", "2"]
    assert (run / "checkpoint-2.pth.tar").is_file()
    assert len(list(csv.DictReader(open(run / "lr_per_step.csv")))) == 18


@pytest.mark.parametrize("argv, expected", [
    (["--smoothing", "abc"], "--smoothing: invalid float value: 'abc'"),
    (["--naflex-loader"], "--naflex-loader: the NaFlex loader"),
    (["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
    (["--sched", "linear"], "--sched: unknown schedule 'linear'"),
    (["--kd-teacher", "x.pth"], "--kd-teacher x.pth: checkpoint not found"),
])
def test_bad_flags_exit_2_naming_the_flag_and_keep_earlier_outputs(tmp_path, capsys, argv, expected):
    run = tmp_path / "output" / "run"
    run.mkdir(parents=True)
    (run / "summary.csv").write_text("kept\n")
    line = ["--dataset", "fashion_mnist", "--output", str(tmp_path / "output"), "--experiment", "run", *argv]
    try:
        code = train_cmd.main(line)
    except SystemExit as err:
        code = err.code
    assert code == 2
    assert expected in capsys.readouterr().err
    assert (run / "summary.csv").read_text() == "kept\n"


def _timm_args(*argv):
    args, given, _ = cli.parse_args(["--dataset", "fashion_mnist", *argv])
    return args, given


def test_paper_switches_on_timms_run_go_both_ways():
    from timm.loss import LabelSmoothingCrossEntropy as TimmSmoothing

    from plugins.tricks.label_smoothing import LabelSmoothingCrossEntropy as PaperSmoothing
    from timm_ext._timm_setup import build_model, build_optimizer, loss_fns

    def groups(*argv):
        args, _ = _timm_args("--model", "resnet18", "--weight-decay", "1e-4", *argv)
        model, _ = build_model(args)
        return [(len(g["params"]), g["weight_decay"]) for g in build_optimizer(args, model).param_groups]

    timm_default = groups()  # timm's factory: biases and norms without decay
    assert sorted(d for _, d in timm_default) == [0.0, 1e-4]
    assert groups("--bias-decay") == [(sum(n for n, _ in timm_default), 1e-4)]  # the paper's baseline: all decay

    def last_gamma(*argv):
        args, _ = _timm_args("--model", "resnet18", *argv)
        return float(build_model(args)[0].layer1[0].bn2.weight.abs().sum())

    assert last_gamma() == 0.0 and last_gamma("--zero-gamma") == 0.0  # timm's ResNet zero-inits by default
    assert last_gamma("--no-zero-gamma") > 0.0

    args, _ = _timm_args("--smoothing", "0.2", "--smoothing-form", "paper")
    train_loss, _ = loss_fns(args, mixup_active=False, num_aug_splits=0, device=torch.device("cpu"))
    assert isinstance(train_loss, PaperSmoothing) and (train_loss.epsilon, train_loss.form) == (0.2, "paper")
    args, _ = _timm_args("--smoothing", "0.2")
    assert isinstance(loss_fns(args, False, 0, torch.device("cpu"))[0], TimmSmoothing)  # timm's, uniform form


@pytest.mark.slow
def test_built_in_data_runs_through_timms_loaders(tmp_path, fashion_mnist):
    out = tmp_path / "output"
    argv = ["--dataset", "fashion_mnist", "--model", "tricks_resnet26nd", "--train-subset", "64",
            "--val-subset", "32", "-b", "16", "-j", "0", "--epochs", "1", "--warmup-epochs", "0",
            "--output", str(out), "--experiment", "fm", "--export-backbone", str(tmp_path / "backbone.pth")]
    assert train_cmd.main(argv) == 0
    args = yaml.safe_load((out / "fm" / "args.yaml").read_text())  # as parsed (timm's): -c repeats the command
    assert (args["dataset"], args["train_subset"], args["num_classes"]) == ("fashion_mnist", 64, None)
    with torch.serialization.safe_globals([argparse.Namespace]):
        resolved = torch.load(out / "fm" / "last.pth.tar", weights_only=True)["args"]
    assert (resolved.num_classes, resolved.img_size, resolved.in_chans, resolved.crop_pct) == (10, 28, 1, 1.0)
    rows = list(csv.DictReader(open(out / "fm" / "summary.csv")))
    assert len(rows) == 1 and 0.0 <= float(rows[0]["eval_top1"]) <= 100.0
    from plugins.runtime.checkpoint import load_checkpoint

    meta = load_checkpoint(tmp_path / "backbone.pth")["meta"]
    assert (meta["model_name"], meta["num_classes"], meta["in_chans"]) == ("tricks_resnet26nd", 10, 1)


@pytest.mark.slow
@pytest.mark.distributed
def test_timms_run_under_torchrun_scales_the_lr_by_the_global_batch(tmp_path, fashion_mnist, command_env):
    import subprocess
    import sys

    argv = ["--dataset", "fashion_mnist", "--model", "tricks_resnet26nd", "--train-subset", "64", "--val-subset",
            "32", "-b", "8", "-j", "0", "--epochs", "1", "--warmup-epochs", "0", "--sched", "none"]
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "timm_ext.train", *argv, "--output", str(tmp_path), "--experiment", "ddp"],
                          env=command_env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lrs = [float(r["lr_group0"]) for r in csv.DictReader(open(tmp_path / "ddp" / "lr_per_step.csv"))]
    assert lrs == [pytest.approx(0.1 * 16 / 256)] * 4  # timm's rule on the global batch 2 x 8; 64 / 16 updates
    assert len(list(csv.DictReader(open(tmp_path / "ddp" / "summary.csv")))) == 1


def test_recipe_paper_on_the_same_image_folder_runs_the_papers_curve(tmp_path, capsys):
    from plugins.recipe import Recipe

    data = _image_folder(tmp_path / "data")
    argv = [str(data), "--recipe", "paper", "--model", "tricks_resnet26nd", "--img-size", "32", "-b", "4",
            "--epochs", "2", "--warmup-epochs", "0.5", "--no-amp", "--no-progress", "-j", "0",
            "--output", str(tmp_path / "out"), "--experiment", "paper"]
    assert train_cmd.main(argv) == 0, capsys.readouterr().err
    run = tmp_path / "out" / "paper"
    recipe = Recipe.from_yaml(run / "recipe.yaml")
    assert (recipe.warmup_epochs, recipe.schedule, recipe.label_smoothing, recipe.batch_size) == (0.5, "cosine",
                                                                                                   0.1, 4)
    rows = list(csv.DictReader(open(run / "lr_per_step.csv")))
    steps_per_epoch = 24 // 4
    assert len(rows) == 2 * steps_per_epoch
    for row in rows:  # the closed form of every update, first included, to the last bit
        assert float(row["lr_group0"]) == recipe.lr_at(int(row["step"]), steps_per_epoch)
    assert {"last.pth.tar", "model_best.pth.tar", "recipe.yaml", "summary.csv", "args.yaml"} <= {
        p.name for p in run.iterdir()}
    assert list(csv.DictReader(open(run / "summary.csv")))[0].keys() >= set(TIMM_SUMMARY_COLUMNS)
