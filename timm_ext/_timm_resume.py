"""Exact resume on timm's loop: the training order and item randomness as functions of the seed, and timm's
checkpoints with the run's position in them.

- :func:`make_resumable`: timm's training loader with its map-style dataset in :class:`ResumableSampler` order
  and each item's transform seeded (:class:`SeededItems`), so that a run started at batch ``k`` of an epoch sees
  the batches an uninterrupted run saw (the built-in data in memory, ``InMemoryLoader``, is so by itself);
- :class:`ResumableSaver`: timm's ``CheckpointSaver`` whose files (``last.pth.tar``, ``checkpoint-*``,
  ``recovery-*``) also hold ``tricks_position``: the epoch, the next batch, the epoch's running loss, the
  updates per epoch and the random streams, written atomically;
- :func:`read_position`: the position of a ``--resume`` file, refusing one of another model or batch.
"""

from __future__ import annotations

import os

import timm
import torch
from timm import utils

from plugins.runtime.checkpoint import save_checkpoint
from plugins.runtime.random_state import capture_random_state

from ._timm_data import ResumableSampler, SeededItems
from ._timm_setup import load_train_checkpoint
from .cli import UsageError

__all__ = ["POSITION_KEY", "ResumableSaver", "last_saved", "make_resumable", "read_position"]

POSITION_KEY = "tricks_position"


class ResumableSaver(utils.CheckpointSaver):
    """timm's ``CheckpointSaver`` whose files also hold the run's position (epoch, next batch, running loss,
    updates per epoch) and random streams, written atomically (temporary file, fsync, rename)."""

    position: dict = {}
    updates_per_epoch: int | None = None
    before_save = None  # called first: the lr rows of the updates a checkpoint holds are on disk with it

    def set_position(self, **position) -> None:
        self.position = dict(position)

    def _save(self, save_path, epoch, metric=None):
        if self.before_save is not None:
            self.before_save()
        state = {"epoch": epoch, "arch": self.args.model if self.args is not None else type(self.model).__name__.lower(),
                 "optimizer": self.optimizer.state_dict(), "version": 2}
        if self.args is not None:
            state["args"] = self.args
        if self.amp_scaler is not None:
            state[self.amp_scaler.state_dict_key] = self.amp_scaler.state_dict()
        state.update(self.task.get_checkpoint_state(unwrap_fn=self.unwrap_fn))
        state.update(self.task.get_checkpoint_state(ema=True, unwrap_fn=self.unwrap_fn))
        if metric is not None:
            state["metric"] = metric
        state["saver"] = self.state_dict(epoch, metric)
        state[POSITION_KEY] = {**self.position, "updates_per_epoch": self.updates_per_epoch,
                               "rng": capture_random_state()}
        save_checkpoint(state, save_path)


def make_resumable(loader, seed: int, rank: int, world_size: int):
    """timm's training loader with its map-style dataset reordered by :class:`ResumableSampler` and each item's
    transform seeded (:class:`SeededItems`); None where timm's loader samples in its own way."""
    from torch.utils.data import BatchSampler, DataLoader, RandomSampler
    from torch.utils.data.distributed import DistributedSampler

    inner = getattr(loader, "loader", loader)
    if type(inner) is not DataLoader or not isinstance(inner.sampler, RandomSampler | DistributedSampler):
        return None
    dataset = inner.dataset
    if not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__"):
        return None
    sampler = ResumableSampler(len(dataset), inner.batch_size, seed, rank, world_size, drop_last=True)
    rebuilt = DataLoader(SeededItems(dataset, seed), batch_sampler=BatchSampler(sampler, inner.batch_size, True),
                         num_workers=inner.num_workers, collate_fn=inner.collate_fn, pin_memory=inner.pin_memory,
                         worker_init_fn=inner.worker_init_fn, persistent_workers=inner.persistent_workers,
                         generator=torch.Generator().manual_seed(seed))
    if inner is loader:
        return rebuilt, sampler
    loader.loader = rebuilt
    return loader, sampler


def read_position(path: str, model_name: str, updates_per_epoch: int) -> dict | None:
    ckpt = load_train_checkpoint(path, "--resume")
    arch = ckpt.get("arch")
    if isinstance(arch, str) and arch != model_name and timm.is_model(arch):
        raise UsageError(f"--resume {path}: a checkpoint of --model {arch}, this run trains --model {model_name}; "
                         "resume with the interrupted run's flags")
    position = ckpt.get(POSITION_KEY)
    if position and position.get("updates_per_epoch") not in (None, updates_per_epoch):
        raise UsageError(f"--resume {path}: the checkpoint ran {position['updates_per_epoch']} updates per epoch, "
                         f"this command {updates_per_epoch}; pass the same data and batch flags as the interrupted run")
    return position


def last_saved(saver, output_dir) -> str:
    """The newest checkpoint in the run folder: what a run stopped now would resume from."""
    if saver is None:
        return ""
    found = [p for p in (saver.curr_recovery_file, os.path.join(output_dir, "last.pth.tar")) if p and os.path.exists(p)]
    return max(found, key=os.path.getmtime) if found else ""
