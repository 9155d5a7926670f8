"""--train-clean-subset and --ece-bins: the train-val gap and the calibration error per epoch in summary.csv,
checked against the last checkpoint's own predictions (in memory and through timm's PIL loaders)."""

import csv

import pytest
import torch

from plugins.runtime.calibration import expected_calibration_error
from timm_ext import train as train_cmd
from timm_ext._timm_data import in_memory_tensors
from timm_ext._timm_setup import clean_subset_indices, load_train_checkpoint

pytestmark = pytest.mark.slow


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("flips_only", [True, False], ids=["in-memory", "timm-loader"])
def test_clean_subset_and_calibration_columns_are_the_models_own(tmp_path, fashion_mnist, flips_only):
    torch.set_num_threads(1)
    aug = ["--scale", "1", "1", "--ratio", "1", "1", "--color-jitter", "0"] if flips_only else []
    code = train_cmd.main([
        "--dataset", "fashion_mnist", "--model", "tricks_resnet26nd", "--epochs", "2", "-b", "64", "--lr", "0.05",
        "--train-subset", "640", "--val-subset", "200", "--seed", "0", "--train-clean-subset", "150",
        "--ece-bins", "15", *aug, "--output", str(tmp_path), "--experiment", "run", "--no-progress"])
    assert code == 0
    rows = _rows(tmp_path / "run" / "summary.csv")
    assert len(rows) == 2 and {"eval_ece", "train_clean_loss", "train_clean_top1", "train_clean_ece"} <= set(rows[0])

    ckpt = load_train_checkpoint(str(tmp_path / "run" / "last.pth.tar"), "--resume")
    import timm

    model = timm.create_model("tricks_resnet26nd", num_classes=10, in_chans=1)
    model.load_state_dict(ckpt["state_dict"])
    model.eval()
    train_x, train_y = in_memory_tensors("fashion_mnist", "train", None, 28, 1, 640)
    val_x, val_y = in_memory_tensors("fashion_mnist", "test", None, 28, 1, 200)
    keep = clean_subset_indices(len(train_y), 150)
    assert len(keep) == 150 and keep[0] == 0 and keep[-1] == 639
    with torch.no_grad():
        fit_logits, val_logits = model(train_x[keep]), model(val_x)
    last = rows[-1]
    top1 = 100.0 * float((fit_logits.argmax(1) == train_y[keep]).double().mean())
    # the PIL path resizes nothing at 28 px; its pixels equal the in-memory tensors' to float rounding
    assert float(last["train_clean_top1"]) == pytest.approx(top1, abs=1.0)
    assert float(last["eval_ece"]) == pytest.approx(100 * expected_calibration_error(val_logits, val_y, 15), abs=0.5)
    assert float(last["train_clean_ece"]) == pytest.approx(
        100 * expected_calibration_error(fit_logits, train_y[keep], 15), abs=0.5)


@pytest.mark.parametrize("flag", ["--train-clean-subset", "--ece-bins"])
def test_negative_subset_or_bins_name_the_flag(tmp_path, fashion_mnist, capsys, flag):
    code = train_cmd.main(["--dataset", "fashion_mnist", "--model", "tricks_resnet26nd", flag, "-3",
                           "--output", str(tmp_path)])
    assert code == 2 and f"argument {flag}: must be in [0, inf), got -3" in capsys.readouterr().err
