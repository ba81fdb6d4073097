"""How a variant is expressed in PEFT: the one object a variant class declares as ``peft``.

``variants/peft_format.py`` (export, import, ``peft_config``) and the benchmarks read a variant's PEFT
side only through this object; each variant file builds its own (LoRA's in ``lora.py``, VeRA's in
``vera.py``, ...). Every method gets the variant class, so one counterpart serves a family of
variants (LoRA's serves rsLoRA, DoRA and QLoRA with other flags).
"""
from __future__ import annotations

from typing import Any


class PeftCounterpart:
    """PEFT's config both ways, its tensor names, and how it stores the frozen base.

    ``tensors``: PEFT's tensor-name ending in its safetensors file (e.g. ``.lora_A.weight``) -> the
    attribute of our adapter layer that holds the same tensor."""

    tensors: dict[str, str] = {}

    def config(self, variant: type, *, rank: int, alpha: float, dropout: float, options: dict) -> dict | None:
        """PEFT's adapter config (a dict with ``peft_type``) that starts and trains as ``variant`` does
        with these settings (options all filled in), or None where PEFT has no equivalent of them."""
        raise NotImplementedError

    def export_config(self, variant: type, *, rank: int, alpha: float, dropout: float, options: dict) -> dict | None:
        """The config under which ``layer_tensors`` of a trained adapter give PEFT's model our outputs."""
        return self.config(variant, rank=rank, alpha=alpha, dropout=dropout, options=options)

    def read_config(self, variant: type, peft_config: dict) -> tuple[dict, dict] | None:
        """``(apply settings, options)`` when a PEFT adapter config is this variant, else None; raises
        ValueError naming PEFT settings that have no equivalent here."""
        return None

    def base_quantization(self, options: dict) -> dict | None:
        """How PEFT's side stores the frozen base (``transformers.BitsAndBytesConfig`` keywords); None: a
        plain full-precision base."""
        return None

    def layer_tensors(self, layer) -> dict[str, Any]:
        """One adapted layer's tensors under PEFT's name endings, giving PEFT's model the same output."""
        return {ending: getattr(layer, attr) for ending, attr in self.tensors.items()}

    def model_tensors(self, model) -> dict[str, Any]:
        """Model-level tensors PEFT saves once (full key -> tensor); default none."""
        return {}

    def check_model_tensors(self, model, tensors: dict, source) -> None:
        """Check, on import, that PEFT's model-level tensors equal ours; default: there must be none."""
        if tensors:
            raise ValueError(f"{source}: unexpected tensors {sorted(tensors)[:5]}")
