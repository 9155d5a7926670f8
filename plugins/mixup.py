"""Deprecated import path of the first release: the module is now ``plugins.tricks.mixup``.

Importing ``plugins.mixup`` still works for one release: it warns (DeprecationWarning) and is the new module itself.
"""

import importlib
import sys
import warnings

warnings.warn("plugins.mixup is deprecated and goes in the next release; import plugins.tricks.mixup", DeprecationWarning, stacklevel=2)
sys.modules[__name__] = importlib.import_module("plugins.tricks.mixup")
