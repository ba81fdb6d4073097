"""LoRA-family adapters behind one small interface.

    import variants
    variants.apply(model, "dora", rank=8, alpha=16, target_modules=["query", "value"])
    ...train...
    variants.save(model, "adapter/")
    variants.export_peft(model, "peft-adapter/")  # PEFT's format: peft.PeftModel.from_pretrained reads it
    variants.peft_config("dora", rank=8, alpha=16, target_modules=["query", "value"])  # PEFT's own config

Every module in this package that defines a subclass of ``Adapter`` or ``Baseline`` with a ``name`` is
registered when the package is imported, so a new variant is one new file here. The modules:
``base`` (the interface), ``registry`` (finding variants), ``targets`` (which layers), ``adapting``
(apply/merge/remove), ``saving`` (save/load), ``combining`` (combine), ``peft_format`` (PEFT's format
and configs), ``files`` (atomic writes, torch-free).
"""

from .adapting import (adapter_layers, apply, check_settings, merge, remove, trainable_parameters,
                       unmerge)
from .base import Adapter, Baseline, LowRankAdapter
from .combining import combine
from .peft_format import export_peft, import_peft, peft_config
from .registry import available, lookup
from .saving import load, save

__all__ = ["Adapter", "Baseline", "LowRankAdapter", "adapter_layers", "apply", "available", "check_settings",
           "combine", "export_peft", "import_peft", "load", "lookup", "merge", "peft_config", "remove", "save",
           "trainable_parameters", "unmerge"]
