"""Fixtures of the timm_ext tests: one torch thread (tiny models; two threads only add contention on this
machine) and a skip when the Fashion-MNIST package is not installed (CI turns that skip into a failure)."""

import os

import pytest
import torch

pytest.importorskip("timm")


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def command_env() -> dict:
    """Environment for command subprocesses: one thread, so that two runs compute bit-identically."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
