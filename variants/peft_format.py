"""Adapters in PEFT's own folder format, both ways, without needing the ``peft`` package, and the
PEFT config equivalent to one of our variants.

``export_peft(model, folder)`` writes ``adapter_config.json`` and ``adapter_model.safetensors`` so that
``peft.PeftModel.from_pretrained(base_model, folder)`` loads our adapter and gives the same outputs;
``import_peft(model, folder)`` reads such a folder (written by PEFT or by us) into our adapters.
``peft_config(name, ...)`` builds the matching ``peft`` config object (it imports ``peft``).

Nothing here knows a variant by name: each variant class declares its PEFT counterpart as one object,
``cls.peft`` (``variants/peft_counterpart.py``: its config both ways, its tensors' names in PEFT's
files, any model-level tensors, how PEFT stores the base). PEFT's keys are
``base_model.model.<module path><ending>``; the task head (``modules_to_save``) is saved as
``base_model.model.<head path>.<parameter>``.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from .adapting import adapter_layers, apply, check_settings, remove
from .base import is_transposed
from .files import write_atomically
from .registry import available, lookup
from .saving import check_fits, read_adapter_folder
from .targets import HEAD_NAMES, head_prefixes

PEFT_CONFIG_FILE = "adapter_config.json"
PEFT_WEIGHTS_FILE = "adapter_model.safetensors"
PREFIX = "base_model.model."
TASK_TYPES = {"ForSequenceClassification": "SEQ_CLS", "ForCausalLM": "CAUSAL_LM",
              "ForTokenClassification": "TOKEN_CLS", "ForQuestionAnswering": "QUESTION_ANS"}


def task_type(model: nn.Module) -> str | None:
    """PEFT's task type for a transformers model class (None: a plain ``PeftModel``)."""
    class_name = type(model).__name__
    return next((t for suffix, t in TASK_TYPES.items() if class_name.endswith(suffix)), None)


def _with_defaults(cls, options: dict) -> dict:
    return {**cls.options, **options}


def peft_variants() -> list[str]:
    """The variants PEFT has an equivalent of (on a plain base model, or a quantized one)."""
    return [n for n in available() if lookup(n).peft is not None
            and lookup(n).peft.config(lookup(n), rank=1, alpha=1.0, dropout=0.0, options=lookup(n).options)]


def exportable_variants() -> list[str]:
    """The variants ``export_peft`` writes exactly: PEFT has them on a plain base model."""
    return [n for n in peft_variants() if lookup(n).peft.base_quantization(lookup(n).options) is None
            and lookup(n).peft.export_config(lookup(n), rank=1, alpha=1.0, dropout=0.0, options=lookup(n).options)]


def peft_settings(name: str, *, rank: int, alpha: float | None, dropout: float = 0.0, **options) -> dict:
    """PEFT's config for variant ``name`` as a plain dict (with ``peft_type``); ValueError if PEFT has none."""
    cls, alpha = check_settings(name, rank, alpha, dropout, options)
    settings = None if cls.peft is None else cls.peft.config(cls, rank=rank, alpha=alpha, dropout=float(dropout),
                                                             options=_with_defaults(cls, options))
    if settings is None:
        raise ValueError(f"PEFT has no equivalent of variant {name!r}; variants PEFT has: "
                         f"{', '.join(peft_variants())}")
    return settings


def peft_config(name: str, *, rank: int, alpha: float | None, target_modules, dropout: float = 0.0,
                task_type: str | None = None, **options):
    """The ``peft`` config object equivalent to ``variants.apply(model, name, rank=..., ...)``.

    A variant whose PEFT counterpart needs a quantized base (QLoRA: LoRA on a bitsandbytes NF4 base)
    gets the adapter's config here; ``variants.peft_base_quantization(name, **options)`` gives the
    ``transformers.BitsAndBytesConfig`` keywords for loading the base model."""
    import peft

    settings = peft_settings(name, rank=rank, alpha=alpha, dropout=dropout, **options)
    targets = target_modules if isinstance(target_modules, str) else list(target_modules)
    return peft.get_peft_config({**settings, "target_modules": targets, "task_type": task_type})


def peft_base_quantization(name: str, **options) -> dict | None:
    """How PEFT's counterpart of variant ``name`` stores the frozen base: ``transformers.BitsAndBytesConfig``
    keywords (QLoRA), or None for a plain full-precision base (or no counterpart)."""
    cls = lookup(name)
    return None if cls.peft is None else cls.peft.base_quantization(_with_defaults(cls, options))


