"""Adapters in PEFT's own folder format, both ways, without needing the ``peft`` package.

``export_peft(model, folder)`` writes ``adapter_config.json`` and ``adapter_model.safetensors`` so that
``peft.PeftModel.from_pretrained(base_model, folder)`` loads our LoRA, rsLoRA, DoRA or VeRA adapter and
gives the same outputs; ``import_peft(model, folder)`` reads such a folder (written by PEFT or by us)
into our adapters. PEFT's names for the tensors (``<path>`` a module name inside the model):

  * LoRA, rsLoRA, DoRA: ``base_model.model.<path>.lora_A.weight`` (r x in), ``....lora_B.weight``
    (out x r), with the update ``scaling * B A``, ``scaling = lora_alpha / r`` (``/ sqrt(r)`` when
    ``use_rslora``); DoRA adds ``....lora_magnitude_vector`` (out);
  * VeRA: ``....vera_lambda_b`` (out) and ``....vera_lambda_d`` (r), and the shared pair saved once as
    ``base_model.vera_A`` / ``base_model.vera_B`` (``save_projection=True``);
  * the task head (``modules_to_save``): ``base_model.model.<head path>.<parameter>``.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from .base import is_transposed
from .model import _write_atomically, adapter_layers, apply, check_fits, read_adapter_folder, remove
from .registry import lookup
from .targets import HEAD_NAMES, head_prefixes

PEFT_CONFIG_FILE = "adapter_config.json"
PEFT_WEIGHTS_FILE = "adapter_model.safetensors"
PREFIX = "base_model.model."
PROJECTION_KEYS = {"base_model.vera_A": "A", "base_model.vera_B": "B"}
SUPPORTED = ("lora", "rslora", "dora", "vera")
#: PEFT's name of each adapter tensor (the key's ending) -> our attribute name
LORA_KEYS = {".lora_A.weight": "lora_A", ".lora_B.weight": "lora_B", ".lora_magnitude_vector": "magnitude"}
VERA_KEYS = {".vera_lambda_b": "lambda_b", ".vera_lambda_d": "lambda_d"}
TASK_TYPES = {"ForSequenceClassification": "SEQ_CLS", "ForCausalLM": "CAUSAL_LM",
              "ForTokenClassification": "TOKEN_CLS", "ForQuestionAnswering": "QUESTION_ANS"}


def task_type(model: nn.Module) -> str | None:
    """PEFT's task type for a transformers model class (None: a plain ``PeftModel``)."""
    class_name = type(model).__name__
    return next((t for suffix, t in TASK_TYPES.items() if class_name.endswith(suffix)), None)


@torch.no_grad()
def _low_rank_factors(layer) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(A, B, scale) with ``scale * B @ A`` the layer's whole change of the original base weight."""
    a, b, scale = layer.lora_A, layer.lora_B, float(layer.scale_value())
    if hasattr(layer, "lora_A_init"):
        # init="random": our base weight also carries -s0 * B0 A0, which PEFT's base model does not;
        # a rank-2r pair [B, -B0] [A; A0] expresses both parts
        a = torch.cat([a, layer.lora_A_init], 0)
        b = torch.cat([b * scale, -layer.init_scale * layer.lora_B_init], 1)
        scale = 1.0
    return a.detach(), b.detach(), scale


