"""From Hydra's composed config to the typed config of one run: converted to the schema's types, every
key checked against its rule, the variant's options by the variant, the task by ``Task``, the tuned
file read; then normalized (the learning rates resolved, the precision resolved, the settings a baseline
ignores blanked). Any problem is a ``ConfigError`` of one line naming the key, the value and what is valid.

    config = build(composed)          # a DictConfig from hydra.compose, or the plain dict of one
    config.train.lr, config.task, config.config_hash
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import (ConfigKeyError, MissingMandatoryValue, OmegaConfBaseException,
                              ValidationError)

from .errors import ConfigError
from .precision import resolve_here
from .schema import (HubSource, LocalSource, RunConfig, TaskConfig, option_rule, plain, register,
                     variant_options_schema)
from .task import Task, suggestion

#: the rates a tuned file gives each (task, variant)
TUNED_KEYS = ("lr", "head_lr")


def option_rule_of(variant_class, option: str):
    """The type rule of one of a variant's options (from its default)."""
    return option_rule(variant_class.options[option])


def _variant_class(name):
    import variants

    try:
        return variants.lookup(name)
    except ValueError as error:
        raise ConfigError(f"variant={name!r}: {error}") from None


def shown_value(value) -> str:
    return "null" if value is None else repr(value) if isinstance(value, str) else str(value)


def _at(tree, key: str):
    """The value at dotted ``key`` of a plain dict tree (None when absent)."""
    node = tree
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _field_of(key: str, variant_schema):
    """The schema field (a dataclasses.Field) a dotted key names, or None."""
    schema, found = RunConfig, None
    for part in key.split("."):
        if schema is None:
            return None
        by_name = {f.name: f for f in dataclasses.fields(schema)}
        found = by_name.get(part)
        if found is None:
            return None
        kind = found.type
        schema = (variant_schema if part == "variant" and schema is RunConfig
                  else next((c for c in (TaskConfig, HubSource, LocalSource) if c in (kind, *getattr(kind, "__args__", ())))
                            , kind if dataclasses.is_dataclass(kind) else None))
    return found


def _keys_of(schema) -> list[str]:
    return [f.name for f in dataclasses.fields(schema)] if schema is not None else []


def _schema_at(key: str, variant_schema):
    """The dataclass that holds the last part of dotted ``key`` (for 'valid keys here' messages)."""
    parent = key.rpartition(".")[0]
    if not parent:
        return RunConfig
    holder = _field_of(parent, variant_schema)
    if parent == "variant":
        return variant_schema
    kind = holder.type if holder is not None else None
    return next((c for c in (TaskConfig, HubSource, LocalSource) if c in (kind, *getattr(kind, "__args__", ()))),
                kind if dataclasses.is_dataclass(kind) else None)


def explain(error: OmegaConfBaseException, given: dict, variant_schema, task_source: str = "") -> ConfigError:
    """One line for an OmegaConf error met while typing ``given`` (the plain config); a key of the task
    names the task's file first."""
    key = str(getattr(error, "full_key", "") or "")
    prefix = f"{task_source}: " if task_source and key.startswith("task.") else ""
    if isinstance(error, ConfigKeyError) or "not in" in str(error).split("\n")[0]:
        holder = _schema_at(key, variant_schema)
        valid = _keys_of(holder)
        last = key.rpartition(".")[2]
        under = key.rpartition(".")[0]
        what = (f"variant {variant_schema.__dataclass_fields__['name'].default!r} has no option {last!r}"
                if under == "variant" and variant_schema is not None else f"unknown setting {key!r}")
        return ConfigError(f"{prefix}{what}{suggestion(last, valid)}; valid{' under ' + under if under else ''}: "
                           f"{', '.join(valid)}")
    if isinstance(error, MissingMandatoryValue):
        item = _field_of(key, variant_schema)
        doc = item.metadata.get("doc") if item is not None else ""
        return ConfigError(f"{prefix}{key} is not set{f' ({doc})' if doc else ''}")
    item = _field_of(key, variant_schema)
    rule = item.metadata.get("rule") if item is not None else None
    wants = rule.wants if rule is not None else f"of type {getattr(item, 'type', '?')}"
    return ConfigError(f"{prefix}{key}={shown_value(_at(given, key))}: must be {wants}")


