"""A task, built once from its YAML (conf/task/*.yaml) and checked once: its splits, its files, how its
labels are read, what it scores and its headline number.

    task = Task.from_config(composed["task"], source="conf/task/mrpc.yaml")   # ConfigError naming the key
    task.check_columns(Path("../shared/glue"))       # the files' headers name the task's columns
    task.scores(logits, labels, split="validation")  # {'accuracy': ..., 'f1': ...}
    task.main_score(scores); task.constant_prediction_loss(train_labels)

Needs no torch and no datasets (pyarrow only for a parquet file's schema), so the command line checks a
task before anything heavy starts.
"""
from __future__ import annotations

import csv
import difflib
import itertools
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from analysis.metrics import GLUE_METRICS, REGRESSION_SETS, glue_scores

from .errors import ConfigError
from .schema import plain, without_unset

TRAIN = "train"
DEFAULT_SPLITS = {TRAIN: "train", "validation": "validation"}
FORMATS = {".tsv": "tsv", ".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet"}
GENERATED = ("demo",)  # tasks experiments/run/demo_task.py writes


def suggestion(word: str, options) -> str:
    """' (did you mean X?)' with the closest of ``options``, or ''."""
    close = difflib.get_close_matches(str(word), [str(o) for o in options], n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


@dataclass(frozen=True)
class Task:
    name: str
    text_fields: tuple[str, ...]
    label_field: str
    num_labels: int
    metric: str
    main_metric: str
    splits: dict
    label_names: tuple | None = None
    label_range: tuple | None = None
    hub: dict | None = None
    local: dict | None = None
    generate: str | None = None
    #: where the task was defined (a file), for messages
    source: str = "task config"

    # -- building and checking -------------------------------------------------------------------
    @classmethod
    def of(cls, value, source: str = "task config") -> Task:
        """``value`` itself when it is a Task, else the Task its config describes (a convenience for
        callers outside a run: a run builds its Task once, in ``experiments.config.build``)."""
        return value if isinstance(value, Task) else cls.from_config(value, source)

    @classmethod
    def from_config(cls, config, source: str = "task config") -> Task:
        """The task a task config (dict, DictConfig or schema object) describes; ConfigError naming the
        key for anything it gets wrong. Types and unknown keys are the schema's; this checks how the
        keys agree with each other."""
        spec = without_unset(plain(config))
        if not isinstance(spec, dict):
            raise ConfigError(f"{source}: a task must be a mapping of keys, got {spec!r}")
        where = f"task {spec.get('name', '?')!r} ({source})"
        missing = [key for key in ("name", "text_fields", "label_field", "num_labels", "metric", "main_metric")
                   if key not in spec]
        if missing:
            raise ConfigError(f"{where}: required key(s) {', '.join(missing)} missing")
        task = cls(name=spec["name"], text_fields=tuple(spec["text_fields"]), label_field=spec["label_field"],
                   num_labels=spec["num_labels"], metric=spec["metric"], main_metric=spec["main_metric"],
                   splits=dict(spec.get("splits") or DEFAULT_SPLITS),
                   label_names=tuple(spec["label_names"]) if spec.get("label_names") is not None else None,
                   label_range=tuple(spec["label_range"]) if spec.get("label_range") is not None else None,
                   hub=spec.get("hub"), local=spec.get("local"), generate=spec.get("generate"), source=source)
        task._check(where)
        return task

    def _check(self, where: str) -> None:
        if not 1 <= len(self.text_fields) <= 2 or not all(isinstance(f, str) and f for f in self.text_fields):
            raise ConfigError(f"{where}: text_fields must list one or two column names, got {list(self.text_fields)}")
        if self.metric not in GLUE_METRICS:
            raise ConfigError(f"{where}: metric={self.metric!r} is not a GLUE metric set{suggestion(self.metric, GLUE_METRICS)}; "
                              f"valid: {', '.join(GLUE_METRICS)}")
        self._check_splits(where)
        self._check_labels(where)
        self._check_columns_named(where)

    def _check_labels(self, where: str) -> None:
        names = self.label_names
        if names is not None and len(names) != self.num_labels:
            raise ConfigError(f"{where}: num_labels is {self.num_labels} but label_names names {len(names)} "
                              f"({', '.join(map(str, names))}); give one name per class"
                              f"{' (a regression task, num_labels 1, has one name)' if self.num_labels == 1 else ''}")
        if names is not None and len(set(map(str, names))) != len(names):
            raise ConfigError(f"{where}: label_names repeats a name: {list(names)}")
        if self.label_range is not None:
            if self.num_labels != 1:
                raise ConfigError(f"{where}: label_range is for a regression task (num_labels: 1), but num_labels "
                                  f"is {self.num_labels}")
            if len(self.label_range) != 2 or not self.label_range[0] < self.label_range[1]:
                raise ConfigError(f"{where}: label_range must be [low, high] with low < high, got {list(self.label_range)}")
        if (self.metric in REGRESSION_SETS) != self.is_regression:
            kind = "a regression metric" if self.metric in REGRESSION_SETS else "a classification metric"
            raise ConfigError(f"{where}: metric {self.metric!r} is {kind}, but num_labels is {self.num_labels}; "
                              f"regression (num_labels: 1) takes {', '.join(REGRESSION_SETS)}")
        valid = self.metric_names
        if self.main_metric not in valid:
            raise ConfigError(f"{where}: main_metric {self.main_metric!r} is not among what metric {self.metric!r} "
                              f"returns{suggestion(self.main_metric, valid)}: {', '.join(valid)}")

    def _check_splits(self, where: str) -> None:
        local = self.local or {}
        if TRAIN not in self.splits or len(self.splits) < 2:
            raise ConfigError(f"{where}: splits must name {TRAIN!r} and at least one evaluation split, got {self.splits}")
        if not (self.hub or local.get("files") or self.generate):
            raise ConfigError(f"{where}: the task names no data: give hub (a hub dataset) or local.files")
        files = local.get("files")
        if files:
            for key in self.splits:
                if key not in files:
                    raise ConfigError(f"{where}: local.files has no file for split {key!r}{suggestion(key, files)} "
                                      f"(splits: {', '.join(self.splits)}; local.files: {', '.join(files)})")
            for key in files:
                if key not in self.splits:
                    raise ConfigError(f"{where}: local.files names split {key!r}, which is not in splits"
                                      f"{suggestion(key, self.splits)}: {', '.join(self.splits)}")
        if local.get("header") is False and not local.get("columns"):
            raise ConfigError(f"{where}: local.header is false, so local.columns must name the file's columns")

    def _check_columns_named(self, where: str) -> None:
        """text_fields and label_field are distinct, and rename maps file columns onto exactly these names."""
        wanted = self.wanted_columns
        if len(set(wanted)) != len(wanted):
            raise ConfigError(f"{where}: text_fields and label_field must be different columns, got "
                              f"text_fields {list(self.text_fields)}, label_field {self.label_field!r}")
        rename = self.rename
        for old, new in rename.items():
            if new not in wanted:
                raise ConfigError(f"{where}: local.rename turns the file's column {old!r} into {new!r}, which is "
                                  f"neither a text field nor the label field{suggestion(new, wanted)} (text_fields: "
                                  f"{', '.join(self.text_fields)}; label_field: {self.label_field})")
        targets = list(rename.values())
        if len(set(targets)) != len(targets):
            raise ConfigError(f"{where}: local.rename maps two columns onto the same name: {rename}")
        for name in wanted:
            if name in rename and rename[name] != name and name not in targets:
                raise ConfigError(f"{where}: the task names column {name!r}, but local.rename turns the file's "
                                  f"{name!r} into {rename[name]!r}; name the column after renaming "
                                  f"({rename[name]!r}) in text_fields / label_field")

    # -- what it is -----------------------------------------------------------------------------
    @property
    def is_regression(self) -> bool:
        return self.num_labels == 1

    @property
    def evaluation_splits(self) -> list[str]:
        return [key for key in self.splits if key != TRAIN]

    @property
    def wanted_columns(self) -> list[str]:
        return [*self.text_fields, self.label_field]

    @property
    def rename(self) -> dict:
        return dict((self.local or {}).get("rename") or {})

    def split_suffix(self, split: str | None) -> str:
        """'' for a task with one evaluation split; else '_' + the split's name without 'validation_'
        (MNLI: validation -> validation_matched -> '_matched'). Metric names carry it (accuracy_matched)."""
        if split is None or len(self.evaluation_splits) <= 1:
            return ""
        if split not in self.splits:
            raise ValueError(f"task {self.name!r} has no split {split!r}; its splits: {', '.join(self.splits)}")
        source = str(self.splits[split])
        return "_" + (source[len("validation_"):] if source.startswith("validation_") else split)

    @property
    def metric_names(self) -> list[str]:
        """The names of the scores a run of this task records (what main_metric may be)."""
        return [name + self.split_suffix(split) for split in self.evaluation_splits for name in GLUE_METRICS[self.metric]]

    # -- scoring --------------------------------------------------------------------------------
    def predictions_from(self, outputs) -> np.ndarray:
        """Class indices from logits (N, C) (arg-max), or class indices (N,) as they are; scores from
        (N,) or (N, 1) for regression."""
        values = np.asarray(outputs)
        if self.is_regression:
            if values.ndim == 2 and values.shape[1] == 1:
                values = values[:, 0]
            if values.ndim != 1:
                raise ValueError(f"regression task {self.name!r} needs predictions of shape (N,) or (N, 1), "
                                 f"got {values.shape}")
            return values.astype(np.float64)
        if values.ndim == 2:
            if values.shape[1] != self.num_labels:
                raise ValueError(f"task {self.name!r} has {self.num_labels} labels but the logits have shape {values.shape}")
            return values.argmax(axis=1)
        if values.ndim == 1 and np.issubdtype(values.dtype, np.integer):
            return values
        raise ValueError(f"task {self.name!r} needs logits of shape (N, {self.num_labels}) or class indices of "
                         f"shape (N,), got {values.dtype} {values.shape}")

    def scores(self, outputs, labels, split: str | None = None) -> dict[str, float]:
        """The task's GLUE scores of ``outputs`` (logits, class indices or regression scores) against
        ``labels``; with ``split``, the names carry its suffix (MNLI: accuracy_mismatched)."""
        predicted, gold = self.predictions_from(outputs), np.asarray(labels)
        if gold.shape != predicted.shape:
            raise ValueError(f"{len(predicted)} predictions but labels of shape {gold.shape}")
        suffix = self.split_suffix(split)
        return {f"{name}{suffix}": value for name, value in glue_scores(self.metric, gold, predicted).items()}

    def main_score(self, scores: dict) -> float:
        """The headline number, ``scores[main_metric]``."""
        if self.main_metric not in scores:
            raise ValueError(f"main metric {self.main_metric!r} of task {self.name!r} is not among the scores "
                             f"computed: {', '.join(sorted(scores)) or 'none'}")
        value = float(scores[self.main_metric])
        if math.isnan(value):
            raise ValueError(f"main metric {self.main_metric!r} of task {self.name!r} is NaN")
        return value

    def constant_prediction_loss(self, labels) -> float:
        """The training loss of the best constant predictor on ``labels``, in the model's loss units: the
        label entropy in nats for classification, the label variance for regression."""
        values = np.asarray(labels, dtype=np.float64)
        if len(values) == 0:
            raise ValueError("no labels: the constant-prediction loss needs at least one training label")
        if self.is_regression:
            return float(values.var())
        frequencies = np.bincount(values.astype(np.int64), minlength=self.num_labels) / len(values)
        frequencies = frequencies[frequencies > 0]
        return float(-(frequencies * np.log(frequencies)).sum())

    # -- labels as read from files --------------------------------------------------------------
    def label_reader(self):
        """A function mapping a raw label (class name, index, or score) to the int/float the model trains
        on; None for a value outside the task's label set."""
        if self.is_regression:
            low, high = self.label_range or (-math.inf, math.inf)

            def to_score(value):
                try:
                    number = float(value)
                except (TypeError, ValueError):
                    return None
                return number if low <= number <= high else None
            return to_score
        by_name = {str(name): index for index, name in enumerate(self.label_names or ())}

        def to_index(value):
            if isinstance(value, str):
                if value.strip() in by_name:
                    return by_name[value.strip()]
                try:
                    value = int(value.strip())
                except ValueError:
                    return None
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < self.num_labels:
                return value
            return None
        return to_index

    def label_set(self) -> str:
        if self.is_regression:
            low, high = self.label_range or ("-inf", "inf")
            return f"numbers in [{low}, {high}]"
        return (", ".join(f"{i} / {n}" for i, n in enumerate(self.label_names or ()))
                or ", ".join(str(i) for i in range(self.num_labels)))

    def read_labels(self, values, source: str) -> list:
        """``values`` as training labels; ValueError naming the ones outside the label set."""
        read = self.label_reader()
        labels = [read(v) for v in values]
        bad = sorted({repr(v) for v, label in zip(values, labels) if label is None})
        if bad:
            shown = ", ".join(bad[:10]) + (f" (and {len(bad) - 10} more)" if len(bad) > 10 else "")
            raise ValueError(f"{source}: labels outside the label set of task {self.name!r}: {shown}; "
                             f"valid labels: {self.label_set()}")
        return labels

    # -- its files ------------------------------------------------------------------------------
    def uses_local_files(self, glue_dir) -> bool:
        """Whether the task reads local files (generated, under glue_dir, or all absolute) rather than the hub."""
        if self.generate or glue_dir is not None:
            return True
        files = (self.local or {}).get("files") or {}
        folder = (self.local or {}).get("folder")
        return bool(files) and all(Path(os.path.expanduser(str(folder or ""))).joinpath(
            os.path.expanduser(str(f))).is_absolute() for f in files.values())

    def local_files(self, base: Path | None) -> dict[str, Path]:
        """{split: path} of the task's files: relative to local.folder, then to ``base`` (data.glue_dir)."""
        spec = self.local or {}
        files = spec.get("files") or {}
        folder = Path(os.path.expanduser(str(spec["folder"]))) if spec.get("folder") else None
        paths = {}
        for key in self.splits:
            if key not in files:
                raise ValueError(f"task {self.name!r}: local.files has no file for split {key!r} (it names {sorted(files)})")
            path = Path(os.path.expanduser(str(files[key])))
            if not path.is_absolute():
                if folder is not None:
                    path = folder / path
                if not path.is_absolute():
                    if base is None:
                        raise ValueError(f"task {self.name!r}: file {path} is relative; pass data.glue_dir "
                                         "(the folder it is relative to) or give an absolute path")
                    path = base / path
            if not path.is_file():
                hint = "; leave data.glue_dir unset to load it from the hub" if self.hub else ""
                raise FileNotFoundError(f"task {self.name!r}: file {path} not found (split {key!r}){hint}")
            paths[key] = path
        return paths

    def file_format(self, path: Path) -> str:
        kind = (self.local or {}).get("format") or FORMATS.get(path.suffix.lower())
        if kind not in FORMATS.values():
            raise ValueError(f"{path}: unknown file format {kind or path.suffix!r}; valid formats: "
                             f"{', '.join(sorted(set(FORMATS.values())))} (set local.format)")
        return kind

    @property
    def has_header(self) -> bool:
        header = (self.local or {}).get("header")
        return True if header is None else bool(header)

    def read_columns(self, path: Path, jsonl_rows: int = 20) -> list[str]:
        """A file's column names from its header (the first rows of a JSONL file, a parquet file's schema)."""
        kind = self.file_format(path)
        if kind == "parquet":
            import pyarrow.parquet as pq

            return list(pq.read_schema(path).names)
        if kind == "jsonl":
            names = {}
            with open(path, encoding="utf-8-sig") as handle:
                for line in itertools.islice((line for line in handle if line.strip()), jsonl_rows):
                    try:
                        record = json.loads(line)
                    except ValueError:
                        break  # reading the whole file names the bad line
                    if not isinstance(record, dict):
                        break
                    names.update(dict.fromkeys(record))
            return list(names)
        if not self.has_header:
            return list((self.local or {}).get("columns") or [])
        with open(path, encoding="utf-8-sig", newline="") as handle:
            quoting = csv.QUOTE_NONE if kind == "tsv" else csv.QUOTE_MINIMAL
            first = next(csv.reader(handle, delimiter="\t" if kind == "tsv" else ",", quoting=quoting), None)
        return list(first or [])

    def missing_columns(self, source: str, names: list[str], rename: dict | None = None) -> str | None:
        """A message naming the columns ``names`` (a file's own) lack for the task, in the file's names and
        in the task's names after renaming (``rename``: the task's local.rename unless given); None when
        nothing is missing."""
        rename = self.rename if rename is None else rename
        renamed = [rename.get(n, n) for n in names]
        wanted = self.wanted_columns
        missing = [w for w in wanted if w not in renamed]
        if not missing:
            return None
        back = {new: old for old, new in rename.items()}
        lacking = ", ".join(back.get(m, m) + (f" (the task's {m!r} after local.rename)" if m in back else "")
                            for m in missing)
        message = (f"{source} lacks column(s) {lacking}: in the file's own names, task {self.name!r} expects "
                   f"columns {[back.get(w, w) for w in wanted]}, found {list(names)}")
        if rename:
            message += f"; in the task's names (after local.rename), it needs {wanted}, found {renamed}"
        return message

    def check_columns(self, base: Path | None) -> None:
        """Read each local file's header: ConfigError when a column the task needs is missing."""
        for path in self.local_files(base).values():
            names = self.read_columns(path)
            if names:  # an empty file is reported when it is read
                problem = self.missing_columns(str(path), names)
                if problem:
                    raise ConfigError(problem)
