"""Command line of tricks-train / tricks-validate: --help, recipe resolution, and bad input (exit status 2)."""

import re
import subprocess
import sys

import pytest

from plugins.recipe import Recipe
from timm_ext import train as train_cmd
from timm_ext import validate as validate_cmd
from timm_ext._args import UsageError, build_parser, resolve_recipe

EXTENSION_FLAGS = [
    "--recipe", "--zero-gamma", "--no-zero-gamma", "--no-bias-decay", "--bias-decay", "--smoothing-form",
    "--kd-teacher", "--kd-model", "--kd-temperature", "--dataset", "--export-backbone", "--train-subset",
    "--val-subset", "--checkpoint-interval", "--log-interval", "--grad-accum-steps", "--hflip", "--device",
    "--debug", "--no-progress",
]
TIMM_FLAGS = [
    "--model", "--num-classes", "--img-size", "--in-chans", "--batch-size", "--epochs", "--opt", "--momentum",
    "--weight-decay", "--lr", "--lr-base", "--lr-base-size", "--sched", "--warmup-epochs", "--min-lr",
    "--smoothing", "--mixup", "--amp", "--channels-last", "--seed", "--output", "--resume", "--data-dir",
    "--workers", "--model-kwargs", "--decay-milestones", "--decay-rate",
]


def _recipe(argv: list[str]) -> list[str]:
    """A recipe-engine command line (without --recipe, tricks-train runs timm's run)."""
    return argv if "--recipe" in argv else ["--recipe", "baseline", *argv]


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


def test_help_lists_every_flag_with_its_default(capsys):
    with pytest.raises(SystemExit) as exit_info:
        train_cmd.main(["--help"])
    assert exit_info.value.code == 0
    entries = _help_entries(capsys.readouterr().out)
    for flag in EXTENSION_FLAGS + TIMM_FLAGS:
        assert flag in entries, f"{flag} missing from --help"
        assert re.search(r"\(default:\s", entries[flag]), f"{flag}: no default in its help: {entries[flag]}"


def _resolve(*argv, world_size=1):
    return resolve_recipe(build_parser().parse_args(list(argv)), world_size)


def test_default_recipe_is_the_baseline_with_every_trick_off():
    recipe, args = _resolve("--epochs", "3", "--decay-milestones", "2")
    assert recipe.name == "baseline"
    assert (recipe.label_smoothing, recipe.mixup_alpha, recipe.no_bias_decay, recipe.zero_gamma) == (0, 0, False, False)
    assert args.model == "tricks_resnet50nb" and args.dataset == "fashion_mnist" and args.opt == "nesterov"


def test_explicit_flags_override_recipe_fields_and_the_rest_stays():
    recipe, args = _resolve("--recipe", "paper", "--smoothing", "0.2", "--smoothing-form", "uniform", "--mixup", "0",
                            "--no-zero-gamma", "--bias-decay", "--epochs", "10", "--warmup-epochs", "2",
                            "--sched", "none", "--opt", "momentum", "--kd-temperature", "4", "--no-amp")
    paper = Recipe.preset("paper")
    assert (recipe.label_smoothing, recipe.label_smoothing_form, recipe.mixup_alpha) == (0.2, "uniform", 0.0)
    assert (recipe.zero_gamma, recipe.no_bias_decay, recipe.epochs, recipe.warmup_epochs) == (False, False, 10, 2)
    assert (recipe.schedule, recipe.nesterov, recipe.distill_temperature, recipe.amp) == ("constant", False, 4.0, False)
    assert (recipe.base_lr, recipe.weight_decay, recipe.variant) == (paper.base_lr, paper.weight_decay, "d")
    assert args.opt == "momentum"


def test_tricks_model_name_sets_variant_and_depth():
    recipe, args = _resolve("--recipe", "paper", "--model", "tricks_resnet26na")
    assert (recipe.variant, recipe.depth, args.model) == ("a", 26, "tricks_resnet26na")
    recipe, args = _resolve("--recipe", "paper", "--model", "resnet50d")  # not ours: used as given
    assert (recipe.variant, args.model) == ("d", "resnet50d")


