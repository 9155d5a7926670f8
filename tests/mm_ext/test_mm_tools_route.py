"""MMDetection's and MMSegmentation's own ``tools/train.py`` (shipped in their packages under ``.mim/tools``) run
the shipped configs as ``python -m mm_ext.train`` does: the configs carry ``custom_imports`` and the plugin's
``custom_hooks``, so the lr record, the random state in every checkpoint and the non-finite-loss stop are there
without ``mm_ext.train``, and the two routes give the same run."""

# ruff: noqa: E402  (imports follow pytest.importorskip)

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mmdet")
pytest.importorskip("mmseg")

import torch
from mmengine.config import Config

import mm_ext
from mm_ext.train import main

ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = Path(mm_ext.__file__).parent / "configs"
HOOKS = ["LrRecorderHook", "RandomStateHook", "NonFiniteLossHook"]
RUNS = [
    ("mmdet", "faster-rcnn_timm-r26nd_fpn_tricks_fashion-scenes.py"),
    ("mmseg", "fcn_timm-r26nd-d8_tricks_fashion-scenes.py"),
]


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("*.py")), ids=lambda p: p.stem)
def test_shipped_configs_carry_imports_and_hooks(path):
    cfg = Config.fromfile(str(path))
    assert cfg.custom_imports == dict(imports=["mm_ext"], allow_failed_imports=False)
    assert [h["type"] for h in cfg.custom_hooks] == HOOKS


def _tools_train(framework: str) -> Path:
    path = Path(importlib.util.find_spec(framework).origin).parent / ".mim" / "tools" / "train.py"
    if not path.is_file():
        pytest.skip(f"{framework} is installed without its tools/train.py ({path})")
    return path


def _scalars(work_dir: Path) -> list[float]:
    """The total loss of each logged iteration, from the run's text log.

    Not from vis_data/scalars.json: mmdet's and mmseg's default_runtime name the visualizer ``'visualizer'``, and
    MMEngine hands every later Runner of a process the first instance of that name, with the first run's folder.
    """
    (log,) = work_dir.glob("*/*.log")
    losses = [float(m.group(1)) for m in re.finditer(r"Iter\(train\) .*?\bloss: ([0-9.]+)", log.read_text())]
    assert len(losses) == 2, f"{log}: expected the loss of both iterations, found {losses}"
    return losses


@pytest.mark.slow
@pytest.mark.parametrize("framework, name", RUNS, ids=[f for f, _ in RUNS])
def test_frameworks_tools_train_gives_the_run_of_mm_ext_train(
    framework, name, fashion_argv, fashion_scenes, tmp_path
):
    extra = ["randomness.seed=0"]
    tools_argv = fashion_argv(name, tmp_path / "tools") + extra
    result = subprocess.run(
        [sys.executable, str(_tools_train(framework)), *tools_argv],
        cwd=tmp_path,
        env={**os.environ, "FASHION_SCENES_ROOT": f"{fashion_scenes}/", "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert main(fashion_argv(name, tmp_path / "mm_ext") + extra) == 0

    tools, ours = tmp_path / "tools", tmp_path / "mm_ext"
    lr_rows = (tools / "lr_per_step.csv").read_text()
    assert lr_rows == (ours / "lr_per_step.csv").read_text(), "the same lr at every step"
    assert [r.split(",")[0] for r in lr_rows.split()] == ["step", "1", "2"]
    for work_dir in (tools, ours):
        checkpoint = torch.load(work_dir / "iter_2.pth", map_location="cpu", weights_only=False)
        assert set(checkpoint["random_state"]) >= {"torch"}, f"{work_dir.name}: RandomStateHook's state"
        log = next(work_dir.glob("*/*.log")).read_text()  # the Runner logs its hooks in execution order
        assert all(hook in log for hook in HOOKS), f"{work_dir.name}: the hooks in the run log"
    torch.testing.assert_close(_scalars(tools), _scalars(ours), rtol=1e-4, atol=0, msg="the same losses")
