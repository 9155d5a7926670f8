"""Deprecated location of :class:`TimmFeatures`: import it from ``plugins.models.features`` (this path works for one
release and warns)."""

import warnings

from plugins.models.features import TimmFeatures

warnings.warn("timm_ext.features is deprecated: import TimmFeatures from plugins.models.features (shared by mm_ext and "
              "d2_ext, so that no adapter imports another)", DeprecationWarning, stacklevel=2)

__all__ = ["TimmFeatures"]
