"""What a task YAML (conf/task/*.yaml) may say: its keys, which are required, their types, how they must
agree with each other, and whether its files have the columns it names (read from the headers only).
Needs only the standard library (pyarrow for a parquet file's schema), so run.py checks a task before
Hydra, torch or datasets start:

    check_task(task, source="conf/task/mrpc.yaml")   # TaskError naming the key, or nothing
    check_columns(task, base=Path("../shared/glue"))  # TaskError naming the file and its columns

``local_files`` resolves a task's file paths for both these checks and ``experiments.data``.
"""
from __future__ import annotations

import csv
import difflib
import itertools
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

TRAIN = "train"
FORMATS = {".tsv": "tsv", ".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet"}
GENERATED = ("demo",)  # tasks experiments/demo_task.py writes

#: what each config of experiments/glue_metric returns (a test checks this against the module itself)
METRIC_OUTPUTS = {
    "cola": ("matthews_correlation",),
    **{name: ("accuracy",) for name in ("sst2", "mnli", "mnli_matched", "mnli_mismatched", "qnli", "rte", "wnli")},
    "mrpc": ("accuracy", "f1"), "qqp": ("accuracy", "f1"),
    "stsb": ("pearson", "spearmanr"),
}
REGRESSION_METRICS = ("stsb",)


class TaskError(ValueError):
    pass


def plain(value):
    """A task config as plain dicts and lists (Hydra hands over DictConfig / ListConfig)."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return [plain(v) for v in value]
    return value


# -- the schema: key -> (required, what the value must be, test) ----------------------------------------

def _text(value) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _texts(low: int, high: int | None = None):
    return lambda v: isinstance(v, list) and low <= len(v) <= (high or len(v)) and all(map(_text, v))


def _text_mapping(value) -> bool:
    return isinstance(value, dict) and bool(value) and all(_text(k) and _text(v) for k, v in value.items())


def _mapping(value) -> bool:
    return isinstance(value, dict)


KEYS = {
    "name": (True, "a name (string)", _text),
    "text_fields": (True, "a list of one or two column names, e.g. [sentence1, sentence2]", _texts(1, 2)),
    "label_field": (True, "a column name (string)", _text),
    "num_labels": (True, "an integer >= 1 (1: regression)",
                   lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1),
    "label_names": (False, "a list of label names, one per class",
                    lambda v: isinstance(v, list) and bool(v) and all(_text(n) or _number(n) for n in v)),
    "label_range": (False, "a list of two numbers [low, high] with low < high",
                    lambda v: isinstance(v, list) and len(v) == 2 and all(map(_number, v)) and v[0] < v[1]),
    "metric": (True, f"one of {', '.join(METRIC_OUTPUTS)}", lambda v: v in METRIC_OUTPUTS),
    "main_metric": (True, "a metric name (string)", _text),
    "splits": (False, "a mapping of result split -> source split, e.g. {train: train, validation: validation}",
               _text_mapping),
    "hub": (False, "a mapping with path (and name)", _mapping),
    "local": (False, "a mapping (folder, format, header, columns, files, rename)", _mapping),
    "generate": (False, f"one of {', '.join(GENERATED)}", lambda v: v in GENERATED),
}
HUB_KEYS = {
    "path": (True, "a hub dataset id (string), e.g. nyu-mll/glue", _text),
    "name": (False, "a dataset config name (string) or null", lambda v: v is None or _text(v)),
}
LOCAL_KEYS = {
    "folder": (False, "a folder (string), relative to data.glue_dir or absolute", _text),
    "format": (False, f"one of {', '.join(sorted(set(FORMATS.values())))}", lambda v: v in FORMATS.values()),
    "header": (False, "true or false", lambda v: isinstance(v, bool)),
    "columns": (False, "a list of column names", _texts(1)),
    "files": (False, "a mapping of split -> file path", _text_mapping),
    "rename": (False, "a mapping of the file's column name -> the task's name", _text_mapping),
}


def _suggest(word: str, options, shown=None) -> str:
    """' (did you mean ...?)' with the closest option (as ``shown`` names it), or ''."""
    close = difflib.get_close_matches(word, list(options), n=1)
    return f" (did you mean {(shown or {}).get(close[0], close[0])!r}?)" if close else ""


def _check_keys(section: dict, keys: dict, where: str, prefix: str = "", nested=None) -> None:
    """Unknown keys (with a 'did you mean', among ``nested`` keys too), then missing required ones, then
    each value's type."""
    nested = nested or {}
    for key in section:
        if key not in keys:
            hint = _suggest(key, keys) or _suggest(key, nested, nested)
            raise TaskError(f"{where}: unknown key {prefix + key!r}{hint}; valid keys"
                            f"{' under ' + prefix.rstrip('.') if prefix else ''}: {', '.join(keys)}")
    missing = [prefix + key for key, (required, _, _) in keys.items() if required and key not in section]
    if missing:
        raise TaskError(f"{where}: required key(s) {', '.join(missing)} missing")
    for key, value in section.items():
        _, expected, valid = keys[key]
        if not valid(value):
            raise TaskError(f"{where}: {prefix}{key} must be {expected}, got {value!r}")


