"""The global random streams (torch, CUDA, numpy, Python) as a checkpoint-safe dict, and back.

A run resumed from a checkpoint draws the same random numbers as the uninterrupted run only if it continues
every stream it uses from where the checkpoint left it. :func:`capture_random_state` returns the streams as
tensors, ints, floats and lists, so the dict rides in a checkpoint read with ``torch.load(weights_only=True)``;
:func:`restore_random_state` puts them back. The CUDA streams are captured only once CUDA is initialised
(capturing would otherwise initialise it).
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

__all__ = ["capture_random_state", "restore_random_state"]

_STREAMS = ("torch", "cuda", "numpy", "python")


def capture_random_state(streams: tuple[str, ...] = _STREAMS) -> dict[str, Any]:
    """The state of ``streams`` (default all of ``"torch", "cuda", "numpy", "python"``) as plain types.

    ``"cuda"`` is left out when CUDA is not initialised. Raises ValueError for an unknown stream name.
    """
    unknown = sorted(set(streams) - set(_STREAMS))
    if unknown:
        raise ValueError(f"streams {unknown} are not known; accepted: {list(_STREAMS)}")
    state: dict[str, Any] = {}
    if "torch" in streams:
        state["torch"] = torch.get_rng_state()
    if "cuda" in streams and torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if "numpy" in streams:
        name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
        state["numpy"] = {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                          "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}
    if "python" in streams:
        version, internal, gauss_next = random.getstate()
        state["python"] = {"version": version, "internal": list(internal), "gauss_next": gauss_next}
    return state


def restore_random_state(state: dict[str, Any]) -> None:
    """Set every stream present in ``state`` (from :func:`capture_random_state`); absent streams are untouched.

    The CUDA streams are restored only when CUDA is available here.
    """
    if "torch" in state:
        torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if "numpy" in state:
        s = state["numpy"]
        keys = s["keys"].numpy().astype(np.uint32)
        np.random.set_state((s["name"], keys, s["pos"], s["has_gauss"], s["cached_gaussian"]))
    if "python" in state:
        s = state["python"]
        random.setstate((s["version"], tuple(s["internal"]), s["gauss_next"]))
