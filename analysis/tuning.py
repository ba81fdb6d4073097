"""Tuning sensitivity (Dodge et al. 2019, "Show your work"): how good a variant's best selection score is
expected to be after n tuning runs.

    table = analysis.tuning.sensitivity_table(analysis.load_results("results/second_edition/tuning"))
    fig = analysis.tuning.plot_tuning_sensitivity(df, "mrpc")

A tuning cell is a task and a configuration whose runs differ in their learning rate (``lr``, with
``head_lr``): the points of a tuning grid, each one run at one seed. Its N runs' selection scores, in
order v(1) ≤ ... ≤ v(N), give the expected best of n runs drawn at random from them (with replacement,
Dodge et al.'s estimator):

    E[best of n] = Σ_i v(i) · ((i / N)^n - ((i - 1) / N)^n)

At n = 1 that is the mean over the grid; it rises to the best run as n grows. A variant that needs a
lucky rate shows it: its curve starts far below its best (a large "best - mean"), so a study that
tuned it with fewer runs, or on a grid placed a little differently, would have reported it worse. The
grid here is not a random search: read n as "a random n of these grid points".
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .plots import NoDataError, config_label, new_figure, variant_color
from .tables import default_grouping, format_number, ok_runs, ordered_tasks, sorted_rows

#: the settings a tuning grid varies (a tuning cell is everything else)
TUNED_SETTINGS = ("lr", "head_lr")
#: the numbers of tuning runs the table shows (and "all N")
SHOWN_RUNS = (1, 2, 3, 5)


def expected_best(scores, runs: int) -> float:
    """E[best of ``runs`` draws with replacement from ``scores``] (NaNs left out); NaN without scores."""
    values = np.sort(np.asarray(scores, float)[np.isfinite(np.asarray(scores, float))])
    if values.size == 0 or runs < 1:
        return np.nan
    share = np.arange(values.size + 1) / values.size
    return float(np.sum(values * (share[1:] ** runs - share[:-1] ** runs)))


def tuning_cells(df: pd.DataFrame, metric: str = "selection_score") -> list[tuple[str, list[str], pd.DataFrame]]:
    """(task, grouping keys, runs) of every tuning cell: the ok runs with a ``metric`` of one task and
    configuration (``default_grouping`` without the tuned settings) that ran at two or more learning
    rates."""
    runs = ok_runs(df)
    if runs.empty or metric not in runs or "lr" not in runs:
        return []
    runs = runs[pd.to_numeric(runs[metric], errors="coerce").notna()]
    keys = [key for key in default_grouping(runs) if key not in TUNED_SETTINGS]
    cells = []
    for task in ordered_tasks(runs["task"].dropna()):
        on_task = sorted_rows(runs[runs["task"] == task], keys, runs)
        for _, cell in on_task.groupby(keys, dropna=False, sort=False):
            if cell["lr"].nunique() >= 2:
                cells.append((task, keys, cell))
    return cells


def sensitivity_table(df: pd.DataFrame, metric: str = "selection_score", scale: float = 100) -> pd.DataFrame:
    """One row per tuning cell: its runs N, its rates, the expected best ``metric`` ×``scale`` of n runs
    for n in SHOWN_RUNS (up to N; "–" beyond), of all N, the best run and best - mean. Empty when the
    records hold no tuning cell."""
    rows = []
    for task, keys, cell in tuning_cells(df, metric):
        scores = scale * cell[metric].to_numpy(float)
        row = {"task": task, "configuration": config_label(cell.iloc[0], keys), "runs": len(scores),
               "rates": cell["lr"].nunique()}
        for runs in SHOWN_RUNS:
            row[f"best of {runs}"] = format_number(expected_best(scores, runs), 1) if runs <= len(scores) else "–"
        row["best of all N"] = format_number(expected_best(scores, len(scores)), 1)
        row["best run"] = format_number(scores.max(), 1)
        row["best - mean"] = format_number(scores.max() - scores.mean(), 1)
        rows.append(row)
    return pd.DataFrame(rows)


def sensitivity_curves(df: pd.DataFrame, task: str, metric: str = "selection_score",
                       scale: float = 100) -> list[tuple[pd.Series, np.ndarray, np.ndarray]]:
    """Per tuning cell of ``task``: (its first run, the numbers of runs 1..N, E[best of n] ×``scale``)."""
    curves = []
    for cell_task, _, cell in tuning_cells(df, metric):
        if cell_task == task:
            scores = scale * cell[metric].to_numpy(float)
            runs = np.arange(1, len(scores) + 1)
            curves.append((cell.iloc[0], runs, np.array([expected_best(scores, n) for n in runs])))
    return curves


def plot_tuning_sensitivity(df: pd.DataFrame, task: str, metric: str = "selection_score") -> Figure:
    """Expected best selection score ×100 against the number of tuning runs, one line per tuning cell."""
    curves = sensitivity_curves(df, task, metric)
    if not curves:
        raise NoDataError(f"no tuning runs on {task} (no configuration ran at two or more learning rates)")
    keys = tuning_cells(df, metric)[0][1]
    fig, (ax,) = new_figure()
    runs = ok_runs(df)
    for first, counts, best in curves:
        ax.plot(counts, best, marker="o", color=variant_color(first["variant"], runs), label=config_label(first, keys))
    ax.set_xlabel("tuning runs (a random n of the grid's points)")
    ax.set_ylabel("expected best selection score ×100")
    ax.set_title(f"{task}: tuning sensitivity (Dodge et al. 2019)", fontsize=10)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.legend(fontsize=8, loc="lower right")
    return fig
