"""Command line of tricks-train / tricks-validate: --help, --recipe as defaults of timm's flags, and bad input."""

import re
import subprocess
import sys

import pytest
import yaml

from plugins.recipe import Recipe
from timm_ext import cli
from timm_ext import train as train_cmd
from timm_ext import validate as validate_cmd
from timm_ext._recipe_flags import recipe_from_args
from timm_ext.cli import UsageError

EXTENSION_FLAGS = [
    "--recipe", "--zero-gamma", "--no-zero-gamma", "--no-bias-decay", "--bias-decay", "--smoothing-form",
    "--min-lr-ratio", "--kd-teacher", "--kd-model", "--export-backbone", "--train-subset", "--val-subset",
    "--no-amp", "--debug", "--no-progress",
]


def _help_entries(text: str) -> dict[str, str]:
    """Flag -> its help block (the lines from the flag to the next flag)."""
    entries, current = {}, None
    for line in text.splitlines():
        match = re.match(r"\s{2}(?:-\w(?: \S+)?, )?(--[\w-]+)", line)
        if match:
            current = match.group(1)
            entries[current] = ""
        if current:
            entries[current] += " " + line.strip()
    return entries


def test_help_lists_every_extension_flag_with_its_default(capsys):
    with pytest.raises(SystemExit) as exit_info:
        train_cmd.main(["--help"])
    assert exit_info.value.code == 0
    entries = _help_entries(capsys.readouterr().out)
    for flag in EXTENSION_FLAGS:
        assert flag in entries, f"{flag} missing from --help"
        assert re.search(r"\(default:\s", entries[flag]), f"{flag}: no default in its help: {entries[flag]}"


def _parse(*argv):
    args, given, text = cli.parse_args(list(argv))
    return args, given, text