def _check_rules(instance, prefix: str = "", task_source: str = "") -> None:
    """Every field with a rule, at every depth of a schema dataclass instance."""
    for item in dataclasses.fields(instance):
        value = getattr(instance, item.name)
        key = f"{prefix}{item.name}"
        rule = item.metadata.get("rule")
        if rule is not None and not rule(value):
            where = f"{task_source}: " if task_source and key.startswith("task.") else ""
            raise ConfigError(f"{where}{key}={shown_value(value)}: must be {rule.wants}")
        if dataclasses.is_dataclass(value):
            _check_rules(value, key + ".", task_source)


def _target_modules(value) -> None:
    good = (isinstance(value, str) and bool(value.strip())) or (
        isinstance(value, list) and bool(value) and all(isinstance(v, str) and v.strip() for v in value))
    if not good:
        raise ConfigError(f"target_modules={shown_value(value)}: must be a list of layer names ([query,value]), a regex "
                          "string, or all-linear")


def typed(given: dict, variant_class, task_source: str = "") -> RunConfig:
    """``given`` (a plain config) in the schema's types: a RunConfig whose ``variant`` is the variant's
    options dataclass. ConfigError for a value of the wrong type, an unknown key or a missing one."""
    register()
    variant_schema = variant_options_schema(variant_class)
    try:
        merged = OmegaConf.merge(OmegaConf.structured(RunConfig),
                                 {"variant": OmegaConf.structured(variant_schema)}, given)
        return OmegaConf.to_object(merged)
    except OmegaConfBaseException as error:
        raise explain(error, given, variant_schema, task_source) from None


def build(cfg, *, experiment: str | None = None, task_source: str = "", check_files: bool = True) -> RunConfig:
    """The typed, checked and normalized config of one run. ``cfg``: a DictConfig (resolved here) or the
    plain dict of one; ``experiment``: the preset it came from (recorded, not hashed); ``task_source``:
    the task's file, named in the task's errors; ``check_files``: read the task's file headers (local
    files under data.glue_dir) now."""
    if isinstance(cfg, RunConfig):
        return cfg  # built already
    given = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else plain(dict(cfg))
    experiment = given.pop("experiment_name", experiment)
    variant = given.get("variant") or {}
    if not isinstance(variant, dict) or "name" not in variant:
        raise ConfigError("variant is not set: choose one with variant=<name> (conf/variant/)")
    cls = _variant_class(variant["name"])
    task_name = (given.get("task") or {}).get("name") if isinstance(given.get("task"), dict) else None
    task_source = task_source or f"conf/task/{task_name}.yaml"
    config = typed(given, cls, task_source)
    _check_rules(config, task_source=task_source)
    if "target_modules" not in cls.unused_settings(config.options):
        _target_modules(config.target_modules)
    options = config.options
    import variants

    try:
        variants.check_settings(cls.name, config.rank, config.alpha, config.dropout, options)
    except ValueError as error:
        raise ConfigError(f"variant {cls.name!r}: {str(error).removeprefix(cls.name + ': ')}") from None
    task = Task.from_config(config.task, task_source)
    if check_files and task.local and task.uses_local_files(config.data.glue_dir) and not task.generate:
        _check_task_files(task, config.data.glue_dir)
    config = normalized(config, task, cls)
    object.__setattr__(config, "experiment_name", experiment)
    object.__setattr__(config, "task_spec", task)
    return config


def _check_task_files(task: Task, glue_dir) -> None:
    base = Path(os.path.expanduser(str(glue_dir))) if glue_dir else None
    if base is not None and not base.is_dir():
        raise ConfigError(f"data.glue_dir={glue_dir!r}: not a folder (it must hold the GLUE files, e.g. MRPC/train.tsv)")
    try:
        task.check_columns(base)
    except FileNotFoundError:
        pass  # the run names the missing file; progress and dry runs need no data
    except ValueError as error:
        raise ConfigError(str(error)) from None


