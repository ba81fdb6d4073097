"""LoRA-family adapters behind one small interface.

    import variants
    variants.apply(model, "dora", rank=8, alpha=16, target_modules=["query", "value"])
    ...train...
    variants.save(model, "adapter/")

Every module in this package that defines a subclass of ``Adapter`` or ``Baseline`` with a ``name`` is
registered when the package is imported, so a new variant is one new file here.
"""

from .base import Adapter, Baseline, LowRankAdapter
from .model import (adapter_layers, apply, combine, load, merge, remove, save, trainable_parameters,
                    unmerge)
from .registry import available, lookup

__all__ = ["Adapter", "Baseline", "LowRankAdapter", "adapter_layers", "apply", "available", "combine",
           "load", "lookup", "merge", "remove", "save",
           "trainable_parameters", "unmerge"]
