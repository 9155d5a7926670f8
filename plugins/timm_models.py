"""Deprecated import path of the first release: the module is now ``plugins.models.timm_models``.

Importing ``plugins.timm_models`` still works for one release: it warns (DeprecationWarning) and is the new module itself.
"""

import importlib
import sys
import warnings

warnings.warn("plugins.timm_models is deprecated and goes in the next release; import plugins.models.timm_models", DeprecationWarning, stacklevel=2)
sys.modules[__name__] = importlib.import_module("plugins.models.timm_models")
