"""Fixtures of the reliability tests (exact resume, 2-process runs, bad input): tiny fashion scenes, a tiny
exported backbone and distillation teacher, and the environment of the command subprocesses.

Every command runs with one thread (``OMP_NUM_THREADS=1``), so that two runs of the same command compute
bit-identically, and with the repository on ``PYTHONPATH`` from a temporary working directory (MMEngine's
distributed evaluation writes a ``.dist_test`` folder into the working directory).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable


def command_env(**extra: str) -> dict[str, str]:
    """Environment of a command subprocess: one thread, unbuffered, the repository importable."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH", "")]))}
    env.pop("WORLD_SIZE", None)
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def kill_when(proc: subprocess.Popen, ready, what: str, timeout: float = 240.0) -> None:
    """Poll ``ready()`` every 20 ms and SIGKILL ``proc`` as soon as it is true; fail if ``proc`` ends first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace")[-3000:] if proc.stderr else ""
            pytest.fail(f"the run ended (status {proc.returncode}) before {what}: {err}")
        if ready():
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=60)
            return
        time.sleep(0.02)
    proc.kill()
    pytest.fail(f"no {what} within {timeout} s")


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def scenes(tmp_path_factory, fashion_mnist):
    """8 train / 4 val fashion scenes of 64 px."""
    from plugins.data.scenes import generate_scenes

    root = tmp_path_factory.mktemp("scenes")
    generate_scenes(root, train=8, val=4, image_size=64, seed=0, progress=False)
    return root


@pytest.fixture(scope="session")
def backbone(tmp_path_factory):
    """A ``backbone.pth`` of tricks_resnet26nd (RGB), written by ``plugins.runtime.checkpoint.export_backbone``."""
    pytest.importorskip("timm")
    import timm

    import timm_ext  # noqa: F401  (registers tricks_*)
    from plugins.runtime.checkpoint import export_backbone

    torch.manual_seed(0)
    model = timm.create_model("tricks_resnet26nd", pretrained=False, num_classes=10, in_chans=3)
    meta = {"model_name": "tricks_resnet26nd", "variant": "d", "recipe": {}, "val_top1": 0.0, "num_classes": 10,
            "in_chans": 3}
    return export_backbone(model, tmp_path_factory.mktemp("backbone") / "backbone.pth", meta)


@pytest.fixture(scope="session")
def teacher(tmp_path_factory):
    """A distillation teacher for Fashion-MNIST: the state_dict of tricks_resnet18d (pass ``--kd-model``)."""
    pytest.importorskip("timm")
    import timm

    import timm_ext  # noqa: F401

    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("teacher") / "teacher.pth"
    torch.save(timm.create_model("tricks_resnet18d", pretrained=False, num_classes=10, in_chans=1).state_dict(), path)
    return path
