"""LoRA-family adapters behind one small interface.

    import variants
    variants.apply(model, "dora", rank=8, alpha=16, target_modules=["query", "value"])
    ...train...
    variants.save(model, "adapter/")
    variants.export_peft(model, "peft-adapter/")  # PEFT's format: peft.PeftModel.from_pretrained reads it
    variants.peft_config("dora", rank=8, alpha=16, target_modules=["query", "value"])  # PEFT's own config

Every module in this package that defines a subclass of ``Variant`` (an ``Adapter`` or a ``Baseline``)
with a ``name`` is registered when the package is imported, so a new variant is one new file here. The
modules: ``base`` (the interface), ``registry`` (finding variants), ``targets`` (which layers),
``adapting`` (apply/merge/remove), ``saving`` (save/load), ``combining`` (combine), ``peft_counterpart``
(what a variant declares about PEFT), ``peft_format`` (PEFT's format and configs), ``nf4`` (4-bit
storage), ``files`` (atomic writes, torch-free); one file per variant (``lora``, ``rslora``, ``dora``,
``vera``, ``qlora``, ``hira``, ``baselines``).
"""

from .adapting import (adapter_layers, after_optimizer_step, apply, before_training, check_settings, merge,
                       own_optimizer, remove, trainable_parameters, unmerge)
from .base import Adapter, Baseline, ModelTuner, Variant
from .combining import combine
from .lora import LoRA
from .peft_format import export_peft, import_peft, peft_base_quantization, peft_config
from .registry import available, lookup
from .saving import load, save

__all__ = ["Adapter", "Baseline", "LoRA", "ModelTuner", "Variant", "adapter_layers", "after_optimizer_step", "apply",
           "before_training", "available", "check_settings",
           "combine", "export_peft", "import_peft", "load", "lookup", "merge", "own_optimizer", "peft_base_quantization",
           "peft_config", "remove", "save", "trainable_parameters", "unmerge"]
