"""``Trainer``: Detectron2's ``DefaultTrainer`` with the optimizer, lr schedule and evaluator of ``cfg.TRICKS``.

Everything else (data loaders, hooks, checkpoints) is ``DefaultTrainer``'s, with three additions that make
``resume_or_load(resume=True)`` continue a killed run exactly (same lr, same data, same random draws, so on the
CPU with a fixed ``SEED`` the same weights as the uninterrupted run):

- the checkpoint holds the optimizer state under ``"_trainer"`` (Detectron2 main does; v0.6 saves none, so
  momentum restarted from zero) and the random streams under ``"random_state"`` (``plugins.random_state``);
- a resumed trainer skips the batches already trained (as MMEngine does: the cost of loading them again)
  and only then restores the random streams;
- evaluation (``test``) runs between a saved and a restored random state, so an evaluation between a checkpoint
  and the next iteration shifts nothing.

Under DDP only rank 0 writes checkpoints: every rank resumes with rank 0's random streams. On the CPU, DDP
wraps the model without ``device_ids`` (Detectron2 passes the local rank, which DDP refuses for a CPU model).
Checkpoints hold only tensors, numbers, strings, lists and dicts, so Detectron2's ``torch.load`` under torch's
``weights_only=True`` default reads them back on resume.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os

from detectron2.data import MetadataCatalog
from detectron2.engine import DefaultTrainer, TrainerBase
from detectron2.engine import defaults as _d2_defaults
from detectron2.evaluation import COCOEvaluator, PascalVOCDetectionEvaluator, SemSegEvaluator
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from plugins.random_state import capture_random_state, restore_random_state

from .config import validate_tricks_config
from .hooks import LrRecorder
from .solver import TricksSolverMixin

__all__ = ["Trainer"]

# Detectron2 v0.6's DefaultTrainer checkpoints no optimizer state; main's stores it under "_trainer".
_SAVES_INNER_STATE = DefaultTrainer.state_dict is not TrainerBase.state_dict


@contextlib.contextmanager
def _cpu_ddp(cfg):
    """While building a multi-process CPU trainer, wrap the model in DDP without ``device_ids``."""
    if comm.get_world_size() == 1 or not cfg.MODEL.DEVICE.startswith("cpu"):
        yield
        return
    original = _d2_defaults.create_ddp_model

    def create_ddp_model(model, **kwargs):
        return original(model, **{**kwargs, "device_ids": None})

    _d2_defaults.create_ddp_model = create_ddp_model
    try:
        yield
    finally:
        _d2_defaults.create_ddp_model = original


class Trainer(TricksSolverMixin, DefaultTrainer):
    """``DefaultTrainer`` whose builders read ``cfg.TRICKS`` (added by ``d2_ext.add_tricks_config``).

    - ``build_optimizer`` / ``build_lr_scheduler``: ``d2_ext.build_optimizer`` / ``d2_ext.build_lr_scheduler``
      (no bias decay, linear scaling, warmup + cosine of ``plugins``), from ``d2_ext.TricksSolverMixin``.
    - ``build_evaluator``: by the dataset's ``evaluator_type``: ``"coco"`` -> ``COCOEvaluator`` (pure-Python
      evaluation, ``use_fast_impl=False``, so no compiled Detectron2 op is needed), ``"pascal_voc"`` ->
      ``PascalVOCDetectionEvaluator``, ``"sem_seg"`` -> ``SemSegEvaluator``.
    """

    def __init__(self, cfg):
        validate_tricks_config(cfg)
        if not logging.getLogger("d2_ext").isEnabledFor(
            logging.INFO
        ):  # as DefaultTrainer does for detectron2
            setup_logger(name="d2_ext")
        self._resumed_random_state = None
        with _cpu_ddp(cfg):
            super().__init__(cfg)

    def state_dict(self):
        """``DefaultTrainer``'s state plus the optimizer (``"_trainer"``) and the random streams."""
        state = super().state_dict()
        if not _SAVES_INNER_STATE:
            state["_trainer"] = self._trainer.state_dict()
        state["random_state"] = capture_random_state()
        return state

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        if not _SAVES_INNER_STATE and "_trainer" in state_dict:
            self._trainer.load_state_dict(state_dict["_trainer"])
        self._resumed_random_state = state_dict.get("random_state")

    def resume_or_load(self, resume=True):
        """``DefaultTrainer.resume_or_load``; a resume then skips the trained batches and restores the streams."""
        self._resumed_random_state = None
        super().resume_or_load(resume=resume)
        if self.start_iter > 0 and self._resumed_random_state is not None:
            batches = self._trainer._data_loader_iter
            for _ in range(self.start_iter):
                next(batches)
            restore_random_state(self._resumed_random_state)
        self._resumed_random_state = None

    @classmethod
    def test(cls, cfg, model, evaluators=None):
        """``DefaultTrainer.test``, leaving the random streams as it found them."""
        state = capture_random_state()
        try:
            return super().test(cfg, model, evaluators)
        finally:
            restore_random_state(state)

    def build_hooks(self):
        """``DefaultTrainer``'s hooks plus ``LrRecorder`` (``OUTPUT_DIR/lr_per_step.csv``)."""
        return [*super().build_hooks(), LrRecorder(self.cfg.OUTPUT_DIR)]

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        evaluator_type = MetadataCatalog.get(dataset_name).get("evaluator_type", None)
        if evaluator_type == "coco":
            kwargs = {"output_dir": output_folder}
            if "use_fast_impl" in inspect.signature(COCOEvaluator.__init__).parameters:
                kwargs["use_fast_impl"] = False
            return COCOEvaluator(dataset_name, **kwargs)
        if evaluator_type == "pascal_voc":
            return PascalVOCDetectionEvaluator(dataset_name)
        if evaluator_type == "sem_seg":
            return SemSegEvaluator(dataset_name, distributed=True, output_dir=output_folder)
        raise ValueError(
            f"dataset {dataset_name!r} has evaluator_type={evaluator_type!r}; accepted: 'coco', 'pascal_voc', "
            "'sem_seg' (set it in MetadataCatalog, or override Trainer.build_evaluator)"
        )
