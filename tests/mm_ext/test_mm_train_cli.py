"""python -m mm_ext.train: the options of mmdet's/mmseg's tools/train.py (--cfg-options with new keys, --amp,
--launcher none|pytorch|slurm|mpi); bad input gives one message and exit status 2; --debug shows the traceback."""

# ruff: noqa: E402  (imports follow pytest.importorskip)

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mmengine")

import torch
from mmengine.config import Config

from mm_ext._train_options import apply_amp
from mm_ext.train import build_parser, load_config, main

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
        (
            lambda t: [_config(t), "--cfg-options", "param_scheduler.3.end=3"],
            "--cfg-options param_scheduler.3.end: param_scheduler is a list of 1 entries; accepted indices: 0..0",
        ),
        (
            lambda t: [_config(t), "--cfg-options", "train_cfg.max_iters=abc"],
            "--cfg-options train_cfg.max_iters='abc': accepted: a number, like the config's 2",
        ),
        (
            lambda t: [_config(t), "--cfg-options", "train_cfg.by_epoch=0"],
            "--cfg-options train_cfg.by_epoch=0: accepted: a bool, like the config's False",
        ),
        (
            lambda t: [_config(t), "--cfg-options", "optim_wrapper.type.x=1"],
            "--cfg-options optim_wrapper.type.x: optim_wrapper.type='OptimWrapper' is not a dict",
        ),
        (
            lambda t: [_config(t), "--launcher", "slurm"],
            "--launcher slurm needs the environment variables SLURM_PROCID, SLURM_NTASKS, SLURM_NODELIST (set by srun)",
        ),
        (
            lambda t: [_config(t), "--launcher", "mpi"],
            "--launcher mpi needs the environment variables OMPI_COMM_WORLD",
        ),
        (
            lambda t: [_config(t, wrapper="OptimWrapperDict"), "--amp"],
            "--amp needs optim_wrapper.type='OptimWrapper' (accepted: OptimWrapper), got 'OptimWrapperDict'",
        ),
        (lambda t: [_config(t), "--amp"], "--amp needs CUDA"),
        (lambda t: [_config(t), "--resume", str(t / "absent.pth")], "--resume"),
        (lambda t: [_config(t), "--auto-scale-lr"], "auto_scale_lr"),
        (lambda t: [_config(t, wrapper="AmpOptimWrapper")], "AmpOptimWrapper"),
    ],
)
def test_bad_input_exits_2_with_one_message(tmp_path, capsys, monkeypatch, make_argv, needle):
    if ("AmpOptimWrapper'" in needle or "CUDA" in needle) and torch.cuda.is_available():
        pytest.skip("AMP is valid with CUDA")
    for name in (
        "SLURM_PROCID",
        "SLURM_NTASKS",
        "SLURM_NODELIST",
        "OMPI_COMM_WORLD_RANK",
        "OMPI_COMM_WORLD_SIZE",
    ):
        monkeypatch.delenv(name, raising=False)
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


def _loaded(tmp_path, capsys, *options):
    cfg = load_config(build_parser().parse_args([_config(tmp_path), "--cfg-options", *options]))
    return cfg, capsys.readouterr().err


def test_cfg_options_add_new_nested_keys_as_tools_train_does(tmp_path, capsys):
    cfg, err = _loaded(
        tmp_path,
        capsys,
        "optim_wrapper.paramwise_cfg.norm_decay_mult=0",
        "randomness.seed=3",
        "model_wrapper_cfg.find_unused_parameters=True",
    )
    assert cfg.optim_wrapper.paramwise_cfg == dict(norm_decay_mult=0)
    assert cfg.randomness.seed == 3 and cfg.model_wrapper_cfg.find_unused_parameters is True
    assert err == "", "a new key that resembles no existing one is added silently"


@pytest.mark.parametrize(
    "option, closest",
    [
        ("optim_wrapper.optimzer.lr=0.2", "optim_wrapper.optimizer"),
        ("train_cfg.max_iter=3", "train_cfg.max_iters"),
        ("param_schedulr.0.end=3", "param_scheduler"),
        ("randomnes.seed=1", "randomness"),  # a Runner setting the config does not hold
    ],
)
def test_cfg_options_typo_is_added_with_a_warning_naming_the_closest_key(tmp_path, capsys, option, closest):
    cfg, err = _loaded(tmp_path, capsys, option)
    key = option.split("=")[0]
    assert err.startswith("mm_ext.train: warning: --cfg-options ") and f"did you mean {closest}?" in err, err
    assert cfg.get(key.split(".")[0]) is not None, "the key was added, as MMEngine's merge adds it"