# -- normalizing ---------------------------------------------------------------------------------------

def rounded(value: float) -> float:
    return float(f"{value:.12g}")  # 0.25 * 2e-3 is 5e-4, not 5.000000000000001e-4


def read_tuned_file(path) -> dict:
    """{task: {variant: {lr, head_lr, ...}}} from a file ``python -m experiments.tune`` wrote."""
    file = Path(os.path.expanduser(str(path)))
    if not file.is_file():
        raise ConfigError(f"train.tuned_file={str(path)!r}: no such file; run python -m experiments.tune "
                          "<tuning results folder> --out <file> first")
    try:
        settings = yaml.safe_load(file.read_text())
    except yaml.YAMLError as error:
        raise ConfigError(f"train.tuned_file={str(path)!r}: {yaml_problem(error, file)}") from None
    if settings is None:
        return {}
    if not isinstance(settings, dict) or not all(isinstance(v, dict) or v is None for v in settings.values()):
        raise ConfigError(f"train.tuned_file={str(path)!r}: must map task -> variant -> {{lr, head_lr}}, got "
                          f"{type(settings).__name__}")
    return settings


def yaml_problem(error: yaml.YAMLError, file) -> str:
    """'<file> is not valid YAML: line L, column C: <problem> (<context> at line K)' for a YAML error."""
    mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
    where = f" line {mark.line + 1}, column {mark.column + 1}:" if mark is not None else ""
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    context, start = getattr(error, "context", None), getattr(error, "context_mark", None)
    since = f" ({context} at line {start.line + 1})" if context and start is not None and start is not mark else ""
    return f"{file} is not valid YAML:{where} {problem}{since}"


def tuned_rates(path, variant: str, task: str) -> dict:
    """{lr, head_lr} the tuned file gives ``variant`` on ``task``."""
    settings = read_tuned_file(path)
    entry = (settings.get(task) or {}).get(variant)
    if entry is None:
        found = ", ".join(f"{t}/{v}" for t, vs in settings.items() for v in (vs or {})) or "nothing"
        raise ConfigError(f"train.tuned_file={str(path)!r} has no setting for variant {variant!r} on task {task!r}; "
                          f"it has {found}")
    try:
        return {"lr": float(entry["lr"]), "head_lr": None if entry.get("head_lr") is None else float(entry["head_lr"])}
    except (KeyError, TypeError, ValueError):
        raise ConfigError(f"train.tuned_file={str(path)!r}: the entry for {task}/{variant} needs a number lr "
                          f"(and head_lr or null), got {entry!r}") from None


def normalized(config: RunConfig, task: Task, cls) -> RunConfig:
    """The config as hashed and recorded: ``train.tuned_file`` and ``train.lr_factor`` folded into
    ``train.lr`` / ``train.head_lr`` (the resolved rates are hashed, not the file or the factor: factor 1
    is the default run), ``train.mixed_precision: auto`` resolved for this machine, and the settings a
    baseline ignores blanked (a rank sweep does not train one baseline once per rank; a variant says
    which it ignores: ``unused_settings``)."""
    train = config.train
    if train.tuned_variant is not None:
        if train.tuned_file is None:
            raise ConfigError(f"train.tuned_variant={train.tuned_variant!r} needs train.tuned_file (the rates to take from it)")
        _variant_class(train.tuned_variant)
    if train.tuned_file is not None:
        rates = tuned_rates(train.tuned_file, train.tuned_variant or cls.label(config.options), task.name)
        train = dataclasses.replace(train, **rates)
    if train.lr_factor != 1:
        train = dataclasses.replace(train, lr=rounded(train.lr * train.lr_factor),
                                    head_lr=None if train.head_lr is None else rounded(train.head_lr * train.lr_factor))
    precision = resolve_here(train.mixed_precision, train.device)
    train = dataclasses.replace(train, lr_factor=1.0, tuned_file=None, tuned_variant=None, mixed_precision=precision)
    config = dataclasses.replace(config, train=train)
    unused = cls.unused_settings(config.options)
    return dataclasses.replace(config, **dict.fromkeys(unused)) if unused else config
