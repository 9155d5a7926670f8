"""The ``tricks_*`` timm models; they live in ``plugins.models.timm_models`` (shared by every adapter), and importing
this module or ``timm_ext`` registers them as before."""

from plugins.models.timm_models import *  # noqa: F403
from plugins.models.timm_models import __all__  # noqa: F401
