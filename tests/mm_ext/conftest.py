"""Shared by the mm_ext tests: a toy MMEngine model and dataset and an lr-recording hook (fixture ``toy``),
tiny fashion scenes and a timm_ext backbone export (session fixtures), and short fashion-scenes runs.

Helpers are handed out by fixtures because the suite runs with ``--import-mode=importlib``, where test
modules cannot import a helper module next to them.
"""

import types
from pathlib import Path

import pytest

pytest.importorskip("mmengine")

import torch
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from torch import nn
from torch.utils.data import Dataset


class ToyModel(BaseModel):
    """Linear -> BatchNorm -> Linear regression, small enough for many Runner runs on the CPU."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(2, 4)
        self.bn = nn.BatchNorm1d(4)
        self.fc2 = nn.Linear(4, 1)

    def forward(self, inputs, labels, mode="tensor"):
        out = self.fc2(self.bn(self.fc1(inputs))).squeeze(1)
        if mode == "loss":
            return {"loss": ((out - labels) ** 2).mean()}
        return out


class ToyDataset(Dataset):
    """16 seeded samples."""

    def __len__(self):
        return 16

    def __getitem__(self, index):
        generator = torch.Generator().manual_seed(index)
        return dict(inputs=torch.randn(2, generator=generator), labels=torch.randn((), generator=generator))


class LrRecorder(Hook):
    """Records, before every training iteration, the lr of each optimizer param group (what the update uses)."""

    def __init__(self):
        self.lrs = {}

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        self.lrs[runner.iter + 1] = [group["lr"] for group in runner.optim_wrapper.optimizer.param_groups]


@pytest.fixture
def toy():
    """``toy.Model``, ``toy.Dataset`` and ``toy.LrRecorder``."""
    return types.SimpleNamespace(Model=ToyModel, Dataset=ToyDataset, LrRecorder=LrRecorder)


@pytest.fixture(scope="session")
def fashion_scenes(tmp_path_factory):
    """A tiny fashion-scenes folder: 8 train and 4 val scenes of 128 px (docs/architecture.md layout)."""
    scenes = pytest.importorskip("plugins.data.scenes")
    root = tmp_path_factory.mktemp("fashion_scenes")
    scenes.generate_scenes(root, train=8, val=4, image_size=128, seed=0, progress=False)
    return root


@pytest.fixture(scope="session")
def timm_export(tmp_path_factory):
    """``backbone.pth`` of tricks_resnet26nd (RGB input) after one short timm_ext training epoch."""
    timm_train = pytest.importorskip("timm_ext.train")
    out = tmp_path_factory.mktemp("timm_ext_run")
    argv = [
        "--model", "tricks_resnet26nd", "--recipe", "paper", "--warmup-epochs", "0", "--no-amp",
        "--dataset", "fashion_mnist", "--in-chans", "3", "--img-size", "32", "--epochs", "1", "-b", "16",
        "--train-subset", "32", "--val-subset", "16", "--seed", "0", "--no-progress",
        "--output", str(out), "--export-backbone", str(out / "backbone.pth"),
    ]  # fmt: skip
    assert timm_train.main(argv) == 0, "timm_ext.train failed"
    return out / "backbone.pth"


class FashionProbe(Hook):
    """Backbone weights at the start (after the Runner's init_weights) and the end, losses, val metrics."""

    def __init__(self):
        self.start, self.end, self.losses, self.metrics = None, None, [], {}

    @staticmethod
    def _backbone_state(runner):
        return {k: v.detach().clone() for k, v in runner.model.backbone.features.model.state_dict().items()}

    def before_train(self, runner):
        self.start = self._backbone_state(runner)

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        self.losses.append({k: float(v) for k, v in outputs.items() if k.startswith("loss")})

    def after_val_epoch(self, runner, metrics=None):
        self.metrics = dict(metrics or {})

    def after_train(self, runner):
        self.end = self._backbone_state(runner)


@pytest.fixture
def fashion_argv(fashion_scenes, timm_export, monkeypatch):
    """``argv(config_name, work_dir, max_iters=2, extra=())``: a tiny CPU run of a fashion-scenes config.

    The scenes and the timm_ext export come from the session fixtures; FASHION_SCENES_ROOT is set.
    """
    import mm_ext

    monkeypatch.setenv("FASHION_SCENES_ROOT", f"{fashion_scenes}/")
    config_dir = Path(mm_ext.__file__).parent / "configs"

    def argv(name, work_dir, max_iters=2, extra=()):
        options = [
            f"model.backbone.checkpoint={timm_export}",
            f"train_cfg.max_iters={max_iters}",
            f"train_cfg.val_interval={max_iters}",
            "train_dataloader.batch_size=2",
            "train_dataloader.num_workers=0",
            "train_dataloader.persistent_workers=False",
            "val_dataloader.num_workers=0",
            "val_dataloader.persistent_workers=False",
            "default_hooks.logger.interval=1",
            "default_hooks.checkpoint.interval=1",
        ]
        if "_tricks" in name:
            options.append("param_scheduler.0.warmup_steps=1")  # the config's 50 warmup iterations exceed the run
        return [str(config_dir / name), "--work-dir", str(work_dir), "--cfg-options", *options, *extra]

    return argv


@pytest.fixture
def run_fashion(fashion_argv):
    """``run(config_name, work_dir)``: train a fashion-scenes config briefly through a Runner; the probe."""
    from mmengine.runner import Runner

    from mm_ext.train import build_parser, load_config

    def run(name, work_dir):
        runner = Runner.from_cfg(load_config(build_parser().parse_args(fashion_argv(name, work_dir))))
        probe = FashionProbe()
        runner.register_hook(probe)
        runner.train()
        return probe

    return run
