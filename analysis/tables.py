"""Read result records into one DataFrame and summarize them as tables.

``load_results`` gives one row per run. ``summarize`` gives the numbers (mean, std, median over seeds
for every configuration and task); ``variant_task_table`` lays them out like Table 2 of the LoRA paper
(rows = methods, a trainable-parameters column, one column per task, an Avg. column) and
``to_markdown`` prints any table as markdown.
"""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from .stats import mean_interval_half_width

#: environment variable naming the results folder that ``load_results()`` reads by default
RESULTS_DIR_VARIABLE = "RESULTS_DIR"
DEFAULT_RESULTS_DIR = Path(__file__).resolve().parent.parent / "results"

#: GLUE tasks in the LoRA paper's column order (others follow, alphabetically)
TASK_ORDER = ("mnli", "sst2", "mrpc", "cola", "qnli", "qqp", "rte", "stsb", "wnli")
#: settings that tell configurations apart; the table's default rows split on those that vary
GROUPING_CANDIDATES = ("study", "model", "pooling", "rank", "alpha", "target_modules", "lr", "head_lr", "epochs",
                       "warmup", "max_length", "precision")
#: every configuration field of a record (used to explain runs that look like duplicates)
CONFIG_FIELDS = ("study", "experiment", "model", "model_name_or_path", "pooling", "rank", "alpha", "target_modules",
                 "dropout", "lr", "head_lr", "epochs", "max_steps", "batch_size", "max_length", "warmup",
                 "weight_decay", "max_train_samples", "precision")
RECORD_FIELDS = ("config_hash", "status", "error", "timestamp", "git_commit", "experiment", "variant",
                 "baseline", "task", *CONFIG_FIELDS[2:], "seed", "main_metric", "main_score", "eval_loss",
                 "trainable_params", "total_params", "adapter_bytes", "train_seconds", "steps",
                 "seconds_per_step", "peak_memory_mb", "device", "learning_curve", "config")
STATS = ("mean±std", "mean", "mean±ci", "median")  # "mean" is short for "mean±std"


# --------------------------------------------------------------------------------------------- loading
def load_results(path: str | os.PathLike | None = None) -> pd.DataFrame:
    """One row per run from every ``runs/*.json`` under ``path``.

    ``path`` is a results folder (one that holds ``runs/``), any parent of such folders, or a ``runs/``
    folder itself. By default it is ``$RESULTS_DIR`` when set, else the repository's ``results/``.
    Columns: every record field, ``metric.<name>`` for each entry of ``metrics``, ``provenance.<key>``
    for each entry of ``provenance`` (``provenance.torch``, ``provenance.data_sha256.train``; absent in
    records made before it existed), ``study`` (the folder holding ``runs/``, relative to ``path``)
    and ``path`` (the file). ``learning_curve`` and ``config`` stay Python objects. Files that cannot be read are skipped with a warning naming them.
    """
    root = Path(path if path is not None else os.environ.get(RESULTS_DIR_VARIABLE) or DEFAULT_RESULTS_DIR)
    if not root.is_dir():
        raise FileNotFoundError(f"results folder {str(root)!r} does not exist (or is not a folder)")
    files = sorted(root.glob("*.json")) if root.name == "runs" else sorted(root.glob("**/runs/*.json"))
    rows = []
    for file in files:
        try:
            record = json.loads(file.read_text(encoding="utf-8"))
            if not isinstance(record, dict):
                raise ValueError(f"expected a JSON object, found {type(record).__name__}")
        except (OSError, UnicodeDecodeError, ValueError) as error:
            warnings.warn(f"skipping unreadable result file {file}: {error}", stacklevel=2)
            continue
        rows.append(_flatten(record, study=_study_name(file, root), file=file))
    columns = ["study", *RECORD_FIELDS, "path"]
    frame = pd.DataFrame(rows)
    for column in columns:
        if column not in frame:
            frame[column] = None if column in ("learning_curve", "config") else np.nan
    metric_columns = sorted(c for c in frame.columns if c.startswith("metric."))
    extra = [c for c in frame.columns if c not in columns and c not in metric_columns]
    frame = frame[[*columns[:-1], *metric_columns, *extra, "path"]]
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True, errors="coerce", format="ISO8601")
    frame["baseline"] = baseline_flags(frame)
    return frame.reset_index(drop=True)


