"""Putting adapters on a model and taking them off: apply, merge, unmerge, remove, count."""
from __future__ import annotations

import math
import warnings

import torch
from torch import nn

from .base import Adapter, ModelTuner, layer_shape
from .registry import lookup
from .targets import HEAD_NAMES, head_prefixes, is_linear, match_targets, set_module

#: the dtypes the frozen base weights may be stored in (``apply``'s ``base_dtype``), by name
BASE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def check_settings(name: str, rank, alpha, dropout, options: dict) -> tuple[type, float | None]:
    """Validate everything that needs no model; returns the variant class and the resolved alpha.
    A baseline ignores rank, alpha and dropout (None is fine)."""
    cls = lookup(name)
    unknown = sorted(set(options) - set(cls.options))
    if unknown:
        valid = ", ".join(f"{k} (default {v!r})" for k, v in cls.options.items()) or "none"
        raise ValueError(f"unknown option(s) {', '.join(unknown)} for variant {name!r}; valid options: {valid}")
    if cls.is_baseline:
        return cls, alpha
    cls.check_options({**cls.options, **options})
    unused = cls.unused_settings({**cls.options, **options})
    if "rank" in unused:
        rank = 1  # what a setting this variant ignores holds is no concern of its checks
    if "alpha" in unused:
        alpha = None
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ValueError(f"rank must be an integer >= 1, got {rank!r}")
    alpha = float(rank if alpha is None else alpha)
    if not math.isfinite(alpha) or alpha <= 0:
        raise ValueError(f"alpha must be a number > 0, got {alpha!r}")
    if not 0 <= float(dropout or 0.0) < 1:
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
    return cls, None if "alpha" in unused else alpha


def apply(model: nn.Module, name: str, *, rank: int | None = 8, alpha: float | None = None,
          target_modules="all-linear", dropout: float | None = 0.0, head_modules=HEAD_NAMES,
          base_dtype: str | None = None, **options) -> nn.Module:
    """Adapt ``model`` in place with variant ``name`` and return it.

    Adapters go on the layers that ``target_modules`` names (leaf names, a regex, or "all-linear");
    every other weight is frozen except the task head (``classifier``/``score``). ``alpha`` defaults to
    ``rank``. ``options`` are the variant's own (``variants.lookup(name).options`` lists them). A
    baseline ignores rank, alpha, target_modules and dropout (None is fine).

    ``base_dtype`` ("bfloat16", "float16"; None: as loaded) stores the frozen weights of linear layers
    in that dtype, before the adapters are made (so a DoRA magnitude or a PiSSA residual is computed from
    the weights the adapter will see): half the memory, and no cast per step under autocast. The
    adapters, the head and whatever else trains stay in their own dtype (float32); a quantized base
    (QLoRA's NF4) stays quantized.
    """
    cls, alpha = check_settings(name, rank, alpha, dropout, options)
    if base_dtype is not None and base_dtype not in BASE_DTYPES:
        raise ValueError(f"base_dtype {base_dtype!r} is not a dtype here; valid: {', '.join(BASE_DTYPES)}")
    if getattr(model, "variant_config", None) is not None:
        raise ValueError(f"model is already adapted with {model.variant_config['variant']!r}; "
                         "call variants.remove(model) first, or variants.load() to switch adapters")
    heads = head_prefixes(model, head_modules)
    dropout = float(dropout or 0.0)
    if target_modules is None:
        target_modules = "all-linear"
    config = {"variant": name, "rank": rank, "alpha": alpha, "dropout": dropout,
              "target_modules": target_modules if isinstance(target_modules, str) else list(target_modules),
              "head_modules": list(head_modules), "options": dict(options)}
    if base_dtype is not None:
        config["base_dtype"] = base_dtype
    if cls.is_baseline:
        cls.set_trainable(model, heads)
        store_frozen_linear_weights(model, base_dtype)
    elif issubclass(cls, ModelTuner):
        all_options = {**cls.options, **options}
        uses_targets = "target_modules" not in cls.unused_settings(all_options)
        targets = sorted(match_targets(model, target_modules, head_modules)) if uses_targets else None
        for parameter in model.parameters():
            parameter.requires_grad_(False)
        cls.adapt(model, targets=targets, rank=rank, alpha=alpha, dropout=dropout, options=all_options)
        for head in heads:
            model.get_submodule(head).requires_grad_(True)
        store_frozen_linear_weights(model, base_dtype)
    else:
        targets = match_targets(model, target_modules, head_modules)
        if cls.rank_bounded_by_layer:
            warn_if_rank_above_layers(targets, rank)
        for parameter in model.parameters():
            parameter.requires_grad_(False)
        for head in heads:
            model.get_submodule(head).requires_grad_(True)
        shared, targets = cls.prepare(model, targets, rank=rank, options={**cls.options, **options},
                                      head_modules=tuple(head_modules))
        store_frozen_linear_weights(model, base_dtype)
        for layer_name, layer in targets.items():
            set_module(model, layer_name, cls(layer, rank=rank, alpha=alpha, dropout=dropout, shared=shared,
                                              **options))
    model.variant_config = config
    return model


