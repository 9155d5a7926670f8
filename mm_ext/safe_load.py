"""Resuming MMEngine Runner checkpoints under ``torch.load(weights_only=True)`` (torch >= 2.6's default).

MMEngine 0.10.7 calls ``torch.load`` without ``weights_only``, and a Runner checkpoint holds a few objects
that torch's safe unpickler refuses by default, all in the ``message_hub`` entry:

- ``mmengine.logging.HistoryBuffer`` (the logged scalars), whose pickled state holds numpy arrays and its
  statistics methods (``HistoryBuffer.mean``, ``.min``...);
- numpy arrays, dtypes and scalars: ``numpy.ndarray``, ``numpy.dtype`` and the numeric and bool dtype
  classes (``numpy.dtypes.Float64DType``...), ``numpy._core.multiarray._reconstruct`` and ``.scalar``;
- ``builtins.getattr``: pickle stores a method such as ``HistoryBuffer.mean`` as
  ``getattr(HistoryBuffer, "mean")``. Allowing the real ``getattr`` would let a checkpoint reach any
  attribute of any object, so that name is mapped to :func:`_history_buffer_method`, which resolves only the
  public methods of ``HistoryBuffer`` and refuses everything else.

Rather than turning ``weights_only`` off (which would run arbitrary pickled code from a checkpoint),
:func:`allow_runner_checkpoint_types` adds exactly these to torch's safe globals.
"""

from __future__ import annotations

import inspect
import pickle

import numpy as np
import torch
from mmengine.logging import HistoryBuffer

try:  # NumPy >= 2
    from numpy._core.multiarray import _reconstruct, scalar
except ImportError:  # NumPy 1.x
    from numpy.core.multiarray import _reconstruct, scalar


def _history_buffer_method(owner: type, name: str):
    """``getattr`` restricted to the public methods of ``HistoryBuffer`` (how pickle stores them)."""
    member = inspect.getattr_static(owner, name, None) if owner is HistoryBuffer else None
    if name.startswith("_") or not inspect.isfunction(member):
        raise pickle.UnpicklingError(
            f"checkpoint asks for getattr({owner!r}, {name!r}); weights_only loading through mm_ext only "
            "resolves public methods of mmengine's HistoryBuffer"
        )
    return getattr(owner, name)


def runner_checkpoint_types() -> list:
    """The globals a Runner checkpoint needs beyond tensors and builtin containers (see the module docstring)."""
    codes = np.typecodes["AllInteger"] + np.typecodes["AllFloat"] + "?"  # numeric and bool, no object dtype
    dtype_classes = sorted({type(np.dtype(code)) for code in codes}, key=lambda t: t.__name__)
    return [
        HistoryBuffer,
        np.ndarray,
        np.dtype,
        *dtype_classes,
        _reconstruct,
        scalar,
        (_history_buffer_method, "builtins.getattr"),
    ]


def allow_runner_checkpoint_types() -> None:
    """Add :func:`runner_checkpoint_types` to ``torch.serialization``'s safe globals (idempotent)."""
    torch.serialization.add_safe_globals(runner_checkpoint_types())
