"""What ``python -m mm_ext.train`` does with ``--cfg-options``, ``--amp`` and ``--launcher`` (see :mod:`mm_ext.train`).

Each function raises :class:`InputError` (one message naming the option and what is accepted) for a bad value.
"""

from __future__ import annotations

import difflib
import inspect
import os
import subprocess
import sys

import torch
import torch.distributed as dist
from mmengine.config import Config, ConfigDict
from mmengine.runner import Runner

from plugins.runtime.distributed import LAUNCH_ENV, setup_process_group

LAUNCHERS = ("none", "pytorch", "slurm", "mpi")  # MMEngine's
# Top-level settings the Runner reads although a config need not hold them (e.g. randomness.seed=0).
_RUNNER_SETTINGS = frozenset(inspect.signature(Runner.__init__).parameters) - {"self"}
# The environment each launcher starts processes with (MMEngine's init_dist reads these).
_LAUNCHER_ENV = {
    "pytorch": LAUNCH_ENV,
    "slurm": ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_NODELIST"),
    "mpi": ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK", "MASTER_ADDR"),
}
_STARTERS = {"pytorch": "torchrun", "slurm": "srun", "mpi": "mpirun (Open MPI)"}


class InputError(ValueError):
    """A bad command-line argument or config setting."""


def warn(message: str) -> None:
    print(f"mm_ext.train: warning: {message}", file=sys.stderr)


def _kind(value: object) -> str | None:
    """The kind of an existing setting that a new value must keep (None: any value is accepted)."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    return None


def check_option(cfg: Config, key: str, value: object) -> None:
    """Check one ``--cfg-options`` pair against the config, as the frameworks' own ``tools/train.py`` accept it.

    Any new key is accepted (MMEngine adds it, nested dicts included, e.g.
    ``optim_wrapper.paramwise_cfg.norm_decay_mult=0`` without a ``paramwise_cfg``); a new key that looks like
    a typo of an existing one gets a warning naming that key. Refused, with one message naming the key: an
    index past the end of a list, a key below a setting that is not a dict, and a value of another kind than
    the existing number or bool it replaces (``train_cfg.max_iters=abc``).
    """
    node: object = cfg.to_dict()
    path: list[str] = []
    for depth, part in enumerate(key.split(".")):
        where = ".".join(path)
        if isinstance(node, list | tuple):
            if not (part.isdigit() and int(part) < len(node)):
                raise InputError(
                    f"--cfg-options {key}: {where} is a list of {len(node)} entries; accepted indices: "
                    f"0..{len(node) - 1}"
                )
            node = node[int(part)]
        elif isinstance(node, dict):
            if part not in node:
                options = [str(k) for k in node] + (sorted(_RUNNER_SETTINGS) if depth == 0 else [])
                if depth == 0 and part in _RUNNER_SETTINGS:
                    return
                close = difflib.get_close_matches(part, options, n=1, cutoff=0.75)
                if close:
                    warn(
                        f"--cfg-options {key}: the config has no {'.'.join([*path, part])!r}, added as a new "
                        f"setting; did you mean {'.'.join([*path, close[0]])}?"
                    )
                return
            node = node[part]
        else:
            raise InputError(f"--cfg-options {key}: {where}={node!r} is not a dict, so it has no {part!r}")
        path.append(part)
    kind = _kind(node)
    if value is None or kind is None:
        return
    if _kind(value) != kind:
        raise InputError(f"--cfg-options {key}={value!r}: accepted: a {kind}, like the config's {node!r}")


def apply_amp(cfg: Config) -> None:
    """``--amp`` as mmdet's and mmseg's ``tools/train.py``: ``OptimWrapper`` becomes ``AmpOptimWrapper``."""
    wrapper = cfg.get("optim_wrapper")
    if not isinstance(wrapper, dict | ConfigDict):
        raise InputError(f"--amp needs an optim_wrapper dict in the config, got {wrapper!r}")
    kind = wrapper.get("type", "OptimWrapper")
    if kind == "AmpOptimWrapper":
        warn("--amp: AMP training is already enabled in the config (optim_wrapper.type='AmpOptimWrapper')")
    elif kind != "OptimWrapper":
        raise InputError(
            f"--amp needs optim_wrapper.type='OptimWrapper' (accepted: OptimWrapper), got {kind!r}"
        )
    else:
        wrapper.type = "AmpOptimWrapper"
        wrapper.loss_scale = "dynamic"


def check_amp_device(cfg: Config, amp: bool) -> None:
    """MMEngine's ``AmpOptimWrapper`` asserts a GPU (or NPU/MLU/MUSA); without one, say so before it does."""
    if torch.cuda.is_available():
        return
    wrapper = cfg.get("optim_wrapper", {})
    if isinstance(wrapper, dict | ConfigDict) and wrapper.get("type") == "AmpOptimWrapper":
        if amp:
            raise InputError(
                "--amp needs CUDA (MMEngine's AmpOptimWrapper runs on GPUs only); leave out --amp"
            )
        raise InputError("optim_wrapper.type='AmpOptimWrapper' needs CUDA; use 'OptimWrapper' on the CPU")


