"""Hooks that ``python -m mm_ext.train`` adds to every run; the shipped configs list them in ``custom_hooks``
(``mm_ext/configs/_base_/tricks_runtime.py``), so the frameworks' own ``tools/train.py`` runs them too.

- ``LrRecorderHook``: writes the lr that every iteration actually used to ``work_dir/lr_per_step.csv``, in the
  format of ``timm_ext.train`` and ``d2_ext``'s ``LrRecorder`` (``step,lr_group0,lr_group1,...``, step counted
  from 1), so the three ecosystems' curves can be overlaid and compared with ``plugins.tricks.lr_schedule``.
- ``RandomStateHook``: a resumed run continues the torch random stream of the uninterrupted one.
- ``NonFiniteLossHook``: a NaN or infinite loss stops training before that iteration's checkpoint is written.
"""

from __future__ import annotations

import os

from mmengine.dist import is_main_process
from mmengine.hooks import Hook

from plugins.runtime.errors import NonFiniteLossError, check_finite
from plugins.runtime.lr_record import FILENAME, LrRecord
from plugins.runtime.random_state import capture_random_state, restore_random_state

__all__ = ["LrRecorderHook", "NonFiniteLossError", "NonFiniteLossHook", "RandomStateHook"]


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
        self._record: LrRecord | None = None

    @staticmethod
    def _groups(runner):
        wrapper = runner.optim_wrapper
        optimizer = getattr(wrapper, "optimizer", None)
        if optimizer is None:  # OptimWrapperDict: one wrapper per model part, recorded in name order
            return [g for name in sorted(wrapper) for g in wrapper[name].optimizer.param_groups]
        return optimizer.param_groups

    def before_train(self, runner) -> None:
        self._record = LrRecord(os.path.join(runner.work_dir, FILENAME), len(self._groups(runner)),
                                write=is_main_process())
        self._record.start(runner.iter)  # resumed: keeps the rows of the iterations already run

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        self._record.log(runner.iter + 1, [g["lr"] for g in self._groups(runner)])
        if len(self._record) >= self.flush_interval:
            self._record.flush()

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        if self._record is not None:
            self._record.flush()  # a run killed after this checkpoint still has the rows its resume keeps

    def after_train(self, runner) -> None:
        if self._record is not None:
            self._record.flush()


class RandomStateHook(Hook):
    """Makes a resumed run draw the random numbers the uninterrupted run drew (dropout, RPN/RoI sampling).

    MMEngine re-seeds a resumed run and skips the batches already trained, which reproduces the data order
    and, with a fixed ``randomness.seed`` and ``num_workers=0``, the data pipeline's numpy draws; but the torch
    stream would restart from the seed. This hook stores the torch (and CUDA) stream in every checkpoint
    (``checkpoint["random_state"]``) and restores it when training starts from a resumed checkpoint (not
    before: ``Runner.resume`` may re-seed after loading). Validation runs between a saved and a restored
    state of every stream, so an evaluation between a checkpoint and the next iteration shifts nothing.
    Under DDP only rank 0 writes checkpoints: every rank resumes with rank 0's torch stream.
    """

    priority = "NORMAL"

    def __init__(self):
        self._resumed_state = None
        self._val_state = None

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint["random_state"] = capture_random_state(("torch", "cuda"))

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        self._resumed_state = checkpoint.get("random_state")

    def before_train(self, runner) -> None:
        if self._resumed_state is not None and runner.iter > 0:  # resumed (a plain load_from starts at 0)
            restore_random_state(self._resumed_state)
        self._resumed_state = None

    def before_val(self, runner) -> None:
        self._val_state = capture_random_state()

    def after_val(self, runner) -> None:
        if self._val_state is not None:
            restore_random_state(self._val_state)
            self._val_state = None


class NonFiniteLossHook(Hook):
    """Stops training at the first iteration whose total loss (``outputs["loss"]``) is NaN or infinite.

    It runs before the scheduler, logger and checkpoint hooks of that iteration (priority ``ABOVE_NORMAL``),
    so no checkpoint holding the damaged weights is written: the last checkpoint on disk keeps the last good
    state. Under DDP the check is agreed across processes (one all-reduce per iteration), so every
    process stops at the same iteration (:func:`plugins.runtime.errors.check_finite`). Raises
    :class:`~plugins.runtime.errors.NonFiniteLossError`.
    """

    priority = "ABOVE_NORMAL"

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        loss = (outputs or {}).get("loss")
        if loss is None:
            return
        last = runner.message_hub.get_info("last_ckpt")
        kept = (
            f"the last checkpoint, {last}, keeps the last good state"
            if last
            else "no checkpoint was written"
        )
        check_finite([loss], runner.iter + 1, unit="iteration",
                     advice=f"training stopped before this iteration's checkpoint; {kept}. Lower "
                            "optim_wrapper.optimizer.lr or check the data.")
