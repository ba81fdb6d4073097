"""LoRA-family adapters behind one small interface.

    import variants
    variants.apply(model, "dora", rank=8, alpha=16, target_modules=["query", "value"])
    ...train...
    variants.save(model, "adapter/")
    variants.export_peft(model, "peft-adapter/")  # PEFT's format: peft.PeftModel.from_pretrained reads it

Every module in this package that defines a subclass of ``Adapter`` or ``Baseline`` with a ``name`` is
registered when the package is imported, so a new variant is one new file here.
"""

from .base import Adapter, Baseline, LowRankAdapter
from .model import (adapter_layers, apply, combine, load, merge, remove, save, trainable_parameters,
                    unmerge)
from .peft_format import export_peft, import_peft
from .registry import available, lookup

__all__ = ["Adapter", "Baseline", "LowRankAdapter", "adapter_layers", "apply", "available", "combine",
           "export_peft", "import_peft", "load", "lookup", "merge", "remove", "save",
           "trainable_parameters", "unmerge"]
