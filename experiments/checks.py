"""Checks of a resolved config that need neither data nor a model (only ``variants``, i.e. torch)."""
from __future__ import annotations

import variants
from variants.model import check_settings

from .models import check_pooling
from .task_schema import check_task


def is_baseline(variant_name: str) -> bool:
    return issubclass(variants.lookup(variant_name), variants.Baseline)


def normalized(cfg: dict) -> dict:
    """The config as hashed and recorded: settings a baseline ignores are blanked, so a rank sweep
    does not train the same baseline once per rank."""
    cfg = dict(cfg)
    if is_baseline(cfg["variant"]["name"]):
        cfg.update(rank=None, alpha=None, target_modules=None, dropout=None)
        cfg["variant"] = {**cfg["variant"], "options": {}}
    return cfg


def check_config(cfg: dict) -> None:
    """Raise ValueError naming the bad value (and the valid choices) for any setting that makes no sense."""
    variant = cfg["variant"]
    check_settings(variant["name"], cfg["rank"], cfg["alpha"], cfg["dropout"], dict(variant.get("options") or {}))
    check_pooling((cfg.get("model") or {}).get("pooling", "model"))
    check_task(cfg["task"])
    train = cfg["train"]
    for key in ("lr", "batch_size"):
        if not (train.get(key) and train[key] > 0):
            raise ValueError(f"train.{key} must be > 0, got {train.get(key)!r}")
    if not (train.get("max_steps") or (train.get("epochs") or 0) > 0):
        raise ValueError("set train.epochs > 0 or train.max_steps > 0")
