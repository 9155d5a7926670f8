"""Deprecated import path of the first release: now ``plugins.tricks.label_smoothing`` (label smoothing,
soft-target cross entropy) and ``plugins.tricks.distillation``. Kept for one release; importing it warns.
"""

import warnings

from plugins.tricks.distillation import *  # noqa: F403
from plugins.tricks.distillation import __all__ as _distillation
from plugins.tricks.label_smoothing import *  # noqa: F403
from plugins.tricks.label_smoothing import __all__ as _label_smoothing

__all__ = [*_label_smoothing, *_distillation]

warnings.warn("plugins.losses is deprecated and goes in the next release; import plugins.tricks.label_smoothing "
              "or plugins.tricks.distillation", DeprecationWarning, stacklevel=2)
