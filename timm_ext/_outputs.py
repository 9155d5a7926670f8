"""Files of a run's output folder that timm's train.py does not write (only on rank 0): ``lr_per_step.csv`` (the lr
of every param group at every update, for overlaying lr curves of several tools) and ``lr_curve.png``, and the
atomic text writes (``args.yaml``, ``recipe.yaml``, ``summary.csv``); checkpoints go through
``plugins.runtime.checkpoint`` (atomic).
"""

from __future__ import annotations

import csv
import io
import os
import tempfile
from pathlib import Path

from plugins.runtime.lr_record import FILENAME, LrRecord, read_lr_record

from .cli import UsageError

__all__ = ["SUMMARY_EXTRA", "RunFiles", "atomic_write", "check_writable", "earlier_rows", "write_summary"]

# summary.csv: timm's columns (epoch, train_loss, eval_loss, eval_top1, eval_top5[, eval_ece with --ece-bins], lr),
# then these (train_clean_* with --train-clean-subset: the training images' own loss, top-1 and calibration error
# under the evaluation transforms, the other side of the train-val gap).
SUMMARY_EXTRA = ("images_per_s", "epoch_time", "epoch_cpu_time", "train_clean_loss", "train_clean_top1", "train_clean_ece")

_UMASK = os.umask(0o022)
os.umask(_UMASK)

def atomic_write(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give the usual permissions
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check_writable(flag: str, folder: Path) -> None:
    """Create ``folder`` and probe it; :class:`UsageError` naming ``flag`` if it cannot be written."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-").close()
    except OSError as err:
        raise UsageError(f"{flag} {folder}: cannot write there ({err.strerror or err})") from None


class RunFiles:
    """The output folder of one run.

    Args:
        output: the folder (created; :class:`UsageError` naming ``--output`` if it cannot be written).
        num_groups: param groups, one lr column each in ``lr_per_step.csv``.
    """

    def __init__(self, output: str | os.PathLike, num_groups: int) -> None:
        self.root = Path(output)
        check_writable("--output", self.root)
        self.num_groups = num_groups
        self.lr_record = LrRecord(self.root / FILENAME, num_groups)
        self.lr_header = self.lr_record.header

    def path(self, name: str) -> Path:
        return self.root / name

    def start_lr_log(self, done_steps: int) -> None:
        """Start ``lr_per_step.csv``, keeping the rows of updates ``<= done_steps`` of an earlier (resumed) run."""
        self.lr_record.start(done_steps)

    def log_lr(self, step: int, lrs: list[float]) -> None:
        """Buffer one update's lrs; :meth:`flush_lr` appends them to ``lr_per_step.csv``."""
        self.lr_record.log(step, lrs)

    def flush_lr(self) -> None:
        self.lr_record.flush()

    def plot_lr(self, title: str) -> None:
        """``lr_curve.png`` from ``lr_per_step.csv`` (matplotlib, Agg backend)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        steps, lrs = read_lr_record(self.path(FILENAME))
        fig, ax = plt.subplots(figsize=(7, 3.5))
        for name, values in zip(self.lr_header[1:], lrs, strict=True):
            ax.plot(steps, values, label=name)
        ax.set_xlabel("update")
        ax.set_ylabel("learning rate")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(self.path("lr_curve.png"), dpi=100)
        plt.close(fig)


def write_summary(path: str, rows: list[dict]) -> None:
    """summary.csv with timm's columns (as ``timm.utils.update_summary``), then ``SUMMARY_EXTRA``, atomically."""
    if not rows:
        return
    columns = [c for c in rows[0] if c not in SUMMARY_EXTRA] + [c for c in SUMMARY_EXTRA if c in rows[0]]
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns)
    writer.writeheader()
    for row in rows:
        writer.writerow({c: row.get(c, "") for c in columns})
    atomic_write(path, text.getvalue())


def earlier_rows(path: str, before_epoch: int) -> list[dict]:
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        return [row for row in csv.DictReader(f) if int(row["epoch"]) < before_epoch]
