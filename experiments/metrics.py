"""Task metrics: the official GLUE ones, through the `evaluate` module shipped in experiments/glue_metric.

    scores = compute(task, logits, labels)                   # {'accuracy': 0.91, 'f1': 0.93}
    main_score(task, scores)                                 # the headline number (task.main_metric)

For a task with several evaluation splits (MNLI), pass ``split=``: the keys then carry the split's
suffix (``accuracy_matched``, ``accuracy_mismatched``); ``compute_splits`` does every split at once.
"""
from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

import numpy as np

from .data import plain
from .task_schema import split_suffix

METRIC_DIR = Path(__file__).resolve().parent / "glue_metric"


@lru_cache(maxsize=None)
def load_metric(config_name: str):
    """The GLUE metric for one config, loaded from the project's own module (works offline)."""
    import evaluate

    from .glue_metric.glue_metric import CONFIGS

    if config_name not in CONFIGS:
        raise ValueError(f"unknown metric {config_name!r}; valid: {', '.join(CONFIGS)}")
    return evaluate.load(str(METRIC_DIR), config_name, keep_in_memory=True)


def to_predictions(task: dict, predictions) -> np.ndarray:
    """Class indices from logits (N, C) (arg-max here), or class indices (N,) as they are; scores (N,) or
    (N, 1) for regression."""
    values = np.asarray(predictions)
    if int(task["num_labels"]) == 1:
        if values.ndim == 2 and values.shape[1] == 1:
            values = values[:, 0]
        if values.ndim != 1:
            raise ValueError(f"regression task {task['name']!r} needs predictions of shape (N,) or (N, 1), "
                             f"got {values.shape}")
        return values.astype(np.float64)
    if values.ndim == 2:
        if values.shape[1] != int(task["num_labels"]):
            raise ValueError(f"task {task['name']!r} has {task['num_labels']} labels but the logits have "
                             f"shape {values.shape}")
        return values.argmax(axis=1)
    if values.ndim == 1 and np.issubdtype(values.dtype, np.integer):
        return values
    raise ValueError(f"task {task['name']!r} needs logits of shape (N, {task['num_labels']}) or class indices "
                     f"of shape (N,), got {values.dtype} {values.shape}")


def compute(task, predictions, references, split: str | None = None) -> dict[str, float]:
    """The task's GLUE metrics. ``predictions``: logits (N, C) or class indices (N,); scores for
    regression. ``references``: the gold labels."""
    task = plain(task)
    predicted = to_predictions(task, predictions)
    gold = np.asarray(references)
    if gold.shape != predicted.shape:
        raise ValueError(f"{len(predicted)} predictions but references of shape {gold.shape}")
    if len(gold) == 0:
        raise ValueError("no predictions to score")
    metric = load_metric(task["metric"])
    scores = metric.compute(predictions=predicted, references=gold)
    suffix = split_suffix(task, split)
    return {f"{name}{suffix}": float(value) for name, value in scores.items()}


def compute_splits(task, outputs: dict) -> dict[str, float]:
    """``outputs``: {split: (predictions, references)}; all the metrics in one dict."""
    scores = {}
    for split, (predictions, references) in outputs.items():
        scores.update(compute(task, predictions, references, split=split))
    return scores


def main_score(task, metrics: dict) -> float:
    """The task's headline number, ``metrics[task.main_metric]``."""
    task = plain(task)
    name = task["main_metric"]
    if name not in metrics:
        raise ValueError(f"main metric {name!r} of task {task['name']!r} is not among the metrics computed: "
                         f"{', '.join(sorted(metrics)) or 'none'}")
    value = float(metrics[name])
    if math.isnan(value):
        raise ValueError(f"main metric {name!r} of task {task['name']!r} is NaN")
    return value


def constant_prediction_loss(task, labels) -> float:
    """The training loss of the best constant predictor on ``labels``, in the model's loss units: the
    label entropy in nats (cross-entropy of predicting the class frequencies) for classification, the
    label variance (mean squared error of predicting the mean) for regression."""
    task = plain(task)
    values = np.asarray(labels, dtype=np.float64)
    if len(values) == 0:
        raise ValueError("no labels: the constant-prediction loss needs at least one training label")
    if int(task["num_labels"]) == 1:
        return float(values.var())
    frequencies = np.bincount(values.astype(np.int64), minlength=int(task["num_labels"])) / len(values)
    frequencies = frequencies[frequencies > 0]
    return float(-(frequencies * np.log(frequencies)).sum())
