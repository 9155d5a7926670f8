"""The FCN fashion-scenes configs end to end on the CPU, and python -m mm_ext.train with a resume."""

# ruff: noqa: E402  (imports follow pytest.importorskip)

import math
from pathlib import Path

import pytest

pytest.importorskip("mmseg")
pytest.importorskip("timm")

import torch
from mmengine.config import Config

import mm_ext
from mm_ext.train import main
from plugins.runtime.checkpoint import load_checkpoint
from plugins.tricks.lr_schedule import warmup_cosine_factor

CONFIG_DIR = Path(mm_ext.__file__).parent / "configs"
CONFIGS = ["fcn_timm-r26nd-d8_baseline_fashion-scenes.py", "fcn_timm-r26nd-d8_tricks_fashion-scenes.py"]


@pytest.mark.slow
@pytest.mark.parametrize("name", CONFIGS)
def test_trains_and_evaluates_with_the_transferred_backbone(name, run_fashion, timm_export, tmp_path):
    exported = load_checkpoint(timm_export)["state_dict"]
    probe = run_fashion(name, tmp_path)

    assert set(probe.start) == set(exported), "every backbone tensor of the export is in the segmenter"
    for key, value in exported.items():
        torch.testing.assert_close(probe.start[key], value, rtol=0, atol=0, msg=f"{name}: {key} at the start")

    assert len(probe.losses) == 2 and all(probe.losses), "two iterations with losses"
    for step, losses in enumerate(probe.losses, start=1):
        assert all(math.isfinite(v) for v in losses.values()), f"{name}: non-finite loss at iteration {step}: {losses}"
    for metric in ("aAcc", "mIoU"):
        assert 0.0 <= probe.metrics.get(metric, math.nan) <= 100.0, f"{name}: {metric} in {probe.metrics}"


@pytest.mark.slow
def test_command_line_trains_and_resumes(fashion_argv, tmp_path):
    """python -m mm_ext.train, stopped after 2 of 3 iterations and resumed (weights_only loading)."""
    name = CONFIGS[1]
    schedule = ["--cfg-options", "param_scheduler.0.end=3"]  # the 3-iteration schedule, also in the first part
    assert main(fashion_argv(name, tmp_path, max_iters=2) + schedule) == 0
    assert main(fashion_argv(name, tmp_path, max_iters=3, extra=["--resume"]) + schedule) == 0
    second_log = max(tmp_path.glob("*/*.log")).read_text()  # the newest run's log (timestamped folders)
    assert "Iter(train) [3/3]" in second_log and "Iter(train) [1/3]" not in second_log, "really resumed"
    checkpoint = torch.load(tmp_path / "iter_3.pth", weights_only=True)  # safe types only (mm_ext allows them)
    assert checkpoint["meta"]["iter"] == 3
    lrs, _ = checkpoint["message_hub"]["log_scalars"]["train/lr"].data
    base_lr = Config.fromfile(str(CONFIG_DIR / name)).optim_wrapper.optimizer.lr
    expected = [base_lr * warmup_cosine_factor(i, 3, 1) for i in (1, 2, 3)]
    torch.testing.assert_close(lrs.tolist(), expected, rtol=1e-12, atol=0.0, msg="logged lr, iterations 1-3")
