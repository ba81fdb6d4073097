"""Model-level operations: adapt, merge, count, save, load and combine adapters."""
from __future__ import annotations

import json
import math
import os
import tempfile
import warnings
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from .base import Adapter, Baseline, layer_shape
from .registry import lookup
from .targets import HEAD_NAMES, head_prefixes, match_targets, set_module

CONFIG_FILE = "adapter.json"
WEIGHTS_FILE = "adapter.safetensors"
FORMAT_VERSION = 1


def check_settings(name: str, rank, alpha, dropout, options: dict) -> tuple[type, float]:
    """Validate everything that needs no model; returns the variant class and the resolved alpha."""
    cls = lookup(name)
    unknown = sorted(set(options) - set(getattr(cls, "options", {})))
    if unknown:
        valid = ", ".join(f"{k} (default {v!r})" for k, v in getattr(cls, "options", {}).items()) or "none"
        raise ValueError(f"unknown option(s) {', '.join(unknown)} for variant {name!r}; valid options: {valid}")
    if issubclass(cls, Baseline):
        return cls, alpha
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ValueError(f"rank must be an integer >= 1, got {rank!r}")
    alpha = float(rank if alpha is None else alpha)
    if not math.isfinite(alpha) or alpha <= 0:
        raise ValueError(f"alpha must be a number > 0, got {alpha!r}")
    if not 0 <= float(dropout) < 1:
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
    if hasattr(cls, "check_options"):
        cls.check_options({**cls.options, **options})
    return cls, alpha


def apply(model: nn.Module, name: str, *, rank: int = 8, alpha: float | None = None,
          target_modules="all-linear", dropout: float = 0.0, head_modules=HEAD_NAMES, **options) -> nn.Module:
    """Adapt ``model`` in place with variant ``name`` and return it.

    Adapters go on the layers that ``target_modules`` names (leaf names, a regex, or "all-linear");
    every other weight is frozen except the task head (``classifier``/``score``). ``alpha`` defaults to
    ``rank``. ``options`` are the variant's own (``variants.lookup(name).options`` lists them).
    """
    cls, alpha = check_settings(name, rank, alpha, dropout, options)
    if getattr(model, "variant_config", None) is not None:
        raise ValueError(f"model is already adapted with {model.variant_config['variant']!r}; "
                         "call variants.remove(model) first, or variants.load() to switch adapters")
    heads = head_prefixes(model, head_modules)
    config = {"variant": name, "rank": rank, "alpha": alpha, "dropout": float(dropout),
              "target_modules": target_modules if isinstance(target_modules, str) else list(target_modules),
              "head_modules": list(head_modules), "options": dict(options)}
    if issubclass(cls, Baseline):
        cls.set_trainable(model, heads)
    else:
        targets = match_targets(model, target_modules, head_modules)
        if cls.rank_bounded_by_layer:
            for layer_name, layer in targets.items():
                smaller = min(layer_shape(layer))
                if rank > smaller:
                    warnings.warn(f"rank {rank} is above the smaller dimension ({smaller}) of {layer_name}: "
                                  f"its update cannot have rank above {smaller}", stacklevel=2)
                    break
        for parameter in model.parameters():
            parameter.requires_grad_(False)
        shared = cls.prepare(model, targets, rank, {**cls.options, **options, "head_modules": tuple(head_modules)})
        for layer_name, layer in targets.items():
            set_module(model, layer_name, cls(layer, rank=rank, alpha=alpha, dropout=dropout, shared=shared,
                                              **options))
        for head in heads:
            model.get_submodule(head).requires_grad_(True)
    model.variant_config = config
    return model


def adapter_layers(model: nn.Module) -> dict[str, Adapter]:
    return {n: m for n, m in model.named_modules() if isinstance(m, Adapter)}


def merge(model: nn.Module) -> nn.Module:
    """Fold every adapter into its base weight (inference then costs what the base model costs)."""
    for layer in adapter_layers(model).values():
        layer.merge()
    return model