def load_many(folders) -> pd.DataFrame:
    """``load_results`` of several folders as one table (each row's ``study`` names its folder)."""
    frames = [load_results(folder) for folder in folders]
    return pd.concat(frames, ignore_index=True) if frames else load_results(folders)


def _study_name(file: Path, root: Path) -> str:
    """The folder that holds ``runs/``, relative to ``root`` (``root``'s own name when it is that folder)."""
    results_folder = file.parent.parent
    if root.name == "runs" or results_folder == root:
        return results_folder.resolve().name
    return results_folder.relative_to(root).as_posix()


def _flatten(record: dict, study: str, file: Path) -> dict:
    row = {key: value for key, value in record.items() if key not in ("metrics", "provenance")}
    metrics = record.get("metrics") or {}
    if isinstance(metrics, dict):
        row.update({f"metric.{name}": value for name, value in metrics.items()})
    row.update(_dotted(record.get("provenance") or {}, "provenance."))
    row["learning_curve"] = record.get("learning_curve") or []
    row.update(study=study, path=str(file))
    return row


def _dotted(values: dict, prefix: str) -> dict:
    """Nested dicts as flat columns: {"data_sha256": {"train": h}} -> {"<prefix>data_sha256.train": h}."""
    flat = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(_dotted(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


# ------------------------------------------------------------------------------------------- summaries
def ok_runs(df: pd.DataFrame) -> pd.DataFrame:
    """Only the runs that finished (``status == "ok"``)."""
    return df[df["status"] == "ok"]


def default_grouping(df: pd.DataFrame) -> list[str]:
    """``variant`` plus the settings among ``GROUPING_CANDIDATES`` that vary within some variant on one
    task. A setting that differs only from task to task (a learning rate tuned per task, as in a final
    table) is part of that variant's cell, not a second configuration, so it does not split rows."""
    runs = ok_runs(df)
    keys = ["variant"]
    cells = ["variant", "task"] if "task" in runs else ["variant"]
    for column in GROUPING_CANDIDATES:
        if column in runs and (runs.groupby(cells)[column].nunique(dropna=False) > 1).any():
            keys.append(column)
    return keys


def metric_column(df: pd.DataFrame, metric: str) -> str:
    """The column holding ``metric``: ``main_score``, any column, or a bare metric name (``f1``)."""
    for candidate in (metric, f"metric.{metric}"):
        if candidate in df.columns:
            return candidate
    choices = ["main_score", *(c.removeprefix("metric.") for c in df.columns if c.startswith("metric."))]
    raise ValueError(f"unknown metric {metric!r}; choose one of {choices}")


def score_name(column: str, main_metrics) -> str | pd.Series:
    """How tables and figures name the score in ``column``: the task's main metric(s) for
    ``main_score`` (dev), the same marked as the selection (or test) split's for ``selection_score``
    (``test_score``), else the metric's own name."""
    if column == "main_score":
        return main_metrics
    if column in ("selection_score", "test_score"):
        return main_metrics + f" on the {column.removesuffix('_score')} split"
    return column.removeprefix("metric.")


def summarize(df: pd.DataFrame, by: list[str] | str | None = None, metric: str = "main_score"
              ) -> pd.DataFrame:
    """Per configuration (``by``) and task: number of seeds, mean, std (ddof=1), ``ci`` (half the
    width of the 95 % t interval for the mean over seeds), median of ``metric``.

    Only ``status == "ok"`` runs count. ``by`` defaults to :func:`default_grouping`. Also gives the
    median ``trainable_params`` and the task's ``main_metric``. Warns when a cell holds two runs with
    the same seed: they differ in a setting that is not in ``by`` and would be averaged together.
    """
    keys = grouping_keys(df, by)
    column = metric_column(df, metric)
    runs = ok_runs(df)
    if runs.empty:
        raise ValueError("no successful runs (status == 'ok') to summarize")
    rows, pooled = [], {}
    for values, cell in runs.groupby([*keys, "task"], dropna=False, sort=False):
        where = dict(zip([*keys, "task"], values))
        if "seed" in cell and cell["seed"].duplicated().any():
            cell_name = ", ".join(f"{key}={_plain(value)}" for key, value in where.items())
            pooled[cell_name] = [c for c in CONFIG_FIELDS if c in cell and cell[c].astype(str).nunique() > 1]
        scores = cell[column].astype(float).dropna()
        rows.append({**where,
                     "main_metric": ", ".join(sorted(cell["main_metric"].dropna().astype(str).unique())),
                     "n": len(scores), "mean": scores.mean(), "std": scores.std(ddof=1),
                     "ci": mean_interval_half_width(scores), "median": scores.median(),
                     "trainable_params": cell["trainable_params"].astype(float).median()})
    if pooled:
        differing = sorted({c for columns in pooled.values() for c in columns})
        warnings.warn(f"{len(pooled)} cell(s) average runs that share a seed, e.g. ({next(iter(pooled))}); "
                      f"they differ in {differing or 'no recorded setting'}: add these to by=",
                      stacklevel=2)
    summary = pd.DataFrame(rows)
    summary["main_metric"] = score_name(column, summary["main_metric"])
    return sorted_rows(summary, keys, runs).reset_index(drop=True)


def _plain(value):
    """numpy scalars as plain Python values (for messages)."""
    return value.item() if isinstance(value, np.generic) else value


def grouping_keys(df: pd.DataFrame, by) -> list[str]:
    """The columns that make a configuration: ``by`` (one column name or a list), or
    ``default_grouping(df)`` when it is None. Raises ValueError naming columns ``df`` lacks."""
    keys = default_grouping(df) if by is None else [by] if isinstance(by, str) else list(by)
    missing = [key for key in keys if key not in df.columns]
    if missing:
        raise ValueError(f"unknown grouping column(s) {missing}; choose among {list(df.columns)}")
    return keys


def sorted_rows(frame: pd.DataFrame, keys: list[str], runs: pd.DataFrame | None = None) -> pd.DataFrame:
    """Rows in reading order: variants as ``ordered_variants(runs)`` says (``runs``: the records the rows
    come from, default ``frame``), tasks as in TASK_ORDER, numbers ascending."""
    columns = [key for key in [*keys, "task"] if key in frame]
    records = frame if runs is None else runs
    variant_order = {v: i for i, v in enumerate(ordered_variants(records))} if "variant" in records else {}

    def sort_key(column: pd.Series) -> pd.Series:
        if column.name == "variant":
            return column.map(variant_order)
        if column.name == "task":
            return column.map({t: i for i, t in enumerate(ordered_tasks(column.dropna()))})
        return column if pd.api.types.is_numeric_dtype(column) else column.astype(str)

    return frame.sort_values(columns, key=sort_key, kind="stable") if columns else frame


def _task_rank(task) -> tuple:
    name = str(task).lower().replace("-", "").replace("_", "")
    return (TASK_ORDER.index(name) if name in TASK_ORDER else len(TASK_ORDER), name)


def ordered_tasks(tasks) -> list:
    return sorted(set(tasks), key=_task_rank)


def baseline_flags(runs: pd.DataFrame) -> pd.Series:
    """Whether each run is a baseline: its record's ``baseline`` field; for a record from before that
    field, whether it has no rank (the runner blanks rank, alpha and targets of a baseline)."""
    recorded = runs["baseline"] if "baseline" in runs else pd.Series(None, index=runs.index, dtype=object)
    no_rank = runs["rank"].isna() if "rank" in runs else pd.Series(False, index=runs.index)
    return pd.Series([bool(b) if isinstance(b, (bool, np.bool_)) else bool(n) for b, n in zip(recorded, no_rank)],
                     index=runs.index, dtype=bool)


def baseline_variants(runs: pd.DataFrame) -> set:
    """The variants whose runs are baselines (see ``baseline_flags``)."""
    if "variant" not in runs or runs.empty:
        return set()
    return set(runs.loc[baseline_flags(runs), "variant"].dropna())


def ordered_variants(runs) -> list:
    """Variants in reading order, from the records alone: baselines first, then the adapters, each by
    their median trainable parameters (most first), ties by name. Given only names (no records), by name."""
    if not isinstance(runs, pd.DataFrame):
        return sorted(set(runs), key=str)
    baselines = baseline_variants(runs)
    if "trainable_params" in runs:
        params = pd.to_numeric(runs["trainable_params"], errors="coerce").groupby(runs["variant"]).median()
    else:
        params = pd.Series(dtype=float)

    def key(variant):
        count = params.get(variant, np.nan)
        return (variant not in baselines, -count if pd.notna(count) else 0.0, str(variant))

    return sorted(set(runs["variant"].dropna()), key=key)


# ------------------------------------------------------------------------------------------------ tables
def variant_task_table(df: pd.DataFrame, stat: str = "mean±std", by: list[str] | str | None = None,
                       metric: str = "main_score", scale: float = 100, decimals: int = 1) -> pd.DataFrame:
    """The LoRA paper's Table 2 layout: one row per configuration, one column per task, Avg. last.

    Cells are ``metric`` x ``scale`` over seeds: ``"84.2 ± 0.6"`` (mean ± sample std; the mean alone
    for a single seed) with ``stat="mean±std"`` (or ``"mean"``), the mean ± half the width of its 95 %
    t interval over seeds with ``stat="mean±ci"``, or ``"84.2"`` with ``stat="median"``.
    A cell with fewer seeds than the table's fullest cell says how many: ``"84.2 ± 0.6 (n=2)"``.
    Avg. is the mean over tasks of the cells' means (or medians); "–" when a row lacks some task.
    Rows are ``by`` (default: variant, plus rank/alpha/target_modules/... where they vary); baselines
    (records with ``baseline: true``) show no rank, alpha or target modules.
    """
    if stat not in STATS:
        raise ValueError(f"unknown stat {stat!r}; choose one of {list(STATS)}")
    keys = grouping_keys(df, by)
    summary = summarize(df, by=keys, metric=metric)
    baselines = baseline_variants(df)
    centre = "median" if stat == "median" else "mean"
    tasks = ordered_tasks(summary["task"])
    most_seeds = summary["n"].max()
    headers = {task: _task_header(task, summary[summary["task"] == task]["main_metric"]) for task in tasks}
    rows = []
    for values, config in summary.groupby(keys, dropna=False, sort=False):
        values = values if isinstance(values, tuple) else (values,)
        row = {key: _format_key(key, value, config, baselines) for key, value in zip(keys, values)}
        row["trainable params"] = _format_count(config["trainable_params"].median())
        centres = {}
        for task in tasks:
            cell = config[config["task"] == task]
            seeds = 0 if cell.empty else cell["n"].iloc[0]
            if seeds == 0:
                row[headers[task]] = "–"
                continue
            centres[task] = cell[centre].iloc[0] * scale
            spread = cell["ci" if stat == "mean±ci" else "std"].iloc[0] * scale
            row[headers[task]] = _format_cell(centres[task], None if stat == "median" else spread,
                                              decimals)
            if seeds < most_seeds:
                row[headers[task]] += f" (n={seeds})"
        complete = len(centres) == len(tasks)
        row["Avg."] = f"{np.mean(list(centres.values())):.{decimals}f}" if complete else "–"
        rows.append(row)
    return pd.DataFrame(rows)


def cost_table(df: pd.DataFrame, by: list[str] | str | None = None) -> pd.DataFrame:
    """Median cost per configuration over all its ok runs (all tasks).

    Columns: runs, trainable parameters, adapter file size, seconds per step, train time, peak memory.
    """
    keys = grouping_keys(df, by)
    runs = ok_runs(df)
    if runs.empty:
        raise ValueError("no successful runs (status == 'ok') to summarize")
    baselines = baseline_variants(runs)
    rows = []
    for values, config in sorted_rows(runs, keys).groupby(keys, dropna=False, sort=False):
        values = values if isinstance(values, tuple) else (values,)
        row = {key: _format_key(key, value, config, baselines) for key, value in zip(keys, values)}
        median = config[["trainable_params", "adapter_bytes", "seconds_per_step", "train_seconds",
                         "peak_memory_mb"]].astype(float).median()
        row.update({"runs": len(config), "trainable params": _format_count(median["trainable_params"]),
                    "adapter MB": format_number(median["adapter_bytes"] / 2**20, 2),
                    "s / step": format_number(median["seconds_per_step"], 3),
                    "train s": format_number(median["train_seconds"], 1),
                    "peak memory MB": format_number(median["peak_memory_mb"], 0)})
        rows.append(row)
    return pd.DataFrame(rows)


def _task_header(task, main_metrics: pd.Series) -> str:
    names = ", ".join(sorted(set(main_metrics.dropna().astype(str))))
    return f"{task} ({names})" if names else str(task)


def _format_key(key: str, value, rows: pd.DataFrame, baselines: set) -> str:
    if (key in ("rank", "alpha", "target_modules") and "variant" in rows
            and rows["variant"].isin(baselines).all()):
        return "–"
    if isinstance(value, (float, np.floating)) and not np.isnan(value) and float(value).is_integer():
        return str(int(value))
    if isinstance(value, float) and np.isnan(value):
        return "–"
    return str(value)


def _format_cell(centre: float, spread: float | None, decimals: int) -> str:
    text = f"{centre:.{decimals}f}"
    if spread is not None and not np.isnan(spread):
        text += f" ± {spread:.{decimals}f}"
    return text


def _format_count(count: float) -> str:
    """Parameter counts the way papers print them: 22.7M, 148.6K, 770."""
    if count is None or np.isnan(count):
        return "–"
    if count >= 1e6:
        return f"{count / 1e6:.1f}M"
    if count >= 1e3:
        return f"{count / 1e3:.1f}K"
    return str(int(count))


def format_number(value: float, decimals: int) -> str:
    """``value`` with ``decimals`` decimals, or '–' when it is missing (None or NaN)."""
    return "–" if value is None or np.isnan(value) else f"{value:.{decimals}f}"


def to_markdown(table: pd.DataFrame, index: bool = False) -> str:
    """A GitHub markdown table (text columns left-aligned, numeric ones right-aligned)."""
    frame = table.reset_index() if index else table
    header = [str(column) for column in frame.columns]
    body = [[_markdown_cell(value) for value in row] for row in frame.itertuples(index=False)]
    numeric = [pd.api.types.is_numeric_dtype(frame[c]) or _looks_numeric(frame[c]) for c in frame.columns]
    rule = ["---:" if is_numeric else ":---" for is_numeric in numeric]
    lines = [header, rule, *body]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in lines)


def _markdown_cell(value) -> str:
    if isinstance(value, float):
        value = "–" if np.isnan(value) else f"{value:g}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def _looks_numeric(column: pd.Series) -> bool:
    """Formatted numbers such as "84.2 ± 0.6 (n=2)", "22.7M" or "–" count as numeric (right-aligned)."""
    def is_number(text: str) -> bool:
        text = text.split(" (n=")[0].split(" ± ")[0].rstrip("MK")
        try:
            float(text)
            return True
        except ValueError:
            return text == "–"
    values = column.astype(str)
    return bool(len(values)) and values.map(is_number).all() and not (values == "–").all()
