"""The command line, checked before Hydra starts a run: every override and every run of a sweep.

``check(argv)`` raises ``ConfigError`` (one line: the key, the value, what is valid) for a typo in a
group or key (``rnak=16``, ``variant=dorra``, ``task=sst3``, with a "did you mean"), a value of the
wrong type or out of range (``train.lr=abc``, ``train.max_steps=-5``), an option the variant does not
have, a malformed YAML file, and anything else the composed config of any run of the sweep gets wrong
(``experiments.config.build``: the task, the tuned file, the variant's options). It needs only YAML,
Hydra's composition and the ``variants`` registry: no data, no model, no record.

``planned_runs(argv)`` gives the runs a ``python run.py -m ...`` command makes, each with its built
config: what ``experiments.progress`` and ``experiments.study`` count.
"""
from __future__ import annotations

import contextlib
import itertools
from pathlib import Path

import yaml
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from .checking import build, option_rule_of, shown_value, yaml_problem
from .errors import ConfigError
from .schema import RunConfig, register
from .task import suggestion

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
#: command-line words that are flags of run.py / Hydra, not overrides (some take a value)
FLAGS_WITH_VALUE = ("--config-dir", "-cd", "--config-path", "-cp", "--config-name", "-cn", "--cfg", "-c",
                    "--package", "-p", "--info", "-i", "--experimental-rerun")


def groups(dirs=(CONF_DIR,)) -> dict[str, list[str]]:
    """Config groups and their choices, e.g. {'variant': ['dora', 'full', ...], ...}, over ``dirs``
    (conf/ and any --config-dir)."""
    found: dict[str, set] = {}
    for folder in dirs:
        for d in sorted(Path(folder).iterdir()) if Path(folder).is_dir() else []:
            if d.is_dir():
                found.setdefault(d.name, set()).update(p.stem for p in d.glob("*.yaml"))
    return {group: sorted(names) for group, names in sorted(found.items())}


def config_dirs(args: list[str]) -> list[Path]:
    """conf/ and the folders given with --config-dir / -cd."""
    dirs = [CONF_DIR]
    for i, arg in enumerate(args):
        if arg in ("--config-dir", "-cd") and i + 1 < len(args):
            dirs.append(Path(args[i + 1]))
        elif arg.startswith("--config-dir="):
            dirs.append(Path(arg.split("=", 1)[1]))
    return dirs


def overrides_of(args: list[str]) -> list[str]:
    """The ``key=value`` overrides of a command line (flags and their values left out)."""
    kept, skip = [], False
    for arg in args:
        if skip:
            skip = False
            continue
        if arg in FLAGS_WITH_VALUE:
            skip = True
            continue
        if arg.startswith("~"):
            kept.append(arg)  # a deletion, with or without a value
        elif not arg.startswith("-") and "=" in arg:
            kept.append(arg)
    return open_mapping_overrides(kept)


def open_mapping_overrides(args: list[str]) -> list[str]:
    """``variant.<option>.<key>=value`` for an option whose default is a mapping (e.g. a PEFT config's
    fields) as ``++variant.<option>.<key>=value``: under Hydra's struct mode a new key of a mapping needs
    the ``+``; the variant checks the key itself (one line naming the valid ones)."""
    import variants

    mappings = {option for name in variants.available()
                for option, default in variants.lookup(name).options.items() if isinstance(default, dict)}
    opened = []
    for arg in args:
        parts = arg.split("=", 1)[0].split(".")
        if "=" in arg and len(parts) >= 3 and parts[0] == "variant" and parts[1] in mappings:
            arg = "++" + arg
        opened.append(arg)
    return opened


def _parse(override: str):
    try:
        return OverridesParser.create().parse_override(override)
    except Exception as error:  # noqa: BLE001 - Hydra's own parse error, in one line
        raise ConfigError(f"{override}: not an override Hydra can read ({str(error).splitlines()[0]})") from None


def _values(parsed) -> list:
    return list(parsed.sweep_iterator()) if parsed.is_sweep_override() else [parsed.value()]


def _strings(parsed) -> list[str]:
    if parsed.is_sweep_override():
        return list(parsed.sweep_string_iterator())
    return [parsed.get_value_element_as_str()]


def _group_file(dirs, group: str, name: str) -> Path:
    paths = [Path(d) / group / f"{name}.yaml" for d in dirs]
    return next((p for p in paths if p.is_file()), paths[0])


def _load_yaml(path: Path):
    try:
        return yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(yaml_problem(error, path)) from None


# -- one override at a time ---------------------------------------------------------------------------

