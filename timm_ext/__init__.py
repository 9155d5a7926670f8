"""timm adapter: ``tricks_*`` ResNet-A/B/C/D models, the paper's lr schedule as a timm scheduler, and the
``tricks-train`` / ``tricks-validate`` commands (``python -m timm_ext.train``, ``python -m timm_ext.validate``).

Importing this package registers the ``tricks_*`` models in timm's model registry (see ``timm_ext.models``).
The formulas live in ``plugins``; this package only translates timm's conventions to them.
"""

from . import models as _models  # noqa: F401  (registration: tricks_* models in timm's registry)
from .scheduler import TricksScheduler, create_tricks_scheduler

__all__ = ["TricksScheduler", "create_tricks_scheduler"]
