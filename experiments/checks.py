"""Checks of a resolved config that need neither data nor a model (only ``variants``, i.e. torch)."""
from __future__ import annotations

import variants

from . import precision
from .models import check_pooling
from .task_schema import check_task


def is_baseline(variant_name: str) -> bool:
    return variants.lookup(variant_name).is_baseline


def normalized(cfg: dict) -> dict:
    """The config as hashed and recorded: settings a baseline ignores are blanked, so a rank sweep
    does not train the same baseline once per rank; the learning rates of ``train.tuned_file`` and
    ``train.lr_factor`` are folded into ``train.lr`` / ``train.head_lr`` (so the resolved rates, not the
    file or the factor, are hashed: factor 1 is the default run); ``train.mixed_precision: auto`` becomes
    the precision this machine trains in (``experiments.precision``)."""
    cfg = dict(cfg)
    if "train" in cfg:
        task = (cfg.get("task") or {}).get("name")
        cfg["train"] = resolved_learning_rates(cfg["train"], cfg["variant"]["name"], task)
        cfg["train"]["mixed_precision"] = precision.resolve_here(cfg["train"].get("mixed_precision", "no"),
                                                                 cfg["train"].get("device"))
    if is_baseline(cfg["variant"]["name"]):
        cfg.update(rank=None, alpha=None, target_modules=None, dropout=None)
        cfg["variant"] = {**cfg["variant"], "options": {}}
    return cfg


def check_config(cfg: dict) -> None:
    """Raise ValueError naming the bad value (and the valid choices) for any setting that makes no sense."""
    variant = cfg["variant"]
    variants.check_settings(variant["name"], cfg["rank"], cfg["alpha"], cfg["dropout"], dict(variant.get("options") or {}))
    check_pooling((cfg.get("model") or {}).get("pooling", "model"))
    check_task(cfg["task"])
    train = cfg["train"]
    precision.resolve(train.get("mixed_precision", "no"), "cpu", False, False)  # a bad value names the choices
    for key in ("lr", "batch_size"):
        if not (train.get(key) and train[key] > 0):
            raise ValueError(f"train.{key} must be > 0, got {train.get(key)!r}")
    if not (train.get("max_steps") or (train.get("epochs") or 0) > 0):
        raise ValueError("set train.epochs > 0 or train.max_steps > 0")
    fraction = (cfg.get("data") or {}).get("selection_fraction")
    if fraction is not None and (isinstance(fraction, bool) or not isinstance(fraction, (int, float))
                                 or not 0 < fraction < 1):
        raise ValueError(f"data.selection_fraction must be a number in (0, 1) or null, got {fraction!r}")


def _rounded(value: float) -> float:
    return float(f"{value:.12g}")  # 0.25 * 2e-3 is 5e-4, not 5.000000000000001e-4


def resolved_learning_rates(train: dict, variant: str, task: str) -> dict:
    """``train`` with ``tuned_file`` (a YAML written by ``python -m experiments.tune``: task -> variant ->
    {lr, head_lr}; ``tuned_variant``, when set, names the variant whose rates to take instead of the
    run's own) and ``lr_factor`` (a multiplier of lr and head_lr) applied, all reset to neutral."""
    train = dict(train)
    if train.get("tuned_variant"):
        if not train.get("tuned_file"):
            raise ValueError(f"train.tuned_variant={train['tuned_variant']!r} needs train.tuned_file (the rates "
                             "to take from it)")
        variants.lookup(train["tuned_variant"])  # an unknown name fails here, naming the choices
    if train.get("tuned_file"):
        from .tune import tuned_setting

        train.update(tuned_setting(train["tuned_file"], train.get("tuned_variant") or variant, task))
    factor = train.get("lr_factor", 1)
    if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not factor > 0:
        raise ValueError(f"train.lr_factor must be a number > 0, got {factor!r}")
    if factor != 1:
        for key in ("lr", "head_lr"):
            if train.get(key):
                train[key] = _rounded(train[key] * factor)
    if "lr_factor" in train:
        train["lr_factor"] = 1
    for key in ("tuned_file", "tuned_variant"):
        if key in train:
            train[key] = None
    return train
