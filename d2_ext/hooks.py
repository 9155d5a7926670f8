"""``LrRecorder``: writes the lr that every update actually used to ``OUTPUT_DIR/lr_per_step.csv``.

Same format as ``timm_ext.train`` and ``mm_ext``'s ``LrRecorderHook`` (``step,lr_group0,lr_group1,...``, step
counted from 1), so the three ecosystems' curves can be overlaid and compared with ``plugins.schedules``.
"""

from __future__ import annotations

import os

from detectron2.engine import HookBase
from detectron2.utils import comm


class LrRecorder(HookBase):
    """Records each param group's lr before every step (the lr that update uses); rank 0 writes the file.

    ``flush_every`` (default 1): steps between appends. Detectron2 has no event at checkpoint time, so rows
    are appended at every step by default: a killed run then keeps the rows its resume keeps (a resume drops
    the rows after its checkpoint and writes them again).
    """

    def __init__(self, output_dir: str, flush_every: int = 1):
        self._path = os.path.join(output_dir, "lr_per_step.csv")
        self._flush_every = flush_every
        self._rows: list[str] = []
        self._header: str | None = None

    def before_train(self):
        groups = self.trainer.optimizer.param_groups
        self._header = "step," + ",".join(f"lr_group{g}" for g in range(len(groups)))
        start = self.trainer.iter  # > 0 after a resume: keep the rows of the updates already done
        kept = []
        if start and os.path.isfile(self._path):
            with open(self._path) as f:
                lines = f.read().splitlines()
            if lines and lines[0] == self._header:
                kept = [ln for ln in lines[1:] if ln and int(ln.split(",")[0]) <= start]
        if comm.is_main_process():
            self._write([self._header, *kept], mode="w")

    def before_step(self):
        lrs = [g["lr"] for g in self.trainer.optimizer.param_groups]
        self._rows.append(f"{self.trainer.iter + 1}," + ",".join(repr(float(v)) for v in lrs))
        if len(self._rows) >= self._flush_every:
            self._flush()

    def after_train(self):
        self._flush()

    def _flush(self):
        if self._rows and comm.is_main_process():
            self._write(self._rows, mode="a")
        self._rows = []

    def _write(self, lines, mode):
        os.makedirs(os.path.dirname(self._path) or ".", exist_ok=True)
        if mode == "w":
            tmp = self._path + ".tmp"
            with open(tmp, "w") as f:
                f.write("\n".join(lines) + "\n")
            os.replace(tmp, self._path)
        else:
            with open(self._path, "a") as f:
                f.write("\n".join(lines) + "\n")