def split_suffix(task: dict, split: str | None) -> str:
    """'' for a task with one evaluation split; else '_' + the split's name without 'validation_'
    (MNLI: validation -> validation_matched -> '_matched'). Metric names carry it (accuracy_matched)."""
    splits = task.get("splits") or {}
    evaluated = [k for k in splits if k != TRAIN]
    if split is None or len(evaluated) <= 1:
        return ""
    if split not in splits:
        raise ValueError(f"task {task['name']!r} has no split {split!r}; its splits: {', '.join(splits)}")
    source = str(splits[split])
    return "_" + (source[len("validation_"):] if source.startswith("validation_") else split)


def metric_names(task: dict) -> list[str]:
    """The names of the scores a run of this task records (what main_metric may be)."""
    evaluated = [k for k in task.get("splits") or {TRAIN: TRAIN, "validation": "validation"} if k != TRAIN]
    return [name + split_suffix(task, split) for split in evaluated for name in METRIC_OUTPUTS[task["metric"]]]


def check_task(task, source: str = "task config") -> None:
    """Raise TaskError naming the key for anything the task YAML gets wrong; needs no data."""
    task = plain(task)
    if not isinstance(task, dict):
        raise TaskError(f"{source}: a task must be a mapping of keys, got {task!r}")
    where = f"task {task.get('name', '?')!r} ({source})"
    elsewhere = {**{k: f"hub.{k}" for k in HUB_KEYS}, **{k: f"local.{k}" for k in LOCAL_KEYS}}
    _check_keys(task, KEYS, where, nested=elsewhere)  # xfiles: did you mean 'local.files'?
    if "hub" in task:
        _check_keys(task["hub"], HUB_KEYS, where, "hub.")
    local = task.get("local") or {}
    _check_keys(local, LOCAL_KEYS, where, "local.")
    _check_splits(task, local, where)
    _check_labels(task, where)
    _check_columns_named(task, local, where)


def _check_labels(task: dict, where: str) -> None:
    num_labels, names = task["num_labels"], task.get("label_names")
    if names is not None and len(names) != num_labels:
        raise TaskError(f"{where}: num_labels is {num_labels} but label_names names {len(names)} "
                        f"({', '.join(map(str, names))}); give one name per class"
                        f"{' (a regression task, num_labels 1, has one name)' if num_labels == 1 else ''}")
    if names is not None and len(set(map(str, names))) != len(names):
        raise TaskError(f"{where}: label_names repeats a name: {names}")
    if "label_range" in task and num_labels != 1:
        raise TaskError(f"{where}: label_range is for a regression task (num_labels: 1), but num_labels is "
                        f"{num_labels}")
    regression = task["metric"] in REGRESSION_METRICS
    if regression != (num_labels == 1):
        kind = "a regression metric" if regression else "a classification metric"
        raise TaskError(f"{where}: metric {task['metric']!r} is {kind}, but num_labels is {num_labels}; "
                        f"regression (num_labels: 1) takes {', '.join(REGRESSION_METRICS)}")
    valid = metric_names(task)
    if task["main_metric"] not in valid:
        raise TaskError(f"{where}: main_metric {task['main_metric']!r} is not among what metric "
                        f"{task['metric']!r} returns{_suggest(task['main_metric'], valid)}: {', '.join(valid)}")


def _check_splits(task: dict, local: dict, where: str) -> None:
    splits = task.get("splits") or {TRAIN: TRAIN, "validation": "validation"}
    if TRAIN not in splits or len(splits) < 2:
        raise TaskError(f"{where}: splits must name {TRAIN!r} and at least one evaluation split, got {splits}")
    if not (task.get("hub") or local.get("files") or task.get("generate")):
        raise TaskError(f"{where}: the task names no data: give hub (a hub dataset) or local.files")
    files = local.get("files")
    if files:
        for key in splits:
            if key not in files:
                raise TaskError(f"{where}: local.files has no file for split {key!r}{_suggest(key, files)} "
                                f"(splits: {', '.join(splits)}; local.files: {', '.join(files)})")
        for key in files:
            if key not in splits:
                raise TaskError(f"{where}: local.files names split {key!r}, which is not in splits"
                                f"{_suggest(key, splits)}: {', '.join(splits)}")
    if local.get("header") is False and not local.get("columns"):
        raise TaskError(f"{where}: local.header is false, so local.columns must name the file's columns")


def _check_columns_named(task: dict, local: dict, where: str) -> None:
    """text_fields and label_field are distinct, and rename maps file columns onto exactly these names."""
    wanted = list(task["text_fields"]) + [task["label_field"]]
    if len(set(wanted)) != len(wanted):
        raise TaskError(f"{where}: text_fields and label_field must be different columns, got "
                        f"text_fields {task['text_fields']}, label_field {task['label_field']!r}")
    rename = local.get("rename") or {}
    for old, new in rename.items():
        if new not in wanted:
            raise TaskError(f"{where}: local.rename turns the file's column {old!r} into {new!r}, which is "
                            f"neither a text field nor the label field{_suggest(new, wanted)} (text_fields: "
                            f"{', '.join(task['text_fields'])}; label_field: {task['label_field']})")
    targets = list(rename.values())
    if len(set(targets)) != len(targets):
        raise TaskError(f"{where}: local.rename maps two columns onto the same name: {rename}")
    for name in wanted:
        if name in rename and rename[name] != name and name not in targets:
            raise TaskError(f"{where}: the task names column {name!r}, but local.rename turns the file's "
                            f"{name!r} into {rename[name]!r}; name the column after renaming "
                            f"({rename[name]!r}) in text_fields / label_field")


