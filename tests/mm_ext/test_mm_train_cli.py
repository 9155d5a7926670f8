"""python -m mm_ext.train: bad input gives one message and exit status 2; --debug shows the traceback."""

# ruff: noqa: E402  (imports follow pytest.importorskip)

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mmengine")

from mm_ext.train import main

ROOT = Path(__file__).resolve().parents[2]

CONFIG = """
custom_imports = dict(imports=['mm_ext'], allow_failed_imports=False)
train_cfg = dict(by_epoch=False, max_iters=2)
optim_wrapper = dict(type='{wrapper}', optimizer=dict(type='SGD', lr=0.1))
param_scheduler = [dict(type='WarmupCosineLR', by_epoch=False, warmup_steps={warmup})]
"""


def _config(tmp_path, wrapper="OptimWrapper", warmup=1):
    path = tmp_path / "toy.py"
    path.write_text(CONFIG.format(wrapper=wrapper, warmup=warmup))
    return str(path)


@pytest.mark.parametrize(
    "make_argv, needle",
    [
        (lambda t: [str(t / "absent.py")], "does not exist"),
        (lambda t: [_config(t), "--cfg-options", "optim_wrapper.optimzer.lr=0.2"], "optim_wrapper.optimizer"),
        (lambda t: [_config(t), "--cfg-options", "train_cfg.max_iter=3"], "max_iters"),
        (lambda t: [_config(t), "--cfg-options", "param_scheduler.3.end=3"], "param_scheduler.3"),
        (lambda t: [_config(t), "--resume", str(t / "absent.pth")], "--resume"),
        (lambda t: [_config(t), "--auto-scale-lr"], "auto_scale_lr"),
        (lambda t: [_config(t, wrapper="AmpOptimWrapper")], "AmpOptimWrapper"),
    ],
)
def test_bad_input_exits_2_with_one_message(tmp_path, capsys, make_argv, needle):
    if "AmpOptimWrapper" in needle and __import__("torch").cuda.is_available():
        pytest.skip("AmpOptimWrapper is valid with CUDA")
    assert main(make_argv(tmp_path)) == 2
    err = capsys.readouterr().err
    assert err.startswith("mm_ext.train: error:") and needle in err, err
    assert "Traceback" not in err


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        main([str(tmp_path / "absent.py"), "--debug"])


def test_command_line_exit_status(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "mm_ext.train", str(tmp_path / "absent.py")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "does not exist" in result.stderr and "Traceback" not in result.stderr
