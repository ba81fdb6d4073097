"""Checks command-line overrides against conf/ before Hydra or torch start, so that a typo such as
``rnak=16``, ``variant=dorra`` or ``task=sst3`` fails at once with the valid choices. Needs only YAML."""
from __future__ import annotations

import difflib
import re
from pathlib import Path

import yaml

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


class OverrideError(ValueError):
    pass


def groups(conf_dir: Path = CONF_DIR) -> dict[str, list[str]]:
    """Config groups and their choices, e.g. {'variant': ['dora', 'full', ...], ...}."""
    return {d.name: sorted(p.stem for p in d.glob("*.yaml")) for d in sorted(conf_dir.iterdir()) if d.is_dir()}


def _known_keys(conf_dir: Path) -> dict:
    """The primary config merged with every group's _global_ keys (a key may come from a group)."""
    keys = yaml.safe_load((conf_dir / "config.yaml").read_text()) or {}
    for group, names in groups(conf_dir).items():
        for name in names:
            text = (conf_dir / group / f"{name}.yaml").read_text()
            content = yaml.safe_load(text) or {}
            if "@package _global_" in text:
                for k, v in content.items():
                    keys.setdefault(k, v)
    return keys


def _split_choices(value: str) -> list[str]:
    """'lora,dora' -> ['lora', 'dora']; sweep syntax such as choice(a,b) is unwrapped."""
    value = re.sub(r"^(choice|glob)\((.*)\)$", r"\2", value.strip())
    return [v.strip().strip("'\"") for v in value.split(",") if v.strip()]


def _suggest(word: str, options) -> str:
    close = difflib.get_close_matches(word, list(options), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check(args: list[str], conf_dir: Path = CONF_DIR) -> None:
    choices, keys = groups(conf_dir), _known_keys(conf_dir)
    for arg in args:
        if arg.startswith("-") or "=" not in arg:
            continue
        key, value = arg.split("=", 1)
        key = key.lstrip("~+")
        if key.startswith("hydra") or arg.startswith("+"):
            continue
        if key in choices:
            for choice in _split_choices(value):
                if choice not in choices[key] and choice != "null":
                    raise OverrideError(f"{key}={choice} is not a valid {key}{_suggest(choice, choices[key])}; "
                                        f"valid choices: {', '.join(choices[key])}")
            continue
        node, path = keys, []
        for part in key.split("."):
            if not isinstance(node, dict) or not node:
                break  # below a leaf or inside a free-form mapping (e.g. variant.options): checked later
            if part not in node:
                valid = sorted(k for k in node if k not in ("defaults", "hydra", "experiment_name"))
                where = f" under {'.'.join(path)}" if path else ""
                groups_hint = f"; or a group: {', '.join(choices)}" if not path else ""
                raise OverrideError(f"unknown setting {key!r}{_suggest(part, valid)}; valid settings{where}: "
                                    f"{', '.join(valid)}{groups_hint}")
            path.append(part)
            node = node[part]
