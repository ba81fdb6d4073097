"""The GLUE metrics, once: which scores each GLUE metric set reports, computed by ``analysis.stats.score``.

Training (``experiments``) scores its runs with these functions and the analysis rescores predictions
with the same ones, so a record's metrics and a re-analysis of its predictions agree to the last digit.
numpy only: importing this module imports neither torch nor pandas' plotting.

    glue_scores("mrpc", labels, predictions)     # {'accuracy': 0.81, 'f1': 0.87}
"""
from __future__ import annotations

import math

import numpy as np

#: a task's ``metric`` (its GLUE metric set) -> the scores it reports, in order
GLUE_METRICS = {
    "cola": ("matthews_correlation",),
    **{name: ("accuracy",) for name in ("sst2", "mnli", "mnli_matched", "mnli_mismatched", "qnli", "rte", "wnli")},
    "mrpc": ("accuracy", "f1"), "qqp": ("accuracy", "f1"),
    "stsb": ("pearson", "spearmanr"),
}
#: the metric sets of regression tasks (a score per example, num_labels 1)
REGRESSION_SETS = ("stsb",)


def glue_scores(metric_set: str, labels, predictions) -> dict[str, float]:
    """The scores of ``metric_set`` for class indices (or regression scores) ``predictions`` against
    ``labels``. A correlation that is undefined (a constant side, e.g. a model that predicts one value)
    counts as 0.0, as GLUE's own scorer and scikit-learn's Matthews correlation do."""
    from .stats import score  # scipy: loaded when something is scored, not when a task is checked

    if metric_set not in GLUE_METRICS:
        raise ValueError(f"unknown metric {metric_set!r}; valid: {', '.join(GLUE_METRICS)}")
    labels, predictions = np.asarray(labels), np.asarray(predictions)
    if len(labels) == 0:
        raise ValueError("no predictions to score")
    results = {}
    for name in GLUE_METRICS[metric_set]:
        value = score(name, labels, predictions)
        results[name] = 0.0 if math.isnan(value) else float(value)
    return results
