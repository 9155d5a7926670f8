"""Deprecated import path of the first release: the module is now ``plugins.runtime.random_state``.

Importing ``plugins.random_state`` still works for one release: it warns (DeprecationWarning) and is the new module itself.
"""

import importlib
import sys
import warnings

warnings.warn("plugins.random_state is deprecated and goes in the next release; import plugins.runtime.random_state", DeprecationWarning, stacklevel=2)
sys.modules[__name__] = importlib.import_module("plugins.runtime.random_state")
