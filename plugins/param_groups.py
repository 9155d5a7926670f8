"""Deprecated import path of the first release: the module is now ``plugins.tricks.no_bias_decay``.

Importing ``plugins.param_groups`` still works for one release: it warns (DeprecationWarning) and is the new module itself.
"""

import importlib
import sys
import warnings

warnings.warn("plugins.param_groups is deprecated and goes in the next release; import plugins.tricks.no_bias_decay", DeprecationWarning, stacklevel=2)
sys.modules[__name__] = importlib.import_module("plugins.tricks.no_bias_decay")
