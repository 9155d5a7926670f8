"""Deprecated import path of the first release: the module is now ``plugins.tricks.resnet``.

Importing ``plugins.resnet`` still works for one release: it warns (DeprecationWarning) and is the new module itself.
"""

import importlib
import sys
import warnings

warnings.warn("plugins.resnet is deprecated and goes in the next release; import plugins.tricks.resnet", DeprecationWarning, stacklevel=2)
sys.modules[__name__] = importlib.import_module("plugins.tricks.resnet")
