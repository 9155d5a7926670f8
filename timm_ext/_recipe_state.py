"""Checkpoint state of a recipe run: what last.pth / best.pth hold, and how a run resumes from them exactly.

The checkpoint (format ``CHECKPOINT_FORMAT``, loaded with ``weights_only=True``) holds the model, optimizer,
scheduler and scaler states, the position in the epoch, the running loss, the history, the torch random state,
the args and the recipe. Data order, flips and mixup draws are functions of ``(seed, epoch, update)``, so these
are all a resumed run needs to continue as if uninterrupted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from plugins.recipe import Recipe
from plugins.runtime.checkpoint import load_checkpoint

from ._engine import TrainStep, unwrap
from .cli import UsageError

__all__ = ["CHECKPOINT_FORMAT", "NonFiniteLossError", "Position", "check_finite", "checkpoint_state", "loss_sum", "resume"]

CHECKPOINT_FORMAT = "bag-of-tricks/timm-train/v1"


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the last checkpoint on disk predates it."""


@dataclass
class Position:
    epoch: int = 0  # epoch in progress (0-based)
    step_in_epoch: int = 0  # updates done in that epoch
    global_step: int = 0  # updates done in the run
    history: list[dict] = field(default_factory=list)
    best_top1: float | None = None
    loss_sum: float = 0.0  # loss of the updates done in this epoch before a resume
    loss_count: int = 0


def check_finite(losses: list[torch.Tensor], first_update: int, distributed: bool, last_saved: int) -> None:
    """Raise :class:`NonFiniteLossError` if any of ``losses`` (updates ``first_update, ...``) is not finite."""
    if not losses:
        return
    bad = ~torch.isfinite(torch.stack(losses))
    flag = bad.any().float()
    if distributed:
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    if flag.item():
        where = f"update {first_update + int(bad.nonzero()[0, 0])}" if bad.any() else "another process"
        saved = f"last.pth (after update {last_saved}) keeps the last good state" if last_saved else (
            "no checkpoint of this run was written")
        raise NonFiniteLossError(
            f"non-finite loss at {where}: training stopped; {saved}. Try a lower --lr / --lr-base, --no-amp, "
            "or check the data."
        )


def checkpoint_state(step: TrainStep, pos: Position, args, recipe: Recipe, steps_per_epoch: int,
                epoch_losses: list[torch.Tensor]) -> dict:
    rng = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    return {
        "format": CHECKPOINT_FORMAT,
        "model": unwrap(step.model).state_dict(),
        "optimizer": step.optimizer.state_dict(),
        "scheduler": step.scheduler.state_dict(),
        "scaler": step.scaler.state_dict() if step.scaler is not None else None,
        "epoch": pos.epoch,
        "step_in_epoch": pos.step_in_epoch,
        "global_step": pos.global_step,
        "steps_per_epoch": steps_per_epoch,
        "loss_sum": pos.loss_sum + loss_sum(epoch_losses),
        "loss_count": pos.loss_count + len(epoch_losses),
        "history": pos.history,
        "best_top1": pos.best_top1,
        "rng": rng,
        "args": vars(args),
        "recipe": recipe.to_dict(),
    }


def loss_sum(losses: list[torch.Tensor]) -> float:
    return float(torch.stack(losses).double().sum()) if losses else 0.0


def resume(path: str, step: TrainStep, steps_per_epoch: int, recipe: Recipe, log) -> Position:
    try:
        ckpt = load_checkpoint(path)
    except (FileNotFoundError, ValueError) as err:
        raise UsageError(f"--resume {path}: {err}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise UsageError(f"--resume {path}: not a last.pth/best.pth of tricks-train (format {CHECKPOINT_FORMAT})")
    if ckpt["steps_per_epoch"] != steps_per_epoch:
        raise UsageError(
            f"--resume {path}: the checkpoint ran {ckpt['steps_per_epoch']} updates per epoch, this command "
            f"{steps_per_epoch}; pass the same data and batch flags as the interrupted run"
        )
    if ckpt["recipe"] != recipe.to_dict():
        changed = sorted(k for k, v in recipe.to_dict().items() if ckpt["recipe"].get(k) != v)
        log(f"warning: --resume {path}: the recipe differs from the checkpoint's in {changed}; using this command's")
    try:
        unwrap(step.model).load_state_dict(ckpt["model"])
        step.optimizer.load_state_dict(ckpt["optimizer"])
    except (RuntimeError, ValueError) as err:
        raise UsageError(f"--resume {path}: it does not fit this command's model / param groups (same --model, "
                         f"--no-bias-decay and --opt as the interrupted run?): {str(err)[:300]}") from None
    # The schedule is closed-form: this command's scheduler, moved to the update count below, gives the same lr
    # as the checkpoint's one whenever the recipe is the same (the saved scheduler state is for inspection).
    if step.scaler is not None and ckpt["scaler"] is not None:
        step.scaler.load_state_dict(ckpt["scaler"])
    torch.set_rng_state(ckpt["rng"]["torch"])
    if torch.cuda.is_available() and "cuda" in ckpt["rng"]:
        torch.cuda.set_rng_state_all(ckpt["rng"]["cuda"])
    step.num_updates = ckpt["global_step"]
    step.scheduler.step_update(step.num_updates)
    return Position(ckpt["epoch"], ckpt["step_in_epoch"], ckpt["global_step"], list(ckpt["history"]),
                     ckpt["best_top1"], ckpt["loss_sum"], ckpt["loss_count"])
