"""``Trainer``: Detectron2's ``DefaultTrainer`` with the optimizer, lr schedule and evaluator of ``cfg.TRICKS``.

Evaluation is as in Detectron2's ``tools/train_net.py``: with ``TEST.AUG.ENABLED`` the end of training also
evaluates ``GeneralizedRCNNWithTTA`` (:meth:`Trainer.test_with_TTA`, results keyed ``"<task>_TTA"``), and
``TEST.EXPECTED_RESULTS`` are checked with Detectron2's ``verify_results`` (:func:`verify_results`), TTA results
included.

Everything else (data loaders, hooks, checkpoints) is ``DefaultTrainer``'s, with three additions that make
``resume_or_load(resume=True)`` continue a killed run exactly (same lr, same data, same random draws, so on the
CPU with a fixed ``SEED`` the same weights as the uninterrupted run):

- the checkpoint holds the optimizer state under ``"_trainer"`` (Detectron2 main does; v0.6 saves none, so
  momentum restarted from zero) and the random streams under ``"random_state"`` (``plugins.runtime.random_state``);
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
from collections import OrderedDict

from detectron2.data import MetadataCatalog
from detectron2.engine import DefaultTrainer, TrainerBase, hooks
from detectron2.engine import defaults as _d2_defaults
from detectron2.evaluation import COCOEvaluator, PascalVOCDetectionEvaluator, SemSegEvaluator
from detectron2.evaluation import verify_results as _d2_verify_results
from detectron2.modeling import GeneralizedRCNNWithTTA
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from plugins.runtime.random_state import capture_random_state, restore_random_state

from .config import validate_tricks_config
from .det_mixup import build_train_loader
from .hooks import LrRecorder
from .solver import TricksSolverMixin

__all__ = ["Trainer", "verify_results"]

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


def verify_results(cfg, results) -> bool:
    """Detectron2's ``verify_results(cfg, results)``, after a ValueError naming ``TEST.EXPECTED_RESULTS`` for an
    entry whose task or metric the results lack (Detectron2 raises a bare KeyError there). Like Detectron2's,
    it returns True when every expected value is within its tolerance, and exits with status 1 otherwise."""
    for entry in cfg.TEST.EXPECTED_RESULTS:
        task, metric = entry[0], entry[1]
        if task not in results or metric not in results[task]:
            have = list(results[task]) if task in results else list(results)
            raise ValueError(
                f"cfg.TEST.EXPECTED_RESULTS entry {list(entry)!r} is not accepted: the results have no "
                f"{task!r}/{metric!r}; accepted {'metrics of ' + repr(task) if task in results else 'tasks'}: {have}"
            )
    return _d2_verify_results(cfg, results)


class Trainer(TricksSolverMixin, DefaultTrainer):
    """``DefaultTrainer`` whose builders read ``cfg.TRICKS`` (added by ``d2_ext.add_tricks_config``).

    - ``build_optimizer`` / ``build_lr_scheduler``: ``d2_ext.build_optimizer`` / ``d2_ext.build_lr_scheduler``
      (no bias decay, linear scaling, warmup + cosine of ``plugins``), from ``d2_ext.TricksSolverMixin``.
    - ``build_train_loader``: ``d2_ext.build_train_loader`` (Detectron2's loader, mixed in pairs with per-box
      weights when ``TRICKS.DET_MIXUP_ALPHA > 0``).
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

    @classmethod
    def test_with_TTA(cls, cfg, model):  # Detectron2's name (tools/train_net.py)
        """Evaluate ``GeneralizedRCNNWithTTA(cfg, model)`` (``TEST.AUG.MIN_SIZES``, ``MAX_SIZE``, ``FLIP``) on
        ``DATASETS.TEST``, writing to ``OUTPUT_DIR/inference_TTA``; results keyed ``"<task>_TTA"``."""
        logging.getLogger("d2_ext").info("Running inference with test-time augmentation ...")
        model = GeneralizedRCNNWithTTA(cfg, model)
        evaluators = [
            cls.build_evaluator(cfg, name, output_folder=os.path.join(cfg.OUTPUT_DIR, "inference_TTA"))
            for name in cfg.DATASETS.TEST
        ]
        results = cls.test(cfg, model, evaluators)
        return OrderedDict((f"{key}_TTA", value) for key, value in results.items())

    def _test_with_tta_and_keep(self):
        results = self.test_with_TTA(self.cfg, self.model)
        self._last_eval_results = OrderedDict({**getattr(self, "_last_eval_results", {}), **results})
        return results

    def build_hooks(self):
        """``DefaultTrainer``'s hooks plus ``LrRecorder`` (``OUTPUT_DIR/lr_per_step.csv``) and, with
        ``TEST.AUG.ENABLED``, a final TTA evaluation (before the writers, so its metrics reach metrics.json)."""
        built = [*super().build_hooks(), LrRecorder(self.cfg.OUTPUT_DIR)]
        if self.cfg.TEST.AUG.ENABLED:
            writers = [i for i, hook in enumerate(built) if isinstance(hook, hooks.PeriodicWriter)]
            built.insert(
                writers[0] if writers else len(built), hooks.EvalHook(0, self._test_with_tta_and_keep)
            )
        return built

    def train(self):
        """``DefaultTrainer.train``; ``TEST.EXPECTED_RESULTS`` are verified against the last evaluation and the TTA
        one, by :func:`verify_results` (ValueError naming the key when nothing was evaluated)."""
        TrainerBase.train(self, self.start_iter, self.max_iter)
        if not len(self.cfg.TEST.EXPECTED_RESULTS) or not comm.is_main_process():
            return None
        results = getattr(self, "_last_eval_results", None)
        if results is None:
            raise ValueError(
                "cfg.TEST.EXPECTED_RESULTS is set but training evaluated nothing; accepted: with a "
                "non-empty DATASETS.TEST (evaluated at the end of training)"
            )
        verify_results(self.cfg, results)
        return results

    @classmethod
    def build_train_loader(cls, cfg):
        return build_train_loader(cfg)

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
