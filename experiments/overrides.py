"""Checks command-line overrides against conf/ before Hydra or torch start, so that a typo such as
``rnak=16``, ``variant=dorra`` or ``task=sst3`` fails at once with the valid choices; then the task YAML
the run uses, with the command line's ``task.*`` overrides, against experiments/task_schema.py (and,
with data.glue_dir or $GLUE_DIR, its files' headers). Needs only YAML (and Hydra's override parser)."""
from __future__ import annotations

import difflib
import itertools
import os
import re
from pathlib import Path

import yaml

from .task_schema import check_columns, check_task, uses_local_files

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


class OverrideError(ValueError):
    pass


def groups(conf_dir: Path = CONF_DIR, extra_dirs=()) -> dict[str, list[str]]:
    """Config groups and their choices, e.g. {'variant': ['dora', 'full', ...], ...}; ``extra_dirs``
    (Hydra's --config-dir) add choices."""
    found: dict[str, set] = {}
    for folder in (conf_dir, *extra_dirs):
        for d in sorted(Path(folder).iterdir()) if Path(folder).is_dir() else []:
            if d.is_dir():
                found.setdefault(d.name, set()).update(p.stem for p in d.glob("*.yaml"))
    return {group: sorted(names) for group, names in sorted(found.items())}


def _group_file(dirs, group: str, name: str) -> Path:
    """The file of a group's choice: conf/ first, then the --config-dir folders (as Hydra searches)."""
    paths = [Path(d) / group / f"{name}.yaml" for d in dirs]
    return next((p for p in paths if p.is_file()), paths[0])


def _extra_config_dirs(args: list[str]) -> list[Path]:
    """The folders given with --config-dir / -cd."""
    dirs = []
    for i, arg in enumerate(args):
        if arg in ("--config-dir", "-cd") and i + 1 < len(args):
            dirs.append(Path(args[i + 1]))
        elif arg.startswith("--config-dir="):
            dirs.append(Path(arg.split("=", 1)[1]))
    return dirs


def _known_keys(conf_dir: Path, extra_dirs=()) -> dict:
    """The primary config merged with every group's _global_ keys (a key may come from a group)."""
    keys = yaml.safe_load((conf_dir / "config.yaml").read_text()) or {}
    for group, names in groups(conf_dir, extra_dirs).items():
        for name in names:
            text = _group_file((conf_dir, *extra_dirs), group, name).read_text()
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
    """Raise OverrideError naming the bad override (or task key, or column) and the valid choices."""
    extra_dirs = _extra_config_dirs(args)
    choices, keys = groups(conf_dir, extra_dirs), _known_keys(conf_dir, extra_dirs)
    for arg in args:
        if arg.startswith("-") or "=" not in arg:
            continue
        key, value = arg.split("=", 1)
        key = key.lstrip("~+")
        if key.startswith("hydra") or arg.startswith("+") or key.startswith("task."):
            continue  # task.* overrides: checked with the task below
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
    check_tasks(args, (conf_dir, *extra_dirs))


# -- the task the run uses ---------------------------------------------------------------------------

def _parsed(args: list[str]) -> list:
    """Hydra's reading of the overrides that decide the task (task=, task.*, experiment=, data.glue_dir=)."""
    wanted = [a for a in args if re.match(r"^[~+]*(task[=.]|experiment=|data\.glue_dir=|task$)", a)]
    if not wanted:
        return []
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser, parsed = OverridesParser.create(), []
    for arg in wanted:
        try:
            parsed.append(parser.parse_override(arg))
        except Exception:  # noqa: BLE001 - Hydra itself reports an override it cannot read
            continue
    return parsed


def _values(override) -> list:
    return list(override.sweep_iterator()) if override.is_sweep_override() else [override.value()]


def _preset(dirs, name: str) -> dict:
    path = _group_file(dirs, "experiment", name)
    return (yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}


def _preset_tasks(dirs, name: str, multirun: bool) -> list[str] | None:
    """The task(s) an experiment preset chooses: its sweep's task (with -m), else an `override /task`."""
    content = _preset(dirs, name)
    swept = (((content.get("hydra") or {}).get("sweeper") or {}).get("params") or {}).get("task")
    if multirun and swept is not None:
        return _split_choices(str(swept))
    for entry in reversed(content.get("defaults") or []):
        if isinstance(entry, dict):
            for key, value in entry.items():
                if key.split()[-1].strip("/") == "task":
                    return [str(value)]
        elif isinstance(entry, str) and entry != "_self_":
            found = _preset_tasks(dirs, entry, multirun)
            if found:
                return found
    return None


