"""Registration in MMEngine's root registries that never overwrites a name someone else registered."""

from __future__ import annotations

from mmengine.registry import Registry


def register(registry: Registry, cls: type) -> None:
    """Register ``cls`` in ``registry`` under its class name.

    MMDetection, MMSegmentation and MMPretrain registries are children of MMEngine's root registries and look
    names up through them, so one registration here serves all of them.

    A name that is already taken is never overwritten (no ``force=True``): if the existing entry is this
    very class (same module and qualified name, e.g. after ``importlib.reload``) it is kept, otherwise a
    ``KeyError`` names the registry, the key and both owners.
    """
    name = cls.__name__
    existing = registry.module_dict.get(name)
    if existing is None:
        registry.register_module(name=name, module=cls)
        return
    same = (existing.__module__, existing.__qualname__) == (cls.__module__, cls.__qualname__)
    if not same:
        raise KeyError(
            f"{name!r} is already registered in MMEngine's {registry.name} registry by "
            f"{existing.__module__}.{existing.__qualname__}; mm_ext does not overwrite it "
            f"({cls.__module__}.{cls.__qualname__} left unregistered)"
        )