def test_amp_turns_optim_wrapper_into_amp_optim_wrapper_as_mmdet_tools_train(tmp_path, capsys):
    cfg = Config.fromfile(_config(tmp_path))
    apply_amp(cfg)
    assert cfg.optim_wrapper.type == "AmpOptimWrapper" and cfg.optim_wrapper.loss_scale == "dynamic"
    apply_amp(cfg)  # already on: a warning, nothing changed
    assert "AMP training is already enabled" in capsys.readouterr().err
    assert cfg.optim_wrapper.type == "AmpOptimWrapper"


def test_tricks_hooks_are_added_once(tmp_path, capsys):
    path = Path(_config(tmp_path))
    path.write_text(
        path.read_text() + "custom_hooks = [dict(type='RandomStateHook'), dict(type='EMAHook'), "
        "dict(type='LrRecorderHook', flush_interval=5), dict(type='RandomStateHook')]\n"
    )
    cfg = load_config(build_parser().parse_args([str(path)]))
    assert [h["type"] for h in cfg.custom_hooks] == [
        "RandomStateHook",
        "EMAHook",
        "LrRecorderHook",
        "NonFiniteLossHook",
    ]
    assert cfg.custom_hooks[2]["flush_interval"] == 5, "the config's own entry is kept"
    assert "custom_hooks lists RandomStateHook more than once" in capsys.readouterr().err


TOY_MODULE = """
import torch
from mmengine.model import BaseModel
from mmengine.registry import DATASETS, MODELS
from torch.utils.data import Dataset


@MODELS.register_module()
class CliToyModel(BaseModel):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(2, 1)

    def forward(self, inputs, labels, mode="tensor"):
        out = self.fc(torch.stack(inputs) if isinstance(inputs, list) else inputs).squeeze(1)
        return {"loss": ((out - labels) ** 2).mean()} if mode == "loss" else out


@DATASETS.register_module()
class CliToyDataset(Dataset):
    def __len__(self):
        return 8

    def __getitem__(self, index):
        g = torch.Generator().manual_seed(index)
        return dict(inputs=torch.randn(2, generator=g), labels=torch.randn((), generator=g))
"""
TOY_CONFIG = (
    CONFIG
    + """
custom_imports = dict(imports=['mm_ext', 'cli_toy'], allow_failed_imports=False)
model = dict(type='CliToyModel')
train_dataloader = dict(batch_size=4, num_workers=0, dataset=dict(type='CliToyDataset'),
                        sampler=dict(type='DefaultSampler', shuffle=False), collate_fn=dict(type='default_collate'))
"""
)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.distributed
@pytest.mark.parametrize(
    "launcher, env",
    [
        ("slurm", dict(SLURM_PROCID="0", SLURM_NTASKS="1", SLURM_NODELIST="localhost", SLURM_LOCALID="0")),
        ("mpi", dict(OMPI_COMM_WORLD_RANK="0", OMPI_COMM_WORLD_SIZE="1", OMPI_COMM_WORLD_LOCAL_RANK="0")),
    ],
)
def test_slurm_and_mpi_launchers_train(tmp_path, launcher, env):
    """One process started as srun / mpirun start it (their environment): a gloo group and a DDP model, CPU too."""
    (tmp_path / "cli_toy.py").write_text(TOY_MODULE)
    config = tmp_path / "toy.py"
    config.write_text(TOY_CONFIG.format(wrapper="OptimWrapper", warmup=1))
    env = {
        **os.environ,
        **env,
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(_free_port()),
        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)]),
    }
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mm_ext.train",
            str(config),
            "--launcher",
            launcher,
            "--work-dir",
            str(tmp_path / "w"),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stderr + result.stdout
    assert f"Distributed launcher: {launcher}" in log and "Distributed training: True" in log, log[-3000:]
    rows = (tmp_path / "w" / "lr_per_step.csv").read_text().split()
    assert [r.split(",")[0] for r in rows[1:]] == ["1", "2"]
