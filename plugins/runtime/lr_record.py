"""``lr_per_step.csv``: the lr that every update used, written and read the same way by all three adapters.

Format: a header ``step,lr_group0,lr_group1,...`` and one row per update, ``step`` counted from 1, each lr as
``repr(float)`` (exact round trip). Rows are buffered and appended; :meth:`LrRecord.start` rewrites the file
atomically with the header and, after a resume, the rows of the updates already done, so that a resumed run's
file equals an uninterrupted run's. Written by ``timm_ext`` (both runs), ``mm_ext.LrRecorderHook`` and
``d2_ext``'s ``LrRecorder``; read by :func:`read_lr_record` (the study's lr-trace table and tests).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

__all__ = ["FILENAME", "LrRecord", "read_lr_record"]

FILENAME = "lr_per_step.csv"


class LrRecord:
    """One run's ``lr_per_step.csv``.

    Args:
        path: the file (its folder is created on :meth:`start`).
        num_groups: param groups, one ``lr_group<g>`` column each.
        write: False on the processes that must not write (DDP ranks other than 0): every call is then a no-op
            on disk.
    """

    def __init__(self, path: str | os.PathLike, num_groups: int, write: bool = True) -> None:
        self.path = Path(path)
        self.header = ["step"] + [f"lr_group{g}" for g in range(num_groups)]
        self.write = write
        self._rows: list[str] = []

    def start(self, done_steps: int = 0) -> None:
        """Begin the file: the header, and the rows of updates ``<= done_steps`` already in it (a resume)."""
        self._rows = []
        if not self.write:
            return
        kept: list[str] = []
        if done_steps and self.path.is_file():
            lines = self.path.read_text().splitlines()
            if lines and lines[0] == ",".join(self.header):
                kept = [ln for ln in lines[1:] if ln and int(ln.split(",")[0]) <= done_steps]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text("\n".join([",".join(self.header), *kept]) + "\n")
        os.replace(tmp, self.path)

    def log(self, step: int, lrs) -> None:
        """Buffer the lrs update ``step`` used; :meth:`flush` appends them."""
        self._rows.append(f"{int(step)}," + ",".join(repr(float(v)) for v in lrs))

    def flush(self) -> None:
        if self._rows and self.write:
            with open(self.path, "a") as f:
                f.write("\n".join(self._rows) + "\n")
        self._rows = []

    def __len__(self) -> int:
        """Rows buffered and not yet written."""
        return len(self._rows)


def read_lr_record(path: str | os.PathLike) -> tuple[list[int], list[list[float]]]:
    """``(steps, lrs)`` of an ``lr_per_step.csv``: ``lrs[g]`` is param group ``g``'s lr at each step."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows or rows[0][:1] != ["step"]:
        raise ValueError(f"{path}: not an lr_per_step.csv (header 'step,lr_group0,...')")
    body = [r for r in rows[1:] if r]
    steps = [int(r[0]) for r in body]
    lrs = [[float(r[g]) for r in body] for g in range(1, len(rows[0]))]
    return steps, lrs
