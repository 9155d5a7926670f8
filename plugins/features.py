"""Deprecated import path of the first release: the module is now ``plugins.models.features``.

Importing ``plugins.features`` still works for one release: it warns (DeprecationWarning) and is the new module itself.
"""

import importlib
import sys
import warnings

warnings.warn("plugins.features is deprecated and goes in the next release; import plugins.models.features", DeprecationWarning, stacklevel=2)
sys.modules[__name__] = importlib.import_module("plugins.models.features")
