"""Finds every variant defined in this package, by its ``name``."""
import importlib
import pkgutil

from .base import Variant

_registry: dict[str, type] = {}


def _subclasses(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


def _discover() -> dict[str, type]:
    if not _registry:
        package = __name__.rpartition(".")[0]
        for info in pkgutil.iter_modules(importlib.import_module(package).__path__):
            if not info.name.startswith("_"):
                importlib.import_module(f"{package}.{info.name}")
        for cls in _subclasses(Variant):
            if "name" in vars(cls) and cls.name:
                _registry[cls.name] = cls
    return _registry


def available() -> list[str]:
    """The names ``variants.apply`` accepts: adapter variants, then the baselines."""
    registry = _discover()
    adapters = sorted(n for n, c in registry.items() if not c.is_baseline)
    return adapters + sorted(n for n, c in registry.items() if c.is_baseline)


def lookup(name: str) -> type:
    registry = _discover()
    if name not in registry:
        raise ValueError(f"unknown variant {name!r}; available: {', '.join(available())}")
    return registry[name]
