"""A NaN or infinite training loss, detected the same way in every adapter.

:func:`check_finite` raises :class:`NonFiniteLossError` naming the first update whose loss is not finite; under
a process group every process agrees on that update (one all-reduce), so all of them stop at the same one,
before its checkpoint is written.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist

__all__ = ["NonFiniteLossError", "check_finite"]


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; training stopped before that update's checkpoint."""


def _first_non_finite(losses: Sequence[torch.Tensor | float]) -> tuple[int, float | None]:
    """(index of the first non-finite loss, its value), or ``(len(losses), None)`` when all are finite."""
    if not len(losses):
        return 0, None
    if all(isinstance(loss, torch.Tensor) for loss in losses):  # one device-to-host copy for the lot
        values = torch.stack([loss.detach().reshape(()) for loss in losses]).double().cpu()
    else:
        values = torch.tensor([float(loss) for loss in losses], dtype=torch.float64)
    bad = (~torch.isfinite(values)).nonzero()
    return (int(bad[0, 0]), float(values[bad[0, 0]])) if len(bad) else (len(losses), None)


def check_finite(losses: Sequence[torch.Tensor | float], first_update: int = 1, *, unit: str = "update",
                 advice: str = "training stopped", distributed: bool | None = None) -> None:
    """Raise :class:`NonFiniteLossError` if any of ``losses`` is NaN or infinite.

    Args:
        losses: the losses of consecutive updates ``first_update, first_update + 1, ...`` (scalar tensors, on any
            device, checked with one copy to the host; or numbers). An empty sequence passes.
        first_update: the number of the first one's update, as the run counts them. Defaults to 1.
        unit: what the run calls an update in its messages (``"update"``, ``"iteration"``). Defaults to
            ``"update"``.
        advice: the rest of the message: what happened to the run and what to try. Defaults to
            ``"training stopped"``.
        distributed: agree across the default process group (one all-reduce; every process must call it with
            as many losses). Defaults to None: when a group of more than one process is started.

    The message is ``non-finite loss at <unit> <n> (loss=<value>): <advice>``, where ``n`` is the first update
    that is not finite on any process; a process whose own loss there was finite says ``(on another process)``.
    """
    if distributed is None:
        distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
    own, value = _first_non_finite(losses)
    index = own
    if distributed:
        device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else None
        first = torch.tensor([own], dtype=torch.int64, device=device)
        dist.all_reduce(first, op=dist.ReduceOp.MIN)
        index = int(first.item())
    if index >= len(losses):
        return
    where = f"loss={value}" if index == own else "on another process"
    raise NonFiniteLossError(f"non-finite loss at {unit} {first_update + index} ({where}): {advice}")