def selected_tasks(args: list[str], dirs=(CONF_DIR,)) -> list[str]:
    """The names of the tasks the command runs: task= on the command line, else the experiment preset's,
    else the primary config's default."""
    parsed = {o.key_or_group: o for o in _parsed(args) if not o.is_delete()}
    if "task" in parsed:
        return [str(v) for v in _values(parsed["task"]) if v is not None]
    multirun = "-m" in args or "--multirun" in args
    if "experiment" in parsed and not parsed["experiment"].is_sweep_override() and parsed["experiment"].value():
        found = _preset_tasks(dirs, str(parsed["experiment"].value()), multirun)
        if found:
            return found
    defaults = (yaml.safe_load((Path(dirs[0]) / "config.yaml").read_text()) or {}).get("defaults") or []
    return [str(e["task"]) for e in defaults if isinstance(e, dict) and e.get("task")]


def _merge(old, new):
    """What Hydra makes of ``key=new`` over ``old``: a mapping is merged into a mapping, else replaced."""
    if isinstance(old, dict) and isinstance(new, dict):
        return {**old, **{k: _merge(old.get(k), v) for k, v in new.items()}}
    return new


def _set(task: dict, path: list[str], value, delete: bool) -> None:
    node = task
    for part in path[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    if delete:
        node.pop(path[-1], None)
    else:
        node[path[-1]] = _merge(node.get(path[-1]), value)


def _interpolated(value) -> bool:
    if isinstance(value, dict):
        return any(map(_interpolated, value.values()))
    if isinstance(value, list):
        return any(map(_interpolated, value))
    return isinstance(value, str) and "${" in value


def _glue_dir(parsed: list) -> str | None:
    """data.glue_dir as the run will see it: the command line's, else $GLUE_DIR (conf/config.yaml)."""
    given = [o for o in parsed if o.key_or_group == "data.glue_dir" and not o.is_sweep_override()]
    if given:
        value = given[-1].value()
        return None if value is None or given[-1].is_delete() else str(value)
    return os.environ.get("GLUE_DIR") or None


def check_tasks(args: list[str], dirs=(CONF_DIR,)) -> None:
    """Each task the command runs, its YAML with the command line's task.* overrides applied, against the
    schema; with local files, their headers against the columns the task names."""
    parsed = _parsed(args)
    changes = [o for o in parsed if o.key_or_group.startswith("task.")]
    glue_dir = _glue_dir(parsed)
    for name in selected_tasks(args, dirs):
        path = _group_file(dirs, "task", name)
        if not path.is_file():
            continue  # not a choice: reported above, or by Hydra
        for values in itertools.product(*(_values(o) for o in changes)):
            try:
                task = yaml.safe_load(path.read_text())
            except yaml.YAMLError as error:
                raise OverrideError(f"{path} is not valid YAML: {error}") from None
            for override, value in zip(changes, values):
                if isinstance(task, dict):
                    _set(task, override.key_or_group.split(".")[1:], value, override.is_delete())
            if _interpolated(task):
                continue  # resolved by Hydra: checked again once the config is composed
            applied = " ".join(o.input_line for o in changes if o.input_line)
            shown = os.path.relpath(path) if path.is_relative_to(Path.cwd()) else str(path)
            try:
                check_task(task, f"{shown}{' with ' + applied if applied else ''}")
                if _can_read_files(task, glue_dir):
                    check_columns(task, Path(os.path.expanduser(glue_dir)) if glue_dir else None)
            except FileNotFoundError:
                continue  # the run names the missing file; experiments.progress needs no data
            except ValueError as error:  # TaskError, or a file of no known format
                raise OverrideError(str(error)) from None


def _can_read_files(task: dict, glue_dir) -> bool:
    """Local files the run will read now (not generated ones, not under a glue_dir the run rejects)."""
    if task.get("generate") or not task.get("local") or not uses_local_files(task, glue_dir):
        return False
    return glue_dir is None or Path(os.path.expanduser(glue_dir)).is_dir()
