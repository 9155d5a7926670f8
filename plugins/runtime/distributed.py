"""The default process group of a run started by ``torchrun`` (or any starter that sets its variables), set up
once for every adapter.

``torchrun`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; the group is
started from them (``env://``), with NCCL where CUDA is available and gloo on the CPU. Setting it up again is
harmless: a group already started (here, by a framework's launcher or by the caller) is kept.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import torch
import torch.distributed as dist

__all__ = ["LAUNCH_ENV", "ProcessGroupInfo", "setup_process_group", "teardown_process_group"]

LAUNCH_ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")  # what env:// reads


class ProcessGroupInfo(NamedTuple):
    """Where this process stands: ``rank`` among ``world_size`` processes, ``local_rank`` on its machine."""

    rank: int
    world_size: int
    local_rank: int

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def setup_process_group(backend: str | None = None) -> ProcessGroupInfo:
    """Start the default process group from the launcher's environment, once; return this process's place.

    Args:
        backend: ``"nccl"``, ``"gloo"``... Defaults to None: NCCL where CUDA is available, gloo otherwise.
            With NCCL the current CUDA device becomes ``LOCAL_RANK`` first (NCCL binds each process to one).

    Without ``WORLD_SIZE`` in the environment (a plain single-process command) nothing is started and the
    place is ``(0, 1, 0)``. A group that already exists is kept and its rank and size returned. Raises
    ValueError naming the missing variables when ``WORLD_SIZE`` is set without the rest of :data:`LAUNCH_ENV`.
    """
    if dist.is_available() and dist.is_initialized():
        return ProcessGroupInfo(dist.get_rank(), dist.get_world_size(), _local_rank())
    if "WORLD_SIZE" not in os.environ:
        return ProcessGroupInfo(0, 1, 0)
    missing = [name for name in LAUNCH_ENV if name not in os.environ]
    if missing:
        raise ValueError(f"WORLD_SIZE={os.environ['WORLD_SIZE']} is set but {', '.join(missing)} not: start the "
                         "command with torchrun (it sets them all), or unset WORLD_SIZE for one process")
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(_local_rank())
    dist.init_process_group(backend=backend, init_method="env://")
    return ProcessGroupInfo(dist.get_rank(), dist.get_world_size(), _local_rank())


def teardown_process_group() -> None:
    """Destroy the default process group if there is one (safe to call in a ``finally`` of any run)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
