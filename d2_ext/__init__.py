"""The tricks in Detectron2: ``cfg.TRICKS`` keys, a timm backbone, label-smoothed ROI heads and a Trainer.

Importing ``d2_ext`` registers, in Detectron2's registries (never overwriting a name):

- ``BACKBONE_REGISTRY``: ``build_timm_backbone``, ``build_timm_fpn_backbone`` (``d2_ext.backbone``);
- ``ROI_HEADS_REGISTRY``: ``LabelSmoothingStandardROIHeads``, ``LabelSmoothingCascadeROIHeads`` (``d2_ext.roi_heads``);
- ``PROPOSAL_GENERATOR_REGISTRY``: ``MixWeightRPN`` (``d2_ext.det_mixup``: detection mixup's per-box weights).

Typical use::

    from detectron2.config import get_cfg
    import d2_ext

    cfg = get_cfg()
    d2_ext.add_tricks_config(cfg)
    cfg.merge_from_file(d2_ext.get_config_file("faster_rcnn_timm_R_26n_D_FPN_tricks_fashion_scenes.yaml"))
    d2_ext.register_fashion_scenes("data/fashion_scenes")
    trainer = d2_ext.Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()

or ``python -m d2_ext.train_net --config-file FILE [KEY VALUE ...]``. A trainer of one's own keeps working:
its ``build_optimizer`` / ``build_lr_scheduler`` classmethods return ``d2_ext.build_optimizer(cfg, model)`` /
``d2_ext.build_lr_scheduler(cfg, optimizer)`` (or it derives from ``d2_ext.TricksSolverMixin`` before
``DefaultTrainer``), and its ``build_train_loader`` returns ``d2_ext.build_train_loader(cfg)`` for
``TRICKS.DET_MIXUP_ALPHA``. Importing ``d2_ext`` also makes every trainer's ``train()`` fail with a ValueError naming
the keys when set ``cfg.TRICKS`` keys are not applied (``d2_ext.check``). The formulas live in ``plugins``.
"""

from pathlib import Path

from . import backbone as _backbone  # noqa: F401  registration: build_timm_backbone, build_timm_fpn_backbone
from . import det_mixup as _det_mixup  # noqa: F401  registration: MixWeightRPN
from . import roi_heads as _roi_heads  # noqa: F401  registration: LabelSmoothing{Standard,Cascade}ROIHeads
from .check import check_tricks_applied, install_tricks_check
from .config import add_tricks_config, validate_tricks_config
from .data import register_fashion_scenes
from .det_mixup import build_train_loader
from .recipe import apply_recipe
from .solver import TricksSolverMixin, build_lr_scheduler, build_optimizer
from .trainer import Trainer

__all__ = [
    "CONFIG_DIR",
    "Trainer",
    "TricksSolverMixin",
    "add_tricks_config",
    "apply_recipe",
    "build_lr_scheduler",
    "build_optimizer",
    "build_train_loader",
    "check_tricks_applied",
    "get_config_file",
    "register_fashion_scenes",
    "validate_tricks_config",
]

install_tricks_check()

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


def get_config_file(name: str) -> str:
    """Path of a yaml shipped in ``d2_ext/configs/`` (``name`` relative to that folder)."""
    path = CONFIG_DIR / name
    if not path.is_file():
        shipped = sorted(p.name for p in CONFIG_DIR.glob("*.yaml"))
        raise FileNotFoundError(f"config {name!r} is not shipped in {CONFIG_DIR}; shipped: {shipped}")
    return str(path)