def _convert(value, kind):
    """``value`` (as Hydra parsed it) in the schema type ``kind``, as OmegaConf would convert it."""
    node = OmegaConf.structured(_holder(kind))
    node.value = value
    return node.value


_holders: dict = {}


def _holder(kind):
    from dataclasses import field, make_dataclass

    if kind not in _holders:  # a one-field schema: OmegaConf converts and checks a value as it would in place
        _holders[kind] = make_dataclass(f"Holder{len(_holders)}", [("value", kind, field(default="???"))])
    return _holders[kind]


def _check_value(key: str, item, value) -> None:
    from omegaconf.errors import OmegaConfBaseException

    rule = item.metadata.get("rule")
    shown = shown_value(value)
    try:
        converted = _convert(value, item.type) if item.type is not object else value
    except (OmegaConfBaseException, ValueError, TypeError):
        raise ConfigError(f"{key}={shown}: must be {rule.wants if rule else item.type}") from None
    if rule is not None and not rule(converted):
        raise ConfigError(f"{key}={shown}: must be {rule.wants}")


def _schema_field(key: str):
    """The schema field a dotted key of RunConfig names (None when there is none), and the keys valid
    at the level where it stops."""
    import dataclasses

    schema, item = RunConfig, None
    parts = key.split(".")
    for depth, part in enumerate(parts):
        by_name = {f.name: f for f in dataclasses.fields(schema)}
        if part not in by_name:
            return None, sorted(by_name), ".".join(parts[:depth])
        item = by_name[part]
        if depth < len(parts) - 1:
            if not dataclasses.is_dataclass(item.type):
                return None, [], ".".join(parts[:depth + 1])
            schema = item.type
    return item, [], ""


def _chosen(parsed: dict, dirs, multirun: bool, group: str, default: str) -> list[str]:
    """The names a group takes in this command: the command line's, else the preset's sweep or choice."""
    if group in parsed:
        return [str(v) for v in _values(parsed[group]) if v is not None]
    if "experiment" in parsed and not parsed["experiment"].is_sweep_override() and parsed["experiment"].value():
        found = _preset_choice(dirs, str(parsed["experiment"].value()), group, multirun)
        if found:
            return found
    return [default]


def _preset_choice(dirs, preset: str, group: str, multirun: bool) -> list[str] | None:
    path = _group_file(dirs, "experiment", preset)
    content = _load_yaml(path) if path.is_file() else {}
    swept = (((content.get("hydra") or {}).get("sweeper") or {}).get("params") or {}).get(group)
    if multirun and swept is not None:
        return [v.strip() for v in str(swept).split(",") if v.strip()]
    for entry in reversed(content.get("defaults") or []):
        if isinstance(entry, dict):
            for key, value in entry.items():
                if key.split()[-1].strip("/") == group:
                    return [str(value)]
        elif isinstance(entry, str) and entry != "_self_":
            found = _preset_choice(dirs, entry, group, multirun)
            if found:
                return found
    return None


def check_overrides(args: list[str]) -> None:
    """Each override on its own: groups and their choices, keys (with a "did you mean"), a variant's
    options, and each value's type and range."""
    dirs = config_dirs(args)
    choices = groups(dirs)
    register()
    multirun = "-m" in args or "--multirun" in args
    overrides = overrides_of(args)
    parsed = {}
    for override in overrides:
        if override.lstrip("~+").startswith("hydra"):
            continue
        parsed[_parse(override).key_or_group] = _parse(override)
    import variants

    for key, item in parsed.items():
        if item.is_delete():
            continue
        if key in choices:
            for value in _strings(item):
                if value not in choices[key] and value != "null":
                    raise ConfigError(f"{key}={value} is not a valid {key}{suggestion(value, choices[key])}; "
                                      f"valid choices: {', '.join(choices[key])}")
            if key in ("variant", "task", "model", "experiment", "logger"):
                for value in _strings(item):
                    if value != "null":
                        _load_yaml(_group_file(dirs, key, value))
            continue
        if item.input_line and item.input_line.startswith("+"):
            continue  # appending a new key is Hydra's business (and the typed schema refuses it)
        if key.startswith("task."):
            continue  # checked with the task, once composed
        if key.startswith("variant."):
            option = key.split(".", 1)[1].split(".")[0]
            for name in _chosen(parsed, dirs, multirun, "variant", "lora"):
                cls = variants.lookup(name)
                if option not in cls.options:
                    valid = ", ".join(cls.options) or "none"
                    raise ConfigError(f"{key}: variant {name!r} has no option {option!r}"
                                      f"{suggestion(option, cls.options)}; its options: {valid}")
                rule = option_rule_of(cls, option)
                for value in _values(item):
                    if rule is not None and "." not in key.split(".", 1)[1] and not rule(value):
                        raise ConfigError(f"{key}={value!r}: must be {rule.wants} (variant {name!r})")
            continue
        field, valid, where = _schema_field(key)
        if field is None:
            groups_hint = f"; or a group: {', '.join(choices)}" if not where else ""
            last = key[len(where) + 1:].split(".")[0] if where else key.split(".")[0]
            raise ConfigError(f"unknown setting {key!r}{suggestion(last, valid)}; valid settings"
                              f"{' under ' + where if where else ''}: {', '.join(valid)}{groups_hint}")
        for value in _values(item):
            _check_value(key, field, value)