def export_peft(model: nn.Module, folder) -> Path:
    """Write ``model``'s adapter and task head to ``folder`` in PEFT's format."""
    config = getattr(model, "variant_config", None)
    if config is None:
        raise ValueError("model has no adapter to export: call variants.apply first")
    variant = config["variant"]
    cls = lookup(variant)
    if variant not in exportable_variants():
        raise ValueError(f"export_peft cannot write a {variant!r} adapter in PEFT's format; "
                         f"supported variants: {', '.join(exportable_variants())}")
    layers = adapter_layers(model)
    heads = head_prefixes(model, config["head_modules"])
    peft_config = {"task_type": task_type(model), "target_modules": sorted(layers),
                   "modules_to_save": heads or None,
                   "fan_in_fan_out": any(is_transposed(layer.base_layer) for layer in layers.values()),
                   "base_model_name_or_path": getattr(getattr(model, "config", None), "name_or_path", None) or None,
                   "inference_mode": True,
                   **cls.peft.export_config(cls, rank=config["rank"], alpha=config["alpha"],
                                            dropout=config["dropout"], options=_with_defaults(cls, config["options"]))}
    state = dict(cls.peft.model_tensors(model))
    for name, layer in layers.items():
        state.update({f"{PREFIX}{name}{ending}": tensor for ending, tensor in cls.peft.layer_tensors(layer).items()})
    for name, parameter in model.named_parameters():
        if any(name.startswith(h + ".") for h in heads):
            state[PREFIX + name] = parameter
    state = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_atomically(folder / PEFT_WEIGHTS_FILE, lambda p: save_file(state, p, metadata={"format": "pt"}))
    write_atomically(folder / PEFT_CONFIG_FILE, json.dumps(peft_config, indent=2))
    return folder


def variant_for(peft_config: dict, source) -> tuple[str, dict, dict]:
    """Our variant name, apply() keywords and options for a PEFT adapter config."""
    found = []
    for name in peft_variants():
        try:
            match = lookup(name).peft.read_config(lookup(name), peft_config)
        except ValueError as error:
            raise ValueError(f"{source}: {error}") from None
        if match is not None:
            found.append((name, *match))
    if len(found) != 1:
        kinds = sorted({lookup(n).peft.export_config(lookup(n), rank=1, alpha=1.0, dropout=0.0,
                                                     options=lookup(n).options)["peft_type"]
                        for n in exportable_variants()})
        why = "matches several variants" if found else "is not supported"
        raise ValueError(f"{source}: PEFT type {peft_config.get('peft_type')!r} {why}; supported: "
                         f"{', '.join(kinds)} ({', '.join(exportable_variants())})")
    return found[0]


def read_peft(folder) -> tuple[dict, dict[str, torch.Tensor]]:
    """Read a PEFT adapter folder (safetensors format)."""
    return read_adapter_folder(folder, PEFT_CONFIG_FILE, PEFT_WEIGHTS_FILE, ("peft_type",),
                               "a PEFT adapter folder (only the safetensors format is read)")


def import_peft(model: nn.Module, folder) -> nn.Module:
    """Load a PEFT adapter folder of a variant we have into ``model`` as our adapter (taking out any
    adapter the model has first)."""
    peft_config, state = read_peft(folder)
    name, settings, options = variant_for(peft_config, folder)
    cls = lookup(name)
    tensor_names = cls.peft.tensors
    per_layer, head, shared = {}, {}, {}
    for key, tensor in state.items():
        if not key.startswith(PREFIX):
            shared[key] = tensor
            continue
        path = key[len(PREFIX):]
        ending = next((e for e in tensor_names if path.endswith(e)), None)
        if ending:
            per_layer.setdefault(path[: -len(ending)], {})[tensor_names[ending]] = tensor
        else:
            head[path] = tensor
    if not per_layer:
        raise ValueError(f"{folder} holds no {name} adapter tensors (expected keys ending in "
                         f"{', '.join(tensor_names)})")
    own = dict(model.named_parameters())
    unknown = sorted(set(head) - set(own))
    if unknown:
        raise ValueError(f"{folder} does not fit this model: no parameter {unknown[:5]} here")
    head_names = tuple(HEAD_NAMES) + tuple(m.rpartition(".")[2] for m in peft_config.get("modules_to_save") or ())
    if getattr(model, "variant_config", None) is not None:
        remove(model)
    apply(model, name, target_modules=sorted(per_layer), head_modules=head_names, **settings, **options)
    try:
        targets = []  # (our tensor, the saved one, its name): all checked before any is copied
        layers = adapter_layers(model)
        for layer_name, tensors in per_layer.items():
            layer = layers[layer_name]
            expected = {attr for attr in tensor_names.values() if hasattr(layer, attr)}
            if set(tensors) != expected:
                raise ValueError(f"{folder}: {layer_name} has {sorted(tensors)}, a {name} layer needs {sorted(expected)}")
            targets += [(getattr(layer, attr), t, f"{layer_name}.{attr}") for attr, t in tensors.items()]
        targets += [(own[path], tensor, path) for path, tensor in head.items()]
        for target, tensor, key in targets:
            check_fits(target, tensor, key, folder)
        cls.peft.check_model_tensors(model, shared, folder)
    except BaseException:
        remove(model)
        raise
    with torch.no_grad():
        for target, tensor, _ in targets:
            target.copy_(tensor)
    return model
