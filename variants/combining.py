"""Adding several saved adapters of one variant into one: ``combine``."""
from __future__ import annotations

from torch import nn

from .registry import available, lookup
from .saving import check_base, install, read_saved
from .targets import HEAD_NAMES, head_prefixes


def combine(model: nn.Module, folders, weights) -> nn.Module:
    """Install in ``model`` the weighted combination sum_i w_i * adapter_i of saved adapters of one
    variant: the update of every layer is exactly the weighted sum of theirs (the variant's ``combine``
    says how, e.g. DoRA also sums the magnitudes), so one adapter with weight 1 gives back that adapter.
    The head is combined with the same weights."""
    folders, weights = list(folders), [float(w) for w in weights]
    if not folders or len(folders) != len(weights):
        raise ValueError(f"combine needs one weight per adapter, got {len(folders)} folders and {len(weights)} weights")
    saved = [read_saved(f) for f in folders]
    configs = [c for c, _ in saved]
    names = {c["variant"] for c in configs}
    if len(names) != 1:
        raise ValueError(f"combine needs adapters of one variant, got {sorted(names)}")
    cls = lookup(names.pop())
    if not cls.combinable:
        combinable = [name for name in available() if lookup(name).combinable]
        kind = "a baseline: it has no adapter to combine" if cls.is_baseline else "not combinable exactly"
        raise ValueError(f"variant {cls.name!r} is {kind}; combinable variants: {', '.join(combinable)}")
    for folder, config in zip(folders, configs):
        check_base(model, config, folder)
    heads = head_prefixes(model, configs[0].get("head_modules", HEAD_NAMES))
    in_head = lambda key: any(key.startswith(h + ".") for h in heads)  # noqa: E731
    layer_names = {k.rpartition(".")[0] for k in saved[0][1] if not in_head(k)}
    if not layer_names:
        raise ValueError(f"{folders[0]} holds no adapter layer to combine")
    combined, changes = {}, {}
    for layer_name in sorted(layer_names):
        parts = []
        prefix = layer_name + "."
        for folder, (_, state) in zip(folders, saved):
            layer_state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix) and not in_head(k)}
            if not layer_state:
                raise ValueError(f"{folder} has no adapter on {layer_name}: combine needs the same layers")
            parts.append(layer_state)
        layer_state, changes = cls.combine(parts, configs, weights)
        combined.update({f"{prefix}{k}": v for k, v in layer_state.items()})
    for key in (k for k in saved[0][1] if in_head(k)):
        for folder, (_, state) in zip(folders, saved):
            if key not in state:
                raise ValueError(f"{folder} has no {key}: combine needs adapters with the same head")
        combined[key] = sum(w * state[key] for (_, state), w in zip(saved, weights))
    config = {**configs[0], **changes,
              "options": {**configs[0].get("options", {}), **changes.get("options", {})}}
    return install(model, config, combined, "combined adapter")