def store_frozen_linear_weights(model: nn.Module, dtype_name: str | None) -> None:
    """Cast the weight and bias of every linear layer whose weight does not train to ``dtype_name``."""
    if dtype_name is None:
        return
    dtype = BASE_DTYPES[dtype_name]
    for module in model.modules():
        weight = getattr(module, "weight", None)
        if is_linear(module) and isinstance(weight, nn.Parameter) and not weight.requires_grad:
            for parameter_name in ("weight", "bias"):
                parameter = getattr(module, parameter_name, None)
                if isinstance(parameter, nn.Parameter) and not parameter.requires_grad:
                    parameter.data = parameter.data.to(dtype)


def warn_if_rank_above_layers(targets: dict[str, nn.Module], rank: int) -> None:
    for layer_name, layer in targets.items():
        smaller = min(layer_shape(layer))
        if rank > smaller:
            warnings.warn(f"rank {rank} is above the smaller dimension ({smaller}) of {layer_name}: "
                          f"its update cannot have rank above {smaller}", stacklevel=3)
            return


def adapter_layers(model: nn.Module) -> dict[str, Adapter]:
    """Every adapted layer of ``model``, by module name."""
    return {n: m for n, m in model.named_modules() if isinstance(m, Adapter)}


def variant_of(model: nn.Module) -> type | None:
    """The class of the variant ``model`` is adapted with (None: not adapted)."""
    config = getattr(model, "variant_config", None)
    return lookup(config["variant"]) if config else None


def before_training(model: nn.Module, *, total_steps: int, train_loader) -> None:
    """The model's variant's ``before_training`` hook (the training loop calls it once, before the optimizer)."""
    cls = variant_of(model)
    if cls is not None:
        cls.before_training(model, total_steps=total_steps, train_loader=train_loader)


def own_optimizer(model: nn.Module, *, lr: float, weight_decay: float):
    """The model's variant's own optimizer (its ``optimizer`` hook), or None for the training loop's AdamW."""
    cls = variant_of(model)
    if cls is None:
        return None
    return cls.optimizer(model, {**cls.options, **model.variant_config["options"]}, lr=lr, weight_decay=weight_decay)


def after_optimizer_step(model: nn.Module, step: int) -> None:
    """The model's variant's ``after_optimizer_step`` hook (the training loop calls it after every step)."""
    cls = variant_of(model)
    if cls is not None:
        cls.after_optimizer_step(model, step)


def merge(model: nn.Module) -> nn.Module:
    """Fold every adapter into its base weight (inference then costs what the base model costs)."""
    cls = variant_of(model)
    if cls is not None and issubclass(cls, ModelTuner):
        cls.merge_model(model)
    for layer in adapter_layers(model).values():
        layer.merge()
    return model


def unmerge(model: nn.Module) -> nn.Module:
    """Take the updates out of the base weights again (after ``merge``)."""
    cls = variant_of(model)
    if cls is not None and issubclass(cls, ModelTuner):
        cls.unmerge_model(model)
    for layer in adapter_layers(model).values():
        layer.unmerge()
    return model


def remove(model: nn.Module) -> nn.Module:
    """Take every adapter out again, giving back the base layers (unmerged)."""
    cls = variant_of(model)
    if cls is not None and issubclass(cls, ModelTuner):
        cls.remove_model(model)
    for layer_name, layer in adapter_layers(model).items():
        set_module(model, layer_name, layer.remove())
    config = getattr(model, "variant_config", None)
    shared = lookup(config["variant"]).shared_module if config else None
    if shared and hasattr(model, shared):
        delattr(model, shared)
    model.variant_config = None
    return model


def trainable_parameters(model: nn.Module) -> int:
    """How many numbers training changes."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
