"""Deprecated import path of the first release: the module is now ``plugins.runtime.lr_record``.

Importing ``plugins.lr_record`` still works for one release: it warns (DeprecationWarning) and is the new module itself.
"""

import importlib
import sys
import warnings

warnings.warn("plugins.lr_record is deprecated and goes in the next release; import plugins.runtime.lr_record", DeprecationWarning, stacklevel=2)
sys.modules[__name__] = importlib.import_module("plugins.runtime.lr_record")