# -- every run of the sweep ---------------------------------------------------------------------------

def sweep(overrides: list[str], dirs=(CONF_DIR,)) -> dict[str, list[str]]:
    """Each swept key and its values: the command line first, then the preset's ``hydra.sweeper.params``
    for keys the command line leaves alone (as Hydra's basic sweeper does)."""
    parsed = [(override, _parse(override)) for override in overrides]
    fixed = [override for override, p in parsed if not p.is_sweep_override()]
    with composing(dirs) as compose_one:
        cfg = compose_one(fixed, hydra=True)
    keys = {override.split("=", 1)[0]: _strings(p) for override, p in parsed}
    for key, value in (cfg.hydra.sweeper.params or {}).items():
        keys.setdefault(key, _strings(_parse(f"{key}={value}")))
    return keys


@contextlib.contextmanager
def composing(dirs):
    """A block in which ``compose_run`` composes runs on conf/ (and ``dirs``), on the schema's plain
    form: fast, and ``build`` types and checks the result. The typed schema is back afterwards."""
    search = [f"hydra.searchpath=[{','.join('file://' + str(Path(d).resolve()) for d in dirs[1:])}]"] if len(dirs) > 1 else []
    register(typed=False)
    try:
        with initialize_config_dir(config_dir=str(Path(dirs[0]).resolve()), version_base="1.3"):
            yield lambda point, hydra=False: compose_run([*search, *point], hydra)
    finally:
        register(typed=True)


def compose_run(point: list[str], hydra: bool = False):
    """The config of one run as Hydra composes it (inside ``composing``); ConfigError for what it refuses."""
    try:
        return compose("config", overrides=point, return_hydra_config=hydra)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        raise ConfigError(yaml_problem(error, getattr(mark, "name", "a config file"))) from None
    except Exception as error:  # noqa: BLE001 - Hydra's composition error, in one line
        raise ConfigError(str(error).splitlines()[0]) from None


def points(args: list[str]) -> list[list[str]]:
    """The override list of every run the command makes: one for a single run, the sweep's product
    with -m."""
    overrides = [o for o in overrides_of(args) if not o.lstrip("~+").startswith("hydra")]
    if "-m" not in args and "--multirun" not in args:
        return [overrides]
    keys = sweep(overrides, config_dirs(args))
    return [[f"{key}={value}" for key, value in zip(keys, values)] for values in itertools.product(*keys.values())]


def planned_runs(args: list[str], check_files: bool = True) -> list[tuple[list[str], RunConfig]]:
    """(overrides, built config) of every run the command makes, in the sweep's order."""
    dirs = config_dirs(args)
    runs, sweeping, every_point = [], "-m" in args or "--multirun" in args, points(args)
    with composing(dirs) as compose_one:
        for point in every_point:
            experiment = next((o.split("=", 1)[1] for o in point if o.startswith("experiment=")), None)
            task = _chosen({p.key_or_group: p for p in map(_parse, point)}, dirs, False, "task", _default(dirs, "task"))
            source = _shown_path(_group_file(dirs, "task", task[0]))
            try:
                runs.append((point, build(compose_one(point), experiment=experiment, task_source=source,
                                          check_files=check_files)))
            except ConfigError as error:
                raise ConfigError(f"{error}" + (f" (in the run {' '.join(point)})" if sweeping else "")) from None
    return runs


def _default(dirs, group: str) -> str:
    """The primary config's default choice of ``group``."""
    defaults = _load_yaml(Path(dirs[0]) / "config.yaml").get("defaults") or []
    return next((str(e[group]) for e in defaults if isinstance(e, dict) and group in e), "")


def _shown_path(path: Path) -> str:
    """A config file as messages name it: relative to the working folder when it lies below it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def check(args: list[str]) -> None:
    """Everything the command line gets wrong, as one ConfigError, before anything runs."""
    check_overrides(args)
    if any(arg in ("--help", "-h", "--hydra-help") for arg in args):
        return
    planned_runs(args)