# -- the files: where they are, and their column names ---------------------------------------------------

def uses_local_files(task: dict, glue_dir) -> bool:
    """Whether the task reads local files (generated, under glue_dir, or all absolute) rather than the hub."""
    if task.get("generate") or glue_dir is not None:
        return True
    files = (task.get("local") or {}).get("files") or {}
    folder = (task.get("local") or {}).get("folder")
    return bool(files) and all(Path(os.path.expanduser(str(folder or ""))).joinpath(
        os.path.expanduser(str(f))).is_absolute() for f in files.values())


def local_files(task: dict, base: Path | None) -> dict[str, Path]:
    """{split: path} of the task's files: relative to local.folder, then to ``base`` (data.glue_dir)."""
    spec = task["local"]
    files = spec.get("files") or {}
    folder = Path(os.path.expanduser(str(spec["folder"]))) if spec.get("folder") else None
    paths = {}
    for key in task.get("splits") or {TRAIN: TRAIN, "validation": "validation"}:
        if key not in files:
            raise ValueError(f"task {task['name']!r}: local.files has no file for split {key!r} "
                             f"(it names {sorted(files)})")
        path = Path(os.path.expanduser(str(files[key])))
        if not path.is_absolute():
            if folder is not None:
                path = folder / path
            if not path.is_absolute():
                if base is None:
                    raise ValueError(f"task {task['name']!r}: file {path} is relative; pass data.glue_dir "
                                     "(the folder it is relative to) or give an absolute path")
                path = base / path
        if not path.is_file():
            hint = "; leave data.glue_dir unset to load it from the hub" if task.get("hub") else ""
            raise FileNotFoundError(f"task {task['name']!r}: file {path} not found (split {key!r}){hint}")
        paths[key] = path
    return paths


def file_format(path: Path, spec: dict) -> str:
    kind = spec.get("format") or FORMATS.get(path.suffix.lower())
    if kind not in FORMATS.values():
        raise ValueError(f"{path}: unknown file format {kind or path.suffix!r}; valid formats: "
                         f"{', '.join(sorted(set(FORMATS.values())))} (set local.format)")
    return kind


def read_columns(path: Path, spec: dict, jsonl_rows: int = 20) -> list[str]:
    """A file's column names from its header (the first rows of a JSONL file, a parquet file's schema)."""
    kind = file_format(path, spec)
    if kind == "parquet":
        import pyarrow.parquet as pq

        return list(pq.read_schema(path).names)
    if kind == "jsonl":
        names = {}
        with open(path, encoding="utf-8-sig") as handle:
            for text in itertools.islice((line for line in handle if line.strip()), jsonl_rows):
                try:
                    record = json.loads(text)
                except ValueError:
                    break  # reading the whole file names the bad line
                if not isinstance(record, dict):
                    break
                names.update(dict.fromkeys(record))
        return list(names)
    if not spec.get("header", True):
        return list(spec.get("columns") or [])
    with open(path, encoding="utf-8-sig", newline="") as handle:
        quoting = csv.QUOTE_NONE if kind == "tsv" else csv.QUOTE_MINIMAL
        first = next(csv.reader(handle, delimiter="\t" if kind == "tsv" else ",", quoting=quoting), None)
    return list(first or [])


def missing_columns(source: str, names: list[str], task: dict, rename: dict) -> str | None:
    """A message naming the columns ``names`` (a file's own) lack for the task, in the file's names and in
    the task's names after renaming; None when nothing is missing."""
    renamed = [rename.get(n, n) for n in names]
    wanted = list(task["text_fields"]) + [task["label_field"]]
    missing = [w for w in wanted if w not in renamed]
    if not missing:
        return None
    back = {new: old for old, new in rename.items()}
    lacking = ", ".join(back.get(m, m) + (f" (the task's {m!r} after local.rename)" if m in back else "")
                        for m in missing)
    message = (f"{source} lacks column(s) {lacking}: in the file's own names, task {task['name']!r} expects "
               f"columns {[back.get(w, w) for w in wanted]}, found {list(names)}")
    if rename:
        message += f"; in the task's names (after local.rename), it needs {wanted}, found {renamed}"
    return message


def check_columns(task, base: Path | None) -> None:
    """Read each local file's header and raise TaskError when a column the task needs is missing."""
    task = plain(task)
    spec = task["local"]
    for path in local_files(task, base).values():
        names = read_columns(path, spec)
        if names:  # an empty file is reported when it is read
            problem = missing_columns(str(path), names, task, dict(spec.get("rename") or {}))
            if problem:
                raise TaskError(problem)