def export_peft(model: nn.Module, folder) -> Path:
    """Write ``model``'s adapter and task head to ``folder`` in PEFT's format."""
    config = getattr(model, "variant_config", None)
    if config is None:
        raise ValueError("model has no adapter to export: call variants.apply first")
    variant = config["variant"]
    if variant not in SUPPORTED:
        raise ValueError(f"export_peft cannot write a {variant!r} adapter in PEFT's format; "
                         f"supported variants: {', '.join(SUPPORTED)}")
    layers = adapter_layers(model)
    heads = head_prefixes(model, config["head_modules"])
    peft_config = {"task_type": task_type(model), "target_modules": sorted(layers),
                   "modules_to_save": heads or None, "bias": "none",
                   "fan_in_fan_out": any(is_transposed(layer.base_layer) for layer in layers.values()),
                   "base_model_name_or_path": getattr(getattr(model, "config", None), "name_or_path", None) or None,
                   "inference_mode": True}
    state = {}
    if variant == "vera":
        options = {**lookup(variant).options, **config["options"]}
        peft_config.update(peft_type="VERA", r=config["rank"], vera_dropout=config["dropout"],
                           d_initial=options["d_initial"], projection_prng_key=options["projection_seed"],
                           save_projection=True, init_weights=True)
        for name, layer in layers.items():
            state[f"{PREFIX}{name}.vera_lambda_b"] = layer.lambda_b
            state[f"{PREFIX}{name}.vera_lambda_d"] = layer.lambda_d
        state["base_model.vera_A"] = model.vera_projection.A
        state["base_model.vera_B"] = model.vera_projection.B
    else:
        cls = lookup(variant)
        rank = config["rank"] * (2 if config["options"].get("init") == "random" else 1)
        scale = cls.scaling(config["alpha"], rank)
        peft_config.update(peft_type="LORA", r=rank, lora_alpha=config["alpha"], lora_dropout=config["dropout"],
                           use_rslora=variant == "rslora", use_dora=variant == "dora", init_lora_weights=True)
        for name, layer in layers.items():
            a, b, layer_scale = _low_rank_factors(layer)
            state[f"{PREFIX}{name}.lora_A.weight"] = a
            # PEFT has one scaling for all layers: a trained alpha (or the rank-2r form) goes into B
            state[f"{PREFIX}{name}.lora_B.weight"] = b if layer_scale == scale else b * (layer_scale / scale)
            if variant == "dora":
                state[f"{PREFIX}{name}.lora_magnitude_vector"] = layer.magnitude
    for name, parameter in model.named_parameters():
        if any(name.startswith(h + ".") for h in heads):
            state[PREFIX + name] = parameter
    state = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    _write_atomically(folder / PEFT_WEIGHTS_FILE, lambda p: save_file(state, p, metadata={"format": "pt"}))
    _write_atomically(folder / PEFT_CONFIG_FILE, lambda p: Path(p).write_text(json.dumps(peft_config, indent=2)))
    return folder


def _variant_settings(peft_config: dict, source) -> tuple[str, dict, dict]:
    """Our variant name, apply() keywords and options for a PEFT adapter config."""
    peft_type = peft_config.get("peft_type")
    if peft_type == "LORA":
        unsupported = {key: peft_config.get(key) for key in ("rank_pattern", "alpha_pattern", "lora_bias")
                       if peft_config.get(key)}
        if peft_config.get("bias", "none") != "none":
            unsupported["bias"] = peft_config["bias"]
        if peft_config.get("use_dora") and peft_config.get("use_rslora"):
            unsupported["use_dora + use_rslora"] = True
        if unsupported:
            raise ValueError(f"{source}: PEFT LoRA settings {unsupported} have no equivalent here")
        name = "dora" if peft_config.get("use_dora") else "rslora" if peft_config.get("use_rslora") else "lora"
        settings = {"rank": peft_config["r"], "alpha": peft_config["lora_alpha"],
                    "dropout": peft_config.get("lora_dropout", 0.0)}
        return name, settings, {}
    if peft_type == "VERA":
        settings = {"rank": peft_config["r"], "alpha": None, "dropout": peft_config.get("vera_dropout", 0.0)}
        options = {"d_initial": peft_config.get("d_initial", 0.1),
                   "projection_seed": peft_config.get("projection_prng_key", 0)}
        return "vera", settings, options
    raise ValueError(f"{source}: PEFT type {peft_type!r} is not supported; supported: LORA (lora, rslora, dora), "
                     "VERA (vera)")


def read_peft(folder) -> tuple[dict, dict[str, torch.Tensor]]:
    """Read a PEFT adapter folder (safetensors format)."""
    return read_adapter_folder(folder, PEFT_CONFIG_FILE, PEFT_WEIGHTS_FILE, ("peft_type",),
                               "a PEFT adapter folder (only the safetensors format is read)")


def import_peft(model: nn.Module, folder) -> nn.Module:
    """Load a PEFT LoRA/rsLoRA/DoRA/VeRA adapter folder into ``model`` as our adapter (taking out any
    adapter the model has first)."""
    peft_config, state = read_peft(folder)
    name, settings, options = _variant_settings(peft_config, folder)
    tensor_names = VERA_KEYS if name == "vera" else LORA_KEYS
    per_layer, head, projection = {}, {}, {}
    for key, tensor in state.items():
        if key in PROJECTION_KEYS:
            projection[PROJECTION_KEYS[key]] = tensor
            continue
        if not key.startswith(PREFIX):
            raise ValueError(f"{folder}: unexpected tensor {key!r} (PEFT keys start with {PREFIX!r})")
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
        for attr, tensor in projection.items():
            ours = getattr(model.vera_projection, attr)
            if ours.shape != tensor.shape or not torch.equal(ours, tensor.to(ours)):
                raise ValueError(f"{folder}: the saved VeRA projection {attr} differs from the one made from "
                                 f"projection_prng_key={options['projection_seed']} for these target layers")
    except BaseException:
        remove(model)
        raise
    with torch.no_grad():
        for target, tensor, _ in targets:
            target.copy_(tensor)
    return model