def test_recipe_sets_the_defaults_of_timms_flags(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    args, given, _ = _parse("--recipe", "paper", "--dataset", "fashion_mnist")
    paper = Recipe.preset("paper")
    assert given == {"recipe", "dataset"}
    assert (args.model, args.batch_size, args.epochs, args.warmup_epochs) == ("tricks_resnet50nd", 1024, 200, 5)
    assert (args.lr, args.lr_base, args.lr_base_size, args.lr_base_scale) == (None, 0.1, 256, "linear")
    assert (args.sched, args.min_lr_ratio, args.opt, args.momentum) == ("tricks_cosine", 0.0, "sgd", 0.9)
    assert (args.weight_decay, args.no_bias_decay, args.zero_gamma) == (paper.weight_decay, True, True)
    assert (args.smoothing, args.smoothing_form, args.mixup, args.amp) == (0.1, "paper", 0.2, True)
    assert args.kd_teacher is None and args.kd_temperature == 20.0
    # without the recipe: timm's own defaults
    timm_args, _, _ = _parse("--dataset", "fashion_mnist")
    assert (timm_args.model, timm_args.batch_size, timm_args.sched, timm_args.smoothing) == ("resnet50", 128, "cosine", 0.1)


def test_explicit_flags_and_the_config_file_win_over_the_recipe(tmp_path):
    config = tmp_path / "args.yaml"
    config.write_text(yaml.safe_dump({"epochs": 7, "smoothing": 0.3}))
    args, given, _ = _parse("--recipe", "paper", "-c", str(config), "--smoothing", "0.2", "--smoothing-form", "uniform",
                            "--mixup", "0", "--no-zero-gamma", "--bias-decay", "--warmup-epochs", "2", "--opt",
                            "momentum", "--kd-temperature", "4", "--no-amp", "--sched", "tricks_constant")
    assert args.epochs == 7  # the -c yaml over the recipe
    assert (args.smoothing, args.smoothing_form, args.mixup) == (0.2, "uniform", 0.0)  # command line over both
    assert (args.zero_gamma, args.no_bias_decay, args.warmup_epochs, args.opt) == (False, False, 2.0, "momentum")
    assert (args.kd_temperature, args.amp, args.sched) == (4.0, False, "tricks_constant")
    recipe, notes = recipe_from_args(Recipe.preset("paper"), args)
    assert notes == []
    assert (recipe.epochs, recipe.label_smoothing, recipe.label_smoothing_form, recipe.mixup_alpha) == (7, 0.2, "uniform", 0)
    assert (recipe.zero_gamma, recipe.no_bias_decay, recipe.nesterov, recipe.schedule) == (False, False, False, "constant")
    assert (recipe.base_lr, recipe.variant, recipe.distill_temperature, recipe.amp) == (0.1, "d", 4.0, False)


def test_global_batch_is_split_over_processes_and_accumulation(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    args, _, _ = _parse("--recipe", "paper", "--grad-accum-steps", "2")
    assert args.batch_size == 1024 // 8
    recipe, _ = recipe_from_args(Recipe.preset("paper"), args)
    assert recipe.batch_size == 1024 and recipe.scaled_lr() == 0.4
    monkeypatch.setenv("WORLD_SIZE", "3")
    with pytest.raises(UsageError, match=r"--recipe paper: batch_size 1024 is not divisible .*-b/--batch-size"):
        _parse("--recipe", "paper")
    args, _, _ = _parse("--recipe", "paper", "-b", "32")  # explicit: the global batch is 3 x 32
    assert recipe_from_args(Recipe.preset("paper"), args)[0].batch_size == 96


def test_a_short_run_cuts_the_warmup_and_drops_later_milestones_and_says_so():
    args, _, _ = _parse("--recipe", "baseline", "--epochs", "2", "--dataset", "fashion_mnist")
    args.warmup_epochs = 5.0
    recipe, notes = recipe_from_args(Recipe.preset("baseline"), args)
    assert recipe.warmup_epochs == 2 and recipe.step_milestones == ()
    assert any("--warmup-epochs 5 is longer than --epochs 2" in n for n in notes)
    assert any("--decay-milestones 30 60 90" in n for n in notes)


def test_tricks_model_name_sets_variant_and_depth():
    args, _, _ = _parse("--recipe", "paper", "--model", "tricks_resnet26na")
    recipe, _ = recipe_from_args(Recipe.preset("paper"), args)
    assert (recipe.variant, recipe.depth, args.model) == ("a", 26, "tricks_resnet26na")
    args, _, _ = _parse("--recipe", "paper", "--model", "resnet50d")  # not ours: used as given
    assert (recipe_from_args(Recipe.preset("paper"), args)[0].variant, args.model) == ("d", "resnet50d")


def test_args_yaml_records_the_resolved_values_and_repeats_the_run(tmp_path):
    _, _, text = _parse("--recipe", "efficient", "--dataset", "fashion_mnist", "--epochs", "3")
    saved = yaml.safe_load(text)
    assert saved["recipe"] == "efficient" and saved["epochs"] == 3 and saved["sched"] == "tricks_step"
    (tmp_path / "args.yaml").write_text(text)
    again, _, text_again = _parse("-c", str(tmp_path / "args.yaml"))
    assert {**yaml.safe_load(text_again), "config": ""} == saved and again.epochs == 3


BAD_INPUT = [
    (["--recipe", "nope"], r"--recipe nope: .*baseline.*paper"),
    (["--sched", "linear"], r"--sched: unknown schedule 'linear'; accepted: .*tricks_cosine"),
    (["--sched", "cosine", "--warmup-epochs", "0.5"], r"--warmup-epochs: timm's --sched cosine takes whole epochs"),
    (["--recipe", "paper", "--opt", "nesterov", "--momentum", "0"], r"--opt nesterov with --momentum 0: .*--opt momentum"),
    (["--model", "tricks_resnet26nz"], r"--model tricks_resnet26nz: not a timm model"),
    (["--kd-teacher", "missing.pth.tar"], r"--kd-teacher missing.pth.tar: checkpoint not found"),
    (["--smoothing-form", "paper", "--bce-loss"], r"--smoothing-form paper with --bce-loss"),
]


@pytest.mark.parametrize("argv, message", BAD_INPUT, ids=[" ".join(a) for a, _ in BAD_INPUT])
def test_bad_input_exits_2_with_one_message(argv, message, capsys, tmp_path, fashion_mnist):
    common = ["--dataset", "fashion_mnist", "--output", str(tmp_path / "out"), "-b", "16", "--train-subset", "64",
              "--val-subset", "16", "--epochs", "1"]
    assert train_cmd.main(argv + common) == 2  # every case fails before the first update
    err = capsys.readouterr().err
    assert re.search(message, err), err
    assert "Traceback" not in err and err.count("tricks-train: error:") == 1, err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.pth.tar"))


def test_missing_dataset_and_unwritable_output(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("FASHION_MNIST_DIR", str(tmp_path / "nowhere"))
    common = ["--dataset", "fashion_mnist", "--scale", "1", "1", "--ratio", "1", "1", "--color-jitter", "0"]
    assert train_cmd.main([*common, "--output", str(tmp_path / "out")]) == 2
    assert re.search(r"--dataset fashion_mnist: .*not found.*install", capsys.readouterr().err)
    monkeypatch.delenv("FASHION_MNIST_DIR")
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert train_cmd.main([*common, "--output", str(blocker / "out"), "--experiment", "x"]) == 2
    assert re.search(r"--output .*file/out/x: cannot write there", capsys.readouterr().err)


def test_debug_shows_the_traceback():
    with pytest.raises(UsageError, match="--recipe nope"):
        train_cmd.main(["--recipe", "nope", "--debug"])


def test_validate_refuses_a_backbone_file(tmp_path, capsys):
    import torch

    torch.save({"state_dict": {}, "meta": {"format": "bag-of-tricks/backbone/v1"}}, tmp_path / "backbone.pth")
    assert validate_cmd.main(["--checkpoint", str(tmp_path / "backbone.pth")]) == 2
    assert "has no classifier" in capsys.readouterr().err
    assert validate_cmd.main(["--checkpoint", str(tmp_path / "missing.pth")]) == 2
    assert "not found" in capsys.readouterr().err


def test_command_exits_2_without_traceback_in_a_subprocess(tmp_path, command_env):
    proc = subprocess.run([sys.executable, "-m", "timm_ext.train", "--recipe", "nope", "--output", str(tmp_path)],
                          capture_output=True, text=True, env=command_env, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("tricks-train: error: --recipe nope") and "Traceback" not in proc.stderr
