"""Saving an adapter (and the task head) to a folder, and loading it onto a base model again."""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from .adapting import adapter_layers, apply, remove
from .base import ModelTuner
from .files import write_atomically
from .registry import lookup
from .targets import HEAD_NAMES, head_prefixes

CONFIG_FILE = "adapter.json"
WEIGHTS_FILE = "adapter.safetensors"
FORMAT_VERSION = 1


def fingerprint(model: nn.Module) -> dict:
    """What identifies the base model an adapter was trained on (the embeddings, unless the variant
    trains them too)."""
    fingerprint = {"model_class": type(model).__name__}
    get_embeddings = getattr(model, "get_input_embeddings", None)
    embeddings = get_embeddings() if get_embeddings else None
    config = getattr(model, "variant_config", None)  # None after variants.remove
    trains_everything = bool(config) and lookup(config["variant"]).saves_all_trainable
    if embeddings is not None and not trains_everything:
        weight = embeddings.weight.detach().double()
        fingerprint["embedding_shape"] = list(weight.shape)
        fingerprint["embedding_checksum"] = [float(weight.sum()), float(weight.abs().sum())]
    return fingerprint


def adapter_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The tensors ``save`` writes: each adapter's own state plus the head (or, for a variant that
    ``saves_all_trainable``, all that is trainable)."""
    config = model.variant_config
    save_all = lookup(config["variant"]).saves_all_trainable
    state = {}
    for layer_name, layer in adapter_layers(model).items():
        state.update({f"{layer_name}.{k}": v for k, v in layer.adapter_state().items()})
    heads = head_prefixes(model, config["head_modules"])
    adapter_names = set(state)
    for name, parameter in model.named_parameters():
        in_head = any(name.startswith(h + ".") for h in heads)
        if name not in adapter_names and (in_head or (save_all and parameter.requires_grad)):
            state[name] = parameter
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in state.items()}


def save(model: nn.Module, folder) -> Path:
    """Write the adapter and the head (safetensors) and a small JSON config to ``folder`` (a
    ``ModelTuner`` writes its own library's format instead, e.g. PEFT's)."""
    config = getattr(model, "variant_config", None)
    if config is None:
        raise ValueError("model has no adapter to save: call variants.apply first")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cls = lookup(config["variant"])
    if issubclass(cls, ModelTuner):  # it writes its own library's format
        cls.save_adapter(model, folder, head_prefixes(model, config["head_modules"]))
        return folder
    document = {"format_version": FORMAT_VERSION, **config, "base_model": fingerprint(model)}
    write_atomically(folder / WEIGHTS_FILE, lambda p: save_file(adapter_state_dict(model), p))
    write_atomically(folder / CONFIG_FILE, json.dumps(document, indent=2))
    return folder


def read_adapter_folder(folder, config_name, weights_name, required_keys, kind) -> tuple[dict, dict]:
    """Read a JSON config and a safetensors file, with a clear error for a missing, truncated or corrupt one."""
    folder = Path(folder)
    config_path, weights_path = folder / config_name, folder / weights_name
    for path in (config_path, weights_path):
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: {folder} is not {kind}")
    try:
        config = json.loads(config_path.read_text())
        for key in required_keys:
            config[key]
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{config_path} is corrupt: {error}") from None
    try:
        state = load_file(weights_path)
    except (SafetensorError, OSError, ValueError) as error:
        raise ValueError(f"{weights_path} is truncated or corrupt: {error}") from None
    return config, state


def read_saved(folder) -> tuple[dict, dict[str, torch.Tensor]]:
    """Read a folder written by ``save``."""
    return read_adapter_folder(folder, CONFIG_FILE, WEIGHTS_FILE, ("variant", "rank"),
                               "a folder written by variants.save")


def check_base(model: nn.Module, config: dict, source) -> None:
    """Refuse an adapter saved for another base model (class, or embeddings)."""
    expected, actual = config.get("base_model", {}), fingerprint(model)
    if expected.get("model_class") not in (None, actual["model_class"]):
        raise ValueError(f"{source} was made for a {expected['model_class']}, not a {actual['model_class']}")
    if "embedding_checksum" in expected and "embedding_checksum" in actual:
        same_shape = expected["embedding_shape"] == actual["embedding_shape"]
        close = all(math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-6)
                    for a, b in zip(expected["embedding_checksum"], actual["embedding_checksum"]))
        if not (same_shape and close):
            raise ValueError(f"{source} was made for another base model: its embeddings differ from this "
                             "model's (shape or weights)")


def check_fits(target, tensor, key, source) -> None:
    """A clear error when a saved tensor has no place, or another shape, in this model."""
    if not torch.is_tensor(target):
        raise ValueError(f"{source}: {key} is not a tensor of this model's adapter")
    if target.shape != tensor.shape:
        raise ValueError(f"{source}: {key} has shape {tuple(tensor.shape)}, this model needs {tuple(target.shape)}")


def load_state(model: nn.Module, state: dict[str, torch.Tensor], source) -> None:
    """Copy a saved state into an adapted model, after checking that all of it fits."""
    own = dict(model.named_parameters())
    layers = adapter_layers(model)
    expected = set(adapter_state_dict(model))
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise ValueError(f"{source} does not fit this model: missing {missing[:5]}, unexpected {unexpected[:5]}")
    per_layer, rest = {}, {}
    for key, tensor in state.items():  # check everything before changing anything
        layer_name, _, attr = key.rpartition(".")
        if layer_name in layers:
            check_fits(getattr(layers[layer_name], attr, None), tensor, key, source)
            per_layer.setdefault(layer_name, {})[attr] = tensor
        else:
            check_fits(own[key], tensor, key, source)
            rest[key] = tensor
    with torch.no_grad():
        for layer_name, tensors in per_layer.items():
            layers[layer_name].load_adapter_state(tensors)
        for key, tensor in rest.items():
            own[key].copy_(tensor)


def install(model: nn.Module, config: dict, state: dict, source) -> nn.Module:
    """Adapt ``model`` as ``config`` says and load ``state`` into it (the base model is left clean on error)."""
    if getattr(model, "variant_config", None) is not None:
        remove(model)
    apply(model, config["variant"], rank=config["rank"], alpha=config["alpha"],
          target_modules=config["target_modules"], dropout=config.get("dropout", 0.0),
          head_modules=tuple(config.get("head_modules", HEAD_NAMES)), base_dtype=config.get("base_dtype"),
          **config.get("options", {}))
    try:
        load_state(model, state, source)
    except BaseException:
        remove(model)  # leave the base model, not a half-loaded adapter
        raise
    return model


def load(model: nn.Module, folder) -> nn.Module:
    """Load a saved adapter into ``model`` (a base model, or one adapted before: its adapter is taken
    out first, so several adapters can be used in turn on one base model)."""
    config, state = read_saved(folder)
    check_base(model, config, folder)
    return install(model, config, state, folder)
