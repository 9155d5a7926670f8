"""Checkpoints that cannot be half-written, cannot run code when read, and prove what a backbone received.

- :func:`save_checkpoint` writes to a temporary file in the target folder, fsyncs it and renames it over
  the target, so the target is always either the old file or the complete new one.
- :func:`load_checkpoint` reads with ``torch.load(weights_only=True)``: tensors, numbers, strings and plain
  containers only; a pickle that would import or call anything is refused before anything runs.
- :func:`load_backbone` loads a classification backbone into a model and returns a :class:`LoadReport`
  (matched, missing, unexpected, shape mismatches); it raises unless every tensor arrived.
- :func:`export_backbone` writes the ``bag-of-tricks/backbone/v1`` format of docs/architecture.md.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pickle
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "BACKBONE_FORMAT",
    "CorruptCheckpointError",
    "LoadReport",
    "UnsafeCheckpointError",
    "export_backbone",
    "load_backbone",
    "load_checkpoint",
    "save_checkpoint",
]

BACKBONE_FORMAT = "bag-of-tricks/backbone/v1"
_SHOWN = 5  # offenders listed in an error message


class UnsafeCheckpointError(ValueError):
    """The file holds objects that ``weights_only`` loading refuses (e.g. a pickle that would run code)."""


class CorruptCheckpointError(ValueError):
    """The file is truncated, damaged or not a torch checkpoint."""


def save_checkpoint(obj: Any, path: str | os.PathLike) -> Path:
    """Write ``torch.save(obj)`` to ``path`` atomically and return the path.

    The data goes to a temporary file in the same folder, is flushed and fsynced, then ``os.replace``-d over
    ``path``. If anything fails, the temporary file is removed, an existing ``path`` is left untouched, and
    the exception propagates. Keep ``obj`` to tensors, numbers, strings, None and lists/tuples/dicts so that
    :func:`load_checkpoint` can read it back. The folder is created if missing.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_name, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable where the OS allows it
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    return path


def _refusal_reason(message: str) -> str:
    marker = "WeightsUnpickler error:"
    if marker not in message:
        lines = [line.strip() for line in message.splitlines() if line.strip()]
        named = [line for line in lines if "GLOBAL" in line]  # the refused object, e.g. "... GLOBAL posix.system ..."
        return (named or lines or ["unknown reason"])[0]
    return message.split(marker, 1)[1].split("\n\nCheck the documentation", 1)[0].strip().splitlines()[0]


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> Any:
    """Read a checkpoint with ``torch.load(weights_only=True)``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        UnsafeCheckpointError: the file needs objects beyond tensors and plain containers (nothing in it
            was executed).
        CorruptCheckpointError: the file is truncated, empty or not a torch checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        raise UnsafeCheckpointError(
            f"refused to load {path}: it holds objects that weights_only loading does not allow "
            f"({_refusal_reason(str(error))}); nothing in it was run. Only load it unrestricted if you trust "
            "its source."
        ) from None
    except (RuntimeError, EOFError, KeyError, ValueError, OSError) as error:
        raise CorruptCheckpointError(
            f"cannot read checkpoint {path}: truncated, damaged or not a torch file ({type(error).__name__}: "
            f"{_refusal_reason(str(error))})"
        ) from error


@dataclasses.dataclass
class LoadReport:
    """What :func:`load_backbone` did; keys are the model's (source keys after ``key_map``).

    ``matched``: loaded; ``missing``: model tensors absent from the source; ``unexpected``: source tensors the
    model lacks; ``shape_mismatch``: ``(key, source_shape, model_shape)`` of tensors present on both sides
    with different shapes (not loaded); ``ignored``: source keys, as the source names them, dropped by
    ``key_map`` or ``ignore_prefixes``. Model keys under ``ignore_prefixes`` are not counted anywhere.
    """

    matched: list[str] = dataclasses.field(default_factory=list)
    missing: list[str] = dataclasses.field(default_factory=list)
    unexpected: list[str] = dataclasses.field(default_factory=list)
    shape_mismatch: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = dataclasses.field(
        default_factory=list
    )
    ignored: list[str] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every model tensor was loaded and nothing was left over."""
        return not (self.missing or self.unexpected or self.shape_mismatch)

    def summary(self) -> str:
        expected = len(self.matched) + len(self.missing) + len(self.shape_mismatch)
        return (
            f"backbone load: {len(self.matched)}/{expected} tensors matched, {len(self.missing)} missing, "
            f"{len(self.unexpected)} unexpected, {len(self.shape_mismatch)} shape mismatches"
        )


def _state_dict_of(source: Any, where: str) -> dict[str, Tensor]:
    if isinstance(source, Mapping):
        if source.get("meta", {}).get("format", BACKBONE_FORMAT) != BACKBONE_FORMAT:
            raise ValueError(f"{where}: unsupported backbone format {source['meta']['format']!r}")
        for key in ("state_dict", "model"):
            if isinstance(source.get(key), Mapping):
                source = source[key]
                break
        tensors = {k: v for k, v in source.items() if isinstance(v, Tensor)}
        if tensors and len(tensors) == len(source):
            return dict(tensors)
    raise ValueError(
        f"{where}: expected a state_dict (name -> tensor), a backbone file {{'state_dict', 'meta'}} or a "
        "training checkpoint with 'model' or 'state_dict'"
    )


