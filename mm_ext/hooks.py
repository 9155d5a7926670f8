"""``LrRecorderHook``: writes the lr that every iteration actually used to ``work_dir/lr_per_step.csv``.

Same format as ``timm_ext.train`` and ``d2_ext``'s ``LrRecorder`` (``step,lr_group0,lr_group1,...``, step
counted from 1), so the three ecosystems' curves can be overlaid and compared with ``plugins.schedules``.
``python -m mm_ext.train`` adds it to every run; in other set-ups add
``custom_hooks = [dict(type='LrRecorderHook')]`` to the config.
"""

from __future__ import annotations

import os

from mmengine.dist import is_main_process
from mmengine.hooks import Hook


class LrRecorderHook(Hook):
    """Records each param group's lr before every training iteration; the main process writes the file.

    Args:
        flush_interval (int): iterations between appends to the file. Defaults to 100.
    """

    priority = "VERY_LOW"

    def __init__(self, flush_interval: int = 100):
        if not isinstance(flush_interval, int) or flush_interval < 1:
            raise ValueError(f"LrRecorderHook: flush_interval={flush_interval!r}; accepted: an int >= 1")
        self.flush_interval = flush_interval
        self._rows: list[str] = []
        self._path = ""

    @staticmethod
    def _groups(runner):
        wrapper = runner.optim_wrapper
        optimizer = getattr(wrapper, "optimizer", None)
        if optimizer is None:  # OptimWrapperDict: one wrapper per model part, recorded in name order
            return [g for name in sorted(wrapper) for g in wrapper[name].optimizer.param_groups]
        return optimizer.param_groups

    def before_train(self, runner) -> None:
        self._path = os.path.join(runner.work_dir, "lr_per_step.csv")
        header = "step," + ",".join(f"lr_group{g}" for g in range(len(self._groups(runner))))
        kept: list[str] = []
        if runner.iter and os.path.isfile(self._path):  # resumed: keep the rows of the iterations already run
            with open(self._path) as f:
                lines = f.read().splitlines()
            if lines and lines[0] == header:
                kept = [ln for ln in lines[1:] if ln and int(ln.split(",")[0]) <= runner.iter]
        if is_main_process():
            tmp = self._path + ".tmp"
            with open(tmp, "w") as f:
                f.write("\n".join([header, *kept]) + "\n")
            os.replace(tmp, self._path)

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        lrs = [g["lr"] for g in self._groups(runner)]
        self._rows.append(f"{runner.iter + 1}," + ",".join(repr(float(v)) for v in lrs))
        if len(self._rows) >= self.flush_interval:
            self._flush()

    def after_train(self, runner) -> None:
        self._flush()

    def _flush(self) -> None:
        if self._rows and is_main_process():
            with open(self._path, "a") as f:
                f.write("\n".join(self._rows) + "\n")
        self._rows = []