def check_launcher_env(launcher: str) -> None:
    """A distributed launcher without the environment its starter sets would fail with a bare KeyError."""
    if launcher == "none":
        return
    missing = [name for name in _LAUNCHER_ENV[launcher] if name not in os.environ]
    if missing:
        raise InputError(
            f"--launcher {launcher} needs the environment variables {', '.join(missing)} (set by "
            f"{_STARTERS[launcher]}); start the command with it, or use --launcher none"
        )


def launcher_rank(launcher: str) -> int:
    """This process's global rank under ``launcher`` (0 without one)."""
    name = {"slurm": "SLURM_PROCID", "mpi": "OMPI_COMM_WORLD_RANK"}.get(launcher, "RANK")
    return int(os.environ.get(name, "0")) if launcher != "none" else 0


def prepare_cpu_distributed(cfg: Config) -> None:
    """Without CUDA, a distributed launch uses gloo and DDP without ``device_ids`` (started by
    :func:`init_cpu_process_group`)."""
    if cfg.launcher == "none" or torch.cuda.is_available():
        return
    cfg.setdefault("env_cfg", {}).setdefault("dist_cfg", {})["backend"] = "gloo"
    # MMEngine wraps the model in DDP with device_ids=[LOCAL_RANK], which DDP refuses for a CPU model.
    wrapper = cfg.get("model_wrapper_cfg") or dict(
        type="MMDistributedDataParallel",
        broadcast_buffers=False,
        find_unused_parameters=cfg.get("find_unused_parameters", False),
    )
    wrapper.setdefault("device_ids", None)
    cfg.model_wrapper_cfg = wrapper


def init_cpu_process_group(cfg: Config) -> None:
    """Start the gloo group that MMEngine's launchers cannot start on the CPU (they call ``torch.cuda.set_device``),
    with :func:`plugins.runtime.distributed.setup_process_group`.

    For ``slurm`` and ``mpi`` the environment is set first as MMEngine's ``init_dist`` sets it (``RANK``,
    ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``, the port from ``env_cfg.dist_cfg.port``).
    """
    if cfg.launcher == "none" or torch.cuda.is_available() or dist.is_initialized():
        return
    env = os.environ
    port = cfg.get("env_cfg", {}).get("dist_cfg", {}).get("port")
    if cfg.launcher == "slurm":
        if "MASTER_ADDR" not in env:
            env["MASTER_ADDR"] = subprocess.getoutput(
                f"scontrol show hostname {env['SLURM_NODELIST']} | head -n1"
            )
        env["WORLD_SIZE"], env["RANK"] = env["SLURM_NTASKS"], env["SLURM_PROCID"]
        env["LOCAL_RANK"] = env.get("SLURM_LOCALID", "0")
    elif cfg.launcher == "mpi":
        env["WORLD_SIZE"], env["RANK"] = env["OMPI_COMM_WORLD_SIZE"], env["OMPI_COMM_WORLD_RANK"]
        env["LOCAL_RANK"] = env["OMPI_COMM_WORLD_LOCAL_RANK"]
    if port is not None:
        env["MASTER_PORT"] = str(port)
    env.setdefault("MASTER_PORT", "29500")
    setup_process_group(backend="gloo")