def _rename(key: str, key_map: Mapping[str, str] | Callable[[str], str | None] | None) -> str | None:
    if key_map is None:
        return key
    if callable(key_map):
        return key_map(key)
    for old, new in key_map.items():
        if key.startswith(old):
            return new + key[len(old) :]
    return key


def load_backbone(
    model: nn.Module,
    path_or_state_dict: str | os.PathLike | Mapping[str, Any],
    *,
    allow_missing: bool = False,
    allow_unexpected: bool = True,
    ignore_prefixes: tuple[str, ...] = ("fc.",),
    key_map: Mapping[str, str] | Callable[[str], str | None] | None = None,
) -> LoadReport:
    """Load backbone weights into ``model`` and report exactly what arrived.

    Args:
        model: the receiving module; every entry of its ``state_dict()`` (parameters and buffers) counts.
        path_or_state_dict: a ``backbone.pth`` path or its loaded dict, a training checkpoint (``"model"``
            or ``"state_dict"`` entry), or a bare state_dict. Paths are read with :func:`load_checkpoint`.
        allow_missing: accept model tensors that the source lacks or has with another shape; they keep their
            current values (default False: raise).
        allow_unexpected: accept source tensors the model lacks (default True).
        ignore_prefixes: keys starting with these are skipped on both sides (default ``("fc.",)``, the
            classifier).
        key_map: renames source keys to model keys: a dict of prefix replacements (first match wins) or a
            function returning the new key, or None to drop the tensor (default None: names unchanged).

    Returns:
        A :class:`LoadReport`. Raises ValueError listing the first offenders otherwise.
    """
    where = str(path_or_state_dict) if isinstance(path_or_state_dict, str | os.PathLike) else "state_dict"
    source = path_or_state_dict
    if isinstance(source, str | os.PathLike):
        source = load_checkpoint(source)
    state = _state_dict_of(source, where)
    report = LoadReport()
    renamed: dict[str, Tensor] = {}
    for key, value in state.items():
        new_key = _rename(key, key_map)
        if new_key is None or new_key.startswith(tuple(ignore_prefixes)):
            report.ignored.append(key)
        else:
            renamed[new_key] = value
    target = model.state_dict()
    to_load = {}
    for key, value in target.items():
        if key.startswith(tuple(ignore_prefixes)):
            continue
        if key not in renamed:
            report.missing.append(key)
        elif renamed[key].shape != value.shape:
            report.shape_mismatch.append((key, tuple(renamed[key].shape), tuple(value.shape)))
        else:
            report.matched.append(key)
            to_load[key] = renamed[key]
    report.unexpected = [key for key in renamed if key not in target]
    problems = []
    if not allow_missing and report.missing:
        problems.append(f"missing {report.missing[:_SHOWN]}")
    if not allow_missing and report.shape_mismatch:
        problems.append(f"shape mismatches (key, source, model) {report.shape_mismatch[:_SHOWN]}")
    if not allow_unexpected and report.unexpected:
        problems.append(f"unexpected {report.unexpected[:_SHOWN]}")
    if problems:
        raise ValueError(f"{where}: {report.summary()}; " + "; ".join(problems))
    model.load_state_dict(to_load, strict=False)
    return report


def export_backbone(
    model: nn.Module,
    path: str | os.PathLike,
    meta: Mapping[str, Any],
    strip_prefixes: tuple[str, ...] = ("fc.",),
) -> Path:
    """Write ``{"state_dict", "meta"}`` in the ``bag-of-tricks/backbone/v1`` format, atomically.

    The state_dict is ``model.state_dict()`` on the CPU without keys starting with ``strip_prefixes``
    (default the classifier ``fc.``). ``meta`` should carry ``model_name, variant, recipe, val_top1,
    num_classes, in_chans`` (docs/architecture.md); ``format`` is set here. Values must be str, int, float,
    bool, None, lists or dicts so that ``weights_only`` loading reads them.
    """
    meta = dict(meta)
    _check_plain("meta", meta)
    meta["format"] = BACKBONE_FORMAT
    state = {
        k: v.detach().cpu() for k, v in model.state_dict().items() if not k.startswith(tuple(strip_prefixes))
    }
    return save_checkpoint({"state_dict": state, "meta": meta}, path)


def _check_plain(where: str, value: Any) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"{where} keys must be str, got {key!r}")
            _check_plain(f"{where}[{key!r}]", item)
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _check_plain(f"{where}[{index}]", item)
    elif not (value is None or isinstance(value, str | int | float | bool)):
        raise TypeError(
            f"{where} must hold only str, int, float, bool, None, lists and dicts, got {type(value).__name__}"
        )