def test_linear_scaling_uses_the_global_batch():
    recipe, args = _resolve("--recipe", "paper", "-b", "32", "--grad-accum-steps", "2", "--lr-base", "0.2",
                            "--lr-base-size", "128", world_size=4)
    assert recipe.batch_size == 32 * 4 * 2 and args.batch_size == 32
    assert recipe.scaled_lr() == pytest.approx(0.2 * 256 / 128)
    recipe, args = _resolve("--recipe", "paper", world_size=4)  # recipe batch 1024 is global: 256 per process
    assert args.batch_size == 256


def test_absolute_lr_overrides_scaling_and_min_lr_becomes_a_ratio():
    recipe, _ = _resolve("--recipe", "paper", "-b", "64", "--lr", "0.05", "--lr-base", "3", "--min-lr", "0.005")
    assert recipe.scaled_lr() == pytest.approx(0.05, rel=1e-15)
    assert recipe.min_lr_ratio == pytest.approx(0.1)


BAD_PARSE = [
    (["--smoothing", "1.5"], "--smoothing"),
    (["-b", "0"], "--batch-size"),
    (["--lr", "-0.1"], "--lr"),
    (["--opt", "lamb"], "--opt"),
    (["--smoothing-form", "kl"], "--smoothing-form"),
    (["--dataset", "imagenet"], "--dataset"),
]


@pytest.mark.parametrize("argv, flag", BAD_PARSE, ids=[a[0] for a, _ in BAD_PARSE])
def test_malformed_flags_exit_2_naming_the_flag(argv, flag, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train_cmd.main(_recipe(argv))
    assert exit_info.value.code == 2
    assert flag in capsys.readouterr().err


BAD_INPUT = [
    (["--recipe", "nope"], r"--recipe nope: .*baseline.*paper"),
    (["--recipe", "paper", "--epochs", "2"], r"--recipe paper with --epochs 2: .*warmup_epochs.*--warmup-epochs"),
    (["--warmup-epochs", "500"], r"--warmup-epochs 500.0: .*warmup_epochs"),
    (["--opt", "nesterov", "--momentum", "0"], r"--opt nesterov --momentum 0.0: .*nesterov"),
    (["--model", "tricks_resnet26nz"], r"--model tricks_resnet26nz: not a timm model"),
    (["--model-kwargs", "zero_init_last=True"], r"--model-kwargs.*--zero-gamma"),
]


@pytest.mark.parametrize("argv, message", BAD_INPUT, ids=[" ".join(a) for a, _ in BAD_INPUT])
def test_bad_input_exits_2_with_one_message(argv, message, capsys, tmp_path, fashion_mnist):
    common = ["--output", str(tmp_path / "out"), "-b", "16", "--train-subset", "64", "--val-subset", "16", "--no-progress"]
    assert train_cmd.main(_recipe(argv + common)) == 2  # every case fails before the first update
    err = capsys.readouterr().err
    assert re.search(message, err), err
    assert "Traceback" not in err


def test_missing_dataset_and_unwritable_output(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("FASHION_MNIST_DIR", str(tmp_path / "nowhere"))
    assert train_cmd.main(_recipe(["--output", str(tmp_path / "out")])) == 2
    assert re.search(r"--dataset fashion_mnist: .*not found.*install", capsys.readouterr().err)
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert train_cmd.main(_recipe(["--output", str(blocker / "out")])) == 2
    assert re.search(r"--output .*file/out: cannot write there", capsys.readouterr().err)


def test_empty_image_folder_is_a_clear_error(capsys, tmp_path):
    for split in ("train", "val"):
        (tmp_path / "data" / split / "cat").mkdir(parents=True)
    assert train_cmd.main(_recipe(["--data-dir", str(tmp_path / "data"), "--output", str(tmp_path / "out")])) == 2
    assert re.search(r"--data-dir .*holds no usable images", capsys.readouterr().err)


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
