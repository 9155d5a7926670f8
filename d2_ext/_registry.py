"""Registration in Detectron2's registries that never overwrites a name someone else registered."""

from __future__ import annotations

from collections.abc import Callable

from fvcore.common.registry import Registry


def register(registry: Registry) -> Callable:
    """Decorator: register the object in ``registry`` under its ``__name__``.

    Like ``registry.register()``, but re-registering the very same object (same module and qualified name,
    e.g. after ``importlib.reload``) keeps the entry, and a name taken by anything else raises ``KeyError``
    naming both owners instead of Detectron2's bare assertion. Nothing is ever overwritten.
    """

    def decorator(obj):
        name = obj.__name__
        if name not in registry:
            registry.register(obj)
            return obj
        existing = registry.get(name)
        if (existing.__module__, existing.__qualname__) != (obj.__module__, obj.__qualname__):
            raise KeyError(
                f"{name!r} is already registered in Detectron2's {registry._name} registry by "
                f"{existing.__module__}.{existing.__qualname__}; d2_ext does not overwrite it"
            )
        return obj

    return decorator
