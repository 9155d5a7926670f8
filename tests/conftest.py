"""Shared pytest set-up.

With ``CI=true`` a skipped test is a failure: the skips in this suite come from ``pytest.importorskip`` on an
optional framework (timm, mmdet, mmseg, detectron2) or a missing dataset, and a green CI run must mean that
every adapter was really exercised.
"""

import os

import pytest
import torch

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def pytest_configure(config):
    # Two cores here: more threads than cores only adds contention in the many tiny forward passes.
    torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def fashion_mnist():
    """The Fashion-MNIST folder, or a skip (a failure in CI) when the Debian package is not installed."""
    from plugins.data.fashion_mnist import fashion_mnist_root

    root = fashion_mnist_root()
    if not (root / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"Fashion-MNIST not installed under {root} (make install)")
    return root


def _fail_skip(report, where):
    reason = report.longrepr[-1] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    report.outcome = "failed"
    report.longrepr = f"skipped {where} in CI (CI=true turns skips into failures): {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if IN_CI and report.skipped and not hasattr(report, "wasxfail"):
        _fail_skip(report, "test")


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    report = outcome.get_result()
    if IN_CI and report.skipped:
        _fail_skip(report, "module")
