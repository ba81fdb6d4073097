"""Result records: one JSON file per configuration, written atomically.

A record lives at ``<results dir>/runs/<config hash>.json`` (``RunConfig.config_hash``). It is written once, at the end of a run,
to a temporary file in the same folder and then renamed over the final name (``os.replace`` is atomic
on POSIX), so a reader sees either the previous record or the new one, never half of one; a run killed
at any moment leaves at most a stray ``.tmp`` file, which readers ignore. Parallel runs write
different files, so nothing is lost between them.
"""
from __future__ import annotations

import datetime as dt
import json
import subprocess
from pathlib import Path

from variants.files import UMASK, write_atomically  # noqa: F401 (UMASK: the mode records get)

RUNS_FOLDER = "runs"
PREDICTIONS_SUFFIX = ".predictions.parquet"


def record_path(results_dir, run_hash: str) -> Path:
    return Path(results_dir) / RUNS_FOLDER / f"{run_hash}.json"


def read_record(path) -> dict | None:
    """The record at ``path``, or None if there is none or it cannot be read."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def has_successful_record(results_dir, run_hash: str) -> bool:
    record = read_record(record_path(results_dir, run_hash))
    return bool(record) and record.get("status") == "ok"


def write_record(results_dir, record: dict) -> Path:
    """Write ``record`` atomically; a failed attempt never replaces an earlier successful one."""
    path = record_path(results_dir, record["config_hash"])
    if record.get("status") != "ok" and has_successful_record(results_dir, record["config_hash"]):
        return path
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, json.dumps(record, indent=1, default=str))
    except OSError as error:  # a full disk, a read-only folder: say which file
        raise OSError(error.errno, f"could not write the record {path}: {error.strerror or error}") from error
    return path


def predictions_path(results_dir, run_hash: str) -> Path:
    return Path(results_dir) / RUNS_FOLDER / f"{run_hash}{PREDICTIONS_SUFFIX}"


def predictions_table(outputs: dict, orders: dict, num_labels: int):
    """A pyarrow table of per-example predictions: columns ``split`` (str), ``example`` (int64: the row's
    position in its split as loaded), ``label`` and ``prediction`` (int64 classes, or float64 scores for
    regression) and, for classification, ``logit_0 .. logit_{k-1}`` (float32).

    ``outputs``: {split: (logits (N, C), labels (N,))} in loader order; ``orders``: {split: the position
    in the split of each output row}, which undoes the eval loaders' sorting by length."""
    import numpy as np
    import pyarrow as pa

    parts = []
    for split, (logits, labels) in outputs.items():
        order = np.asarray(orders[split], dtype=np.int64)
        back = np.argsort(order, kind="stable")
        logits, labels = np.asarray(logits, dtype=np.float32)[back], np.asarray(labels)[back]
        columns = {"split": pa.array([split] * len(order), pa.string()), "example": pa.array(order[back])}
        if int(num_labels) == 1:
            columns["label"] = pa.array(labels.astype(np.float64))
            columns["prediction"] = pa.array(logits.reshape(len(order), -1)[:, 0].astype(np.float64))
        else:
            columns["label"] = pa.array(labels.astype(np.int64))
            columns["prediction"] = pa.array(logits.argmax(axis=1).astype(np.int64))
            columns.update({f"logit_{k}": pa.array(logits[:, k]) for k in range(logits.shape[1])})
        parts.append(pa.table(columns))
    return pa.concat_tables(parts)


def write_predictions(results_dir, run_hash: str, table) -> Path:
    """Write a predictions table atomically, beside the record (before it: the record is the commit point)."""
    import pyarrow.parquet as pq

    path = predictions_path(results_dir, run_hash)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_atomically(path, lambda tmp: pq.write_table(table, tmp, compression="zstd"))


def git_commit(folder) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