def unmerge(model: nn.Module) -> nn.Module:
    for layer in adapter_layers(model).values():
        layer.unmerge()
    return model


def remove(model: nn.Module) -> nn.Module:
    """Take every adapter out again, giving back the base layers (unmerged)."""
    for layer_name, layer in adapter_layers(model).items():
        set_module(model, layer_name, layer.remove())
    if hasattr(model, "vera_projection"):
        del model.vera_projection
    model.variant_config = None
    return model


def trainable_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# -- saving and loading --------------------------------------------------------------------------------

def _fingerprint(model: nn.Module) -> dict:
    """What identifies the base model an adapter was trained on."""
    fingerprint = {"model_class": type(model).__name__}
    get_embeddings = getattr(model, "get_input_embeddings", None)
    embeddings = get_embeddings() if get_embeddings else None
    config = getattr(model, "variant_config", None) or {}  # None after variants.remove
    if embeddings is not None and config.get("variant") != "full":
        weight = embeddings.weight.detach().double()
        fingerprint["embedding_shape"] = list(weight.shape)
        fingerprint["embedding_checksum"] = [float(weight.sum()), float(weight.abs().sum())]
    return fingerprint


def adapter_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The tensors ``save`` writes: each adapter's own state plus the head (or, for a baseline, all that
    is trainable)."""
    config = model.variant_config
    state = {}
    for layer_name, layer in adapter_layers(model).items():
        state.update({f"{layer_name}.{k}": v for k, v in layer.adapter_state().items()})
    heads = head_prefixes(model, config["head_modules"])
    adapter_names = set(state)
    for name, parameter in model.named_parameters():
        in_head = any(name.startswith(h + ".") for h in heads)
        if name not in adapter_names and (in_head or (config["variant"] == "full" and parameter.requires_grad)):
            state[name] = parameter
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in state.items()}


def _write_atomically(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def save(model: nn.Module, folder) -> Path:
    """Write the adapter and the head (safetensors) and a small JSON config to ``folder``."""
    config = getattr(model, "variant_config", None)
    if config is None:
        raise ValueError("model has no adapter to save: call variants.apply first")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    document = {"format_version": FORMAT_VERSION, **config, "base_model": _fingerprint(model)}
    _write_atomically(folder / WEIGHTS_FILE, lambda p: save_file(adapter_state_dict(model), p))
    _write_atomically(folder / CONFIG_FILE, lambda p: Path(p).write_text(json.dumps(document, indent=2)))
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


def _check_base(model: nn.Module, config: dict, source) -> None:
    expected, actual = config.get("base_model", {}), _fingerprint(model)
    if expected.get("model_class") not in (None, actual["model_class"]):
        raise ValueError(f"{source} was made for a {expected['model_class']}, not a {actual['model_class']}")
    if "embedding_checksum" in expected and "embedding_checksum" in actual:
        same_shape = expected["embedding_shape"] == actual["embedding_shape"]
        close = all(math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-6)
                    for a, b in zip(expected["embedding_checksum"], actual["embedding_checksum"]))
        if not (same_shape and close):
            raise ValueError(f"{source} was made for another base model: its embeddings differ from this "
                             "model's (shape or weights)")


def _load_state(model: nn.Module, state: dict[str, torch.Tensor], source) -> None:
    own = dict(model.named_parameters())
    layers = adapter_layers(model)
    expected = set(adapter_state_dict(model))
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise ValueError(f"{source} does not fit this model: missing {missing[:5]}, unexpected {unexpected[:5]}")
    targets = {}
    for key, tensor in state.items():  # check everything before changing anything
        layer_name, _, attr = key.rpartition(".")
        targets[key] = getattr(layers[layer_name], attr) if layer_name in layers else own[key]
        check_fits(targets[key], tensor, key, source)
    offset_layers = [layer for layer in layers.values() if hasattr(layer, "apply_init_offset")]
    with torch.no_grad():
        for layer in offset_layers:  # init="random": take out the offset of the fresh starting factors...
            layer.apply_init_offset(sign=+1)
        for key, tensor in state.items():
            targets[key].copy_(tensor)
        for layer in offset_layers:  # ...and put in the offset of the saved ones
            layer.apply_init_offset(sign=-1)


def check_fits(target, tensor, key, source) -> None:
    if not torch.is_tensor(target):
        raise ValueError(f"{source}: {key} is not a tensor of this model's adapter")
    if target.shape != tensor.shape:
        raise ValueError(f"{source}: {key} has shape {tuple(tensor.shape)}, this model needs {tuple(target.shape)}")


def load(model: nn.Module, folder) -> nn.Module:
    """Load a saved adapter into ``model`` (a base model, or one adapted before: its adapter is taken
    out first, so several adapters can be used in turn on one base model)."""
    config, state = read_saved(folder)
    _check_base(model, config, folder)
    return _install(model, config, state, folder)


def _install(model, config, state, source):
    if getattr(model, "variant_config", None) is not None:
        remove(model)
    apply(model, config["variant"], rank=config["rank"], alpha=config["alpha"],
          target_modules=config["target_modules"], dropout=config.get("dropout", 0.0),
          head_modules=tuple(config.get("head_modules", HEAD_NAMES)), **config.get("options", {}))
    try:
        _load_state(model, state, source)
    except BaseException:
        remove(model)  # leave the base model, not a half-loaded adapter
        raise
    return model


def combine(model: nn.Module, folders, weights) -> nn.Module:
    """Install in ``model`` the weighted combination sum_i w_i * adapter_i of saved adapters of one
    variant: the update of every layer is exactly the weighted sum of theirs (DoRA: and the magnitude
    is the weighted sum of theirs), so one adapter with weight 1 gives back that adapter. The head is
    combined with the same weights."""
    folders, weights = list(folders), [float(w) for w in weights]
    if not folders or len(folders) != len(weights):
        raise ValueError(f"combine needs one weight per adapter, got {len(folders)} folders and {len(weights)} weights")
    saved = [read_saved(f) for f in folders]
    configs = [c for c, _ in saved]
    names = {c["variant"] for c in configs}
    if len(names) != 1:
        raise ValueError(f"combine needs adapters of one variant, got {sorted(names)}")
    cls = lookup(names.pop())
    if issubclass(cls, Baseline) or not cls.combinable:
        raise ValueError(f"variant {cls.name!r} cannot be combined exactly; combinable variants: "
                         "those whose update is a low-rank product (lora, rslora, dora, qlora)")
    for folder, config in zip(folders, configs):
        _check_base(model, config, folder)
    layer_names = {k.rpartition(".")[0] for k in saved[0][1] if k.endswith(".lora_A")}
    if not layer_names:
        raise ValueError(f"{folders[0]} holds no low-rank adapter layer to combine")
    combined = {}
    for layer_name in sorted(layer_names):
        parts = []
        for folder, (_, state) in zip(folders, saved):
            prefix = layer_name + "."
            layer_state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            if "lora_A" not in layer_state:
                raise ValueError(f"{folder} has no adapter on {layer_name}: combine needs the same layers")
            parts.append(layer_state)
        layer_state, rank, alpha = cls.combine(parts, configs, weights)
        combined.update({f"{layer_name}.{k}": v for k, v in layer_state.items()})
    other_keys = set(saved[0][1]) - {k for k in saved[0][1] if k.rpartition(".")[0] in layer_names}
    for key in other_keys:
        for folder, (_, state) in zip(folders, saved):
            if key not in state:
                raise ValueError(f"{folder} has no {key}: combine needs adapters with the same head")
        combined[key] = sum(w * state[key] for (_, state), w in zip(saved, weights))
    config = {**configs[0], "rank": rank, "alpha": alpha,
              "options": {**configs[0].get("options", {}), "trainable_alpha": False, "init": "kaiming"}}
    return _install(model, config, combined, "combined adapter")
