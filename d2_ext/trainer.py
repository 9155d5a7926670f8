"""``Trainer``: Detectron2's ``DefaultTrainer`` with the optimizer, lr schedule and evaluator of ``cfg.TRICKS``.

Everything else (data loaders, hooks, checkpoints, ``resume_or_load``, ``test``) is ``DefaultTrainer``'s.
Checkpoints written by it hold only tensors, numbers, strings, lists and dicts, so Detectron2's
``torch.load`` under torch's ``weights_only=True`` default reads them back on resume.
"""

from __future__ import annotations

import inspect
import logging
import os

from detectron2.data import MetadataCatalog
from detectron2.engine import DefaultTrainer
from detectron2.evaluation import COCOEvaluator, PascalVOCDetectionEvaluator, SemSegEvaluator
from detectron2.utils.logger import setup_logger

from .config import validate_tricks_config
from .hooks import LrRecorder
from .solver import build_tricks_lr_scheduler, build_tricks_optimizer

__all__ = ["Trainer"]


class Trainer(DefaultTrainer):
    """``DefaultTrainer`` whose builders read ``cfg.TRICKS`` (added by ``d2_ext.add_tricks_config``).

    - ``build_optimizer``: ``d2_ext.solver.build_tricks_optimizer`` (no bias decay, linear scaling).
    - ``build_lr_scheduler``: ``d2_ext.solver.build_tricks_lr_scheduler`` (warmup + cosine of ``plugins``).
    - ``build_evaluator``: by the dataset's ``evaluator_type``: ``"coco"`` -> ``COCOEvaluator`` (pure-Python
      evaluation, ``use_fast_impl=False``, so no compiled Detectron2 op is needed), ``"pascal_voc"`` ->
      ``PascalVOCDetectionEvaluator``, ``"sem_seg"`` -> ``SemSegEvaluator``.
    """

    def __init__(self, cfg):
        validate_tricks_config(cfg)
        if not logging.getLogger("d2_ext").isEnabledFor(logging.INFO):  # as DefaultTrainer does for detectron2
            setup_logger(name="d2_ext")
        super().__init__(cfg)

    def build_hooks(self):
        """``DefaultTrainer``'s hooks plus ``LrRecorder`` (``OUTPUT_DIR/lr_per_step.csv``)."""
        return [*super().build_hooks(), LrRecorder(self.cfg.OUTPUT_DIR)]

    @classmethod
    def build_optimizer(cls, cfg, model):
        return build_tricks_optimizer(cfg, model)

    @classmethod
    def build_lr_scheduler(cls, cfg, optimizer):
        return build_tricks_lr_scheduler(cfg, optimizer)

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
