"""``LrRecorder``: writes the lr that every update actually used to ``OUTPUT_DIR/lr_per_step.csv``.

Same format as ``timm_ext.train`` and ``mm_ext``'s ``LrRecorderHook`` (``step,lr_group0,lr_group1,...``, step
counted from 1), so the three ecosystems' curves can be overlaid and compared with ``plugins.tricks.lr_schedule``.
"""

from __future__ import annotations

import os

from detectron2.engine import HookBase
from detectron2.utils import comm

from plugins.runtime.lr_record import FILENAME, LrRecord


class LrRecorder(HookBase):
    """Records each param group's lr before every step (the lr that update uses); rank 0 writes the file.

    ``flush_every`` (default 1): steps between appends. Detectron2 has no event at checkpoint time, so rows
    are appended at every step by default: a killed run then keeps the rows its resume keeps (a resume drops
    the rows after its checkpoint and writes them again).
    """

    def __init__(self, output_dir: str, flush_every: int = 1):
        self._path = os.path.join(output_dir, FILENAME)
        self._flush_every = flush_every
        self._record: LrRecord | None = None

    def before_train(self):
        groups = self.trainer.optimizer.param_groups
        self._record = LrRecord(self._path, len(groups), write=comm.is_main_process())
        self._record.start(self.trainer.iter)  # > 0 after a resume: keep the rows of the updates already done

    def before_step(self):
        self._record.log(self.trainer.iter + 1, [g["lr"] for g in self.trainer.optimizer.param_groups])
        if len(self._record) >= self._flush_every:
            self._record.flush()

    def after_train(self):
        if self._record is not None:
            self._record.flush()
