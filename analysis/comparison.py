"""Paired comparisons of variants from per-example predictions.

    df = analysis.load_results("results/my_study")
    predictions = analysis.load_predictions(df)          # or a folder; one row per (run, split, example)
    table = analysis.compare(df, predictions, reference="lora")
    print(analysis.to_markdown(analysis.format_comparison(table)))
    fig = analysis.plot_differences(table)               # forest plot of the differences and their CIs

``compare`` gives one row per task and configuration (other than the reference): the difference to
the reference ×100 with a 95 % interval from a paired hierarchical bootstrap (see
``stats.paired_bootstrap``), its two-sided bootstrap p-value, Holm-adjusted over the whole table, a
verdict, and collapse as its own endpoint (collapse rate with a Clopper–Pearson interval, means with
and without collapsed runs). The statistics themselves are plain numpy in ``analysis.stats``.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from . import stats
from .plots import config_label, variant_color
from .tables import DEFAULT_RESULTS_DIR, RESULTS_DIR_VARIABLE, grouping_keys, sorted_rows, load_results, \
    ok_runs, ordered_tasks, format_number

#: the columns of ``load_predictions`` before the logits
PREDICTION_COLUMNS = ("study", "config_hash", "split", "example", "label", "prediction")
#: verdicts ``compare`` gives
VERDICTS = ("better", "worse", "equivalent", "not resolved", "no predictions", "not comparable")
#: the record's own score for a split, used where the run has no predictions
RECORDED_SCORE = {"validation": "main_score", "selection": "selection_score"}


# -------------------------------------------------------------------------------------------- loading
def load_predictions(results: str | os.PathLike | pd.DataFrame | None = None) -> pd.DataFrame:
    """Every run's per-example predictions as one long DataFrame.

    ``results``: a results folder (as for ``load_results``; default ``$RESULTS_DIR`` or the repo's
    results/) or the DataFrame ``load_results`` returned (then exactly its runs are read). Each ok
    record names its sidecar in ``predictions_file`` (relative to its runs/ folder; default
    ``<config_hash>.predictions.parquet`` when that file exists). Columns: ``study``, ``config_hash``
    (together they name the record row), ``split``, ``example`` (position in the split), ``label``,
    ``prediction``, and ``logit_0 ...`` for classification (NaN for tasks with fewer classes). Runs
    without a sidecar are simply absent; a named but unreadable sidecar is skipped with a warning.
    """
    if isinstance(results, pd.DataFrame):
        runs = results
    else:
        runs = load_results(results if results is not None
                            else os.environ.get(RESULTS_DIR_VARIABLE) or DEFAULT_RESULTS_DIR)
    frames = []
    for run in ok_runs(runs).itertuples(index=False):
        file = _predictions_path(run)
        if file is None:
            continue
        try:
            frame = pd.read_parquet(file)
        except (OSError, ValueError, ImportError) as error:
            warnings.warn(f"skipping unreadable predictions file {file}: {error}", stacklevel=2)
            continue
        missing = [c for c in PREDICTION_COLUMNS[2:] if c not in frame]
        if missing:
            warnings.warn(f"skipping predictions file {file}: it lacks the column(s) {missing}", stacklevel=2)
            continue
        frames.append(frame.assign(study=run.study, config_hash=run.config_hash))
    if not frames:
        return pd.DataFrame({column: pd.Series(dtype=object if column in ("study", "config_hash", "split")
                                               else float) for column in PREDICTION_COLUMNS})
    predictions = pd.concat(frames, ignore_index=True)
    logits = sorted((c for c in predictions if c.startswith("logit_")), key=lambda c: int(c.split("_")[1]))
    return predictions[[*PREDICTION_COLUMNS, *logits]]


def _predictions_path(run) -> Path | None:
    if not isinstance(getattr(run, "path", None), str):
        return None
    folder = Path(run.path).parent
    named = getattr(run, "predictions_file", None)
    if isinstance(named, str) and named:
        return folder / named
    default = folder / f"{run.config_hash}.predictions.parquet"
    return default if default.is_file() else None


# ------------------------------------------------------------------------------------------- compare
def compare(df: pd.DataFrame, predictions: pd.DataFrame | None, reference: str | dict,
            split: str = "validation", margin: float = 1.5, n_boot: int = 4000, seed: int = 0,
            by: list[str] | str | None = None, level: float = 0.95, method: str = "t") -> pd.DataFrame:
    """One row per (task, configuration that is not the reference): the paired difference to the
    reference, in points (metric ×100).

    ``reference``: a variant name, or a dict of column values that picks the reference cells (e.g.
    ``{"variant": "lora", "rank": 8}``; then the other cells of that variant are compared too).
    Configurations (cells) are ``by``, default ``default_grouping(df)``, as in the results table. Each
    cell is compared with the reference cell of its task; when the reference has several cells there
    (e.g. a rank sweep), with the one that agrees with it on the most grouping settings (a tie gives a
    "not comparable" row that says which cells tie). Runs pair by seed; only seeds that both cells ran
    with predictions on ``split`` count (``n_seeds``), on the dev examples all of them share.

    Columns: the cell's grouping values, ``task``, ``baseline`` (the cell's record field), ``reference`` (the reference cell's label),
    ``metric``, ``n_seeds``, ``n_examples``, ``mean`` and ``mean_reference`` (×100, over all the cells'
    ok runs), ``difference`` (mean over paired seeds of variant - reference, ×100), ``ci_low``,
    ``ci_high`` (the ``level`` interval), ``p_value`` (two-sided, for "no difference"), ``p_holm``
    (Holm over every row with a p-value), ``standard_error`` and ``degrees_of_freedom`` (of the "t" method,
    ``stats.PairedBootstrap.t_parts``: ``stats.t_interval`` turns them into an interval at any level,
    whatever ``method`` is), ``detectable`` (the smallest true difference the test would
    find with 80 % power, ``stats.PairedBootstrap.detectable``), ``tost_equivalent`` (TOST within ±margin), ``verdict``,
    ``runs``, ``collapsed`` (runs judged collapsed, of ``collapse_known`` that could be judged),
    ``collapse_rate``, ``collapse_low``, ``collapse_high`` (Clopper–Pearson, ``level``),
    ``mean_without_collapsed`` and ``note``.

    ``method="t"`` (default): interval = difference ± t quantile × standard error, the standard error
    adding the seed-to-seed variance of the per-seed differences (/ seeds) and the bootstrap variance
    over dev examples, with Welch–Satterthwaite degrees of freedom; the p-value is the matching
    two-sided t p-value. ``method="percentile"``: the percentile interval of the hierarchical bootstrap
    (seeds and examples resampled) and its two-sided bootstrap p-value (``stats.bootstrap_p_value``).
    With 3-5 seeds the percentile interval is too narrow (see tests/test_stats.py), hence the default.

    Verdict: "better" / "worse" when the interval excludes 0 and p_holm < 1 - level; else
    "equivalent" when TOST at 1 - level per side puts the difference within ±``margin`` points (the
    90 % interval inside ±margin); else "not resolved". "no predictions" / "not comparable" rows say
    why in ``note``.
    """
    runs = ok_runs(df)
    if runs.empty:
        raise ValueError("no successful runs (status == 'ok') to compare")
    keys = grouping_keys(df, by)
    is_reference = _reference_mask(runs, reference)
    index = _PredictionIndex(predictions, split)
    rows = []
    for task in ordered_tasks(runs["task"].dropna()):
        task_runs = runs[runs["task"] == task]
        cells = [cell for _, cell in sorted_rows(task_runs, keys).groupby(keys, dropna=False, sort=False)]
        references = [cell for cell in cells if is_reference[cell.index].all()]
        for cell in cells:
            if is_reference[cell.index].any():
                continue
            rows.append(_compare_cell(cell, references, keys, task, index, split, margin, n_boot, seed, level,
                                      method))
    table = pd.DataFrame(rows)
    if table.empty:
        raise ValueError(f"nothing to compare with the reference {reference!r}: every successful run is "
                         f"a reference run")
    table["p_holm"] = stats.holm(table["p_value"])
    table["verdict"] = [_verdict(row, margin, level) for row in table.itertuples()]
    table.attrs.update(reference=reference, split=split, margin=margin, level=level, n_boot=n_boot,
                       method=method)
    return table


def _reference_mask(runs: pd.DataFrame, reference) -> pd.Series:
    if isinstance(reference, str):
        if reference not in set(runs["variant"]):
            raise ValueError(f"unknown reference variant {reference!r}; the results hold "
                             f"{sorted(runs['variant'].dropna().unique())}")
        return runs["variant"] == reference
    if not isinstance(reference, dict) or not reference:
        raise ValueError(f"reference must be a variant name or a dict of column values, got {reference!r}")
    unknown = [key for key in reference if key not in runs]
    if unknown:
        raise ValueError(f"unknown reference column(s) {unknown}; choose among {list(runs.columns)}")
    mask = rows_matching(runs, reference)
    if not mask.any():
        raise ValueError(f"no successful run matches the reference {reference}")
    return mask


def rows_matching(frame: pd.DataFrame, values: dict) -> pd.Series:
    """The rows of ``frame`` whose columns hold all of ``values`` (column -> value; columns must exist)."""
    mask = pd.Series(True, index=frame.index)
    for key, value in values.items():
        mask &= frame[key] == value
    return mask


class _PredictionIndex:
    """The predictions of one split, looked up per run (record row)."""

    def __init__(self, predictions: pd.DataFrame | None, split: str):
        self.groups = {}
        if predictions is None or predictions.empty:
            return
        chosen = predictions[predictions["split"] == split]
        keys = ["study", "config_hash"] if "study" in chosen else ["config_hash"]
        for key, frame in chosen.groupby(keys, sort=False):
            self.groups[key if len(keys) == 2 else key[0]] = frame.sort_values("example")
        self.with_study = len(keys) == 2

    def get(self, run) -> pd.DataFrame | None:
        if not self.groups:
            return None
        return self.groups.get((run["study"], run["config_hash"]) if self.with_study else run["config_hash"])


def _compare_cell(cell, references, keys, task, index, split, margin, n_boot, seed, level, method) -> dict:
    metric = _metric_of(cell)
    first = cell.iloc[0]
    row = {**{key: first[key] for key in keys}, "task": task, "baseline": bool(first.get("baseline", False)),
           "reference": "–", "metric": metric,
           "n_seeds": 0, "n_examples": 0, "mean": np.nan, "mean_reference": np.nan, "difference": np.nan,
           "ci_low": np.nan, "ci_high": np.nan, "p_value": np.nan, "standard_error": np.nan,
           "degrees_of_freedom": np.nan, "detectable": np.nan, "verdict": None, "tost_equivalent": False,
           "note": ""}
    scores, collapse = _run_scores(cell, metric, index, split)
    row.update(_collapse_summary(scores, collapse, level))
    reference, why = _matching_reference(cell, references, keys)
    if reference is None:
        return {**row, "verdict": "not comparable", "note": why}
    row["reference"] = config_label(reference.iloc[0], keys)
    reference_scores = _run_scores(reference, metric, index, split)[0]
    if np.isfinite(reference_scores).any():
        row["mean_reference"] = 100 * np.nanmean(reference_scores)
    duplicated = [name for name, c in (("this cell", cell), ("the reference", reference))
                  if c["seed"].duplicated().any()]
    if duplicated:
        return {**row, "verdict": "not comparable",
                "note": f"{' and '.join(duplicated)} hold(s) several runs with one seed: add the setting "
                        f"that differs to by="}
    paired = _paired_predictions(cell, reference, index, metric)
    if isinstance(paired[0], str):
        return {**row, "verdict": paired[0], "note": paired[1]}
    labels, variant, reference_predictions, row["note"] = paired
    result = stats.paired_bootstrap(metric, labels, variant, reference_predictions, n_boot=n_boot,
                                    seed=seed).scaled(100)
    low, high = result.interval(level, method)
    row["standard_error"], row["degrees_of_freedom"] = result.t_parts()
    row.update(n_seeds=result.n_seeds, n_examples=len(labels), difference=result.difference, ci_low=low,
               ci_high=high, p_value=result.p_value(method), detectable=result.detectable(level, method=method),
               tost_equivalent=result.equivalent(margin, alpha=1 - level, method=method))
    if result.n_seeds == 1:
        row["note"] = "; ".join(filter(None, [row["note"], "one paired seed: the interval leaves out "
                                                            "seed-to-seed variation"]))
    return row


def _run_scores(cell, metric, index, split) -> tuple[np.ndarray, np.ndarray]:
    """Per run of ``cell``: its score on ``split`` (from its predictions, else its record) and whether
    it collapsed (1, 0 or NaN)."""
    scores, floors = [], []
    for _, run in cell.iterrows():
        predictions = index.get(run)
        if predictions is not None:
            labels, predicted = _as_arrays(metric, predictions)
            scores.append(stats.score(metric, labels, predicted))
            floors.append(stats.constant_score(metric, labels))
        else:
            column = RECORDED_SCORE.get(split)
            scores.append(float(run[column]) if column in run and pd.notna(run[column]) else np.nan)
            floors.append(stats.constant_score(metric) if metric in stats.LABEL_FREE_CONSTANT else np.nan)
    losses = [pd.to_numeric(cell[column], errors="coerce").to_numpy(float) if column in cell
              else np.full(len(cell), np.nan) for column in ("final_train_loss", "constant_train_loss")]
    return np.array(scores, float), stats.collapsed(*losses, np.array(scores, float), np.array(floors, float))


def _collapse_summary(scores, collapse, level) -> dict:
    known = ~np.isnan(collapse)
    count, trials = int(np.nansum(collapse)), int(known.sum())
    low, high = stats.clopper_pearson(count, trials, level)
    kept = scores[collapse != 1]  # runs not judged collapsed (those that cannot be judged stay)
    return {"mean": 100 * np.nanmean(scores) if np.isfinite(scores).any() else np.nan, "runs": len(scores),
            "collapsed": count, "collapse_known": trials,
            "collapse_rate": count / trials if trials else np.nan, "collapse_low": low, "collapse_high": high,
            "mean_without_collapsed": 100 * np.nanmean(kept) if np.isfinite(kept).any() else np.nan}


def _matching_reference(cell, references, keys):
    if not references:
        return None, "no reference run on this task"
    if len(references) == 1:
        return references[0], ""
    first = cell.iloc[0]
    settings = [key for key in keys if key != "variant"]

    def agreement(reference):
        return sum(_same(first[key], reference.iloc[0][key]) for key in settings)

    scores = [agreement(reference) for reference in references]
    best = [reference for reference, value in zip(references, scores) if value == max(scores)]
    if len(best) == 1:
        return best[0], ""
    tied = "; ".join(config_label(reference.iloc[0], keys) for reference in best)
    example = best[0].iloc[0]
    differing = [key for key in keys if any(not _same(example[key], other.iloc[0][key]) for other in best)]
    choice = {key: _plain(example[key]) for key in ["variant", *differing]}
    return None, f"{len(best)} reference cells fit equally well ({tied}): pass e.g. reference={choice}"


def _same(one, other) -> bool:
    return bool(one == other) or bool(pd.isna(one) and pd.isna(other))


def _plain(value):
    """numpy scalars as plain Python values, whole floats as ints (for messages)."""
    value = value.item() if isinstance(value, np.generic) else value
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _paired_predictions(cell, reference, index, metric):
    """(labels, variant (seeds, n), reference (seeds, n), note), or (verdict, note) saying why there is
    nothing to pair. Each seed's pair of runs is compared on the dev examples both have; labels are
    (n,) when every seed saw the same examples, else (seeds, n) (then examples are resampled within
    each seed)."""
    pairs = []
    for _, run in cell.iterrows():
        partner = reference[reference["seed"] == run["seed"]]
        if partner.empty:
            continue
        mine, theirs = index.get(run), index.get(partner.iloc[0])
        if mine is not None and theirs is not None:
            pairs.append((mine, theirs))
    if not pairs:
        common = sorted(set(cell["seed"]) & set(reference["seed"]))
        if not common:
            return "not comparable", "no seed in common with the reference"
        return "no predictions", f"no seed has predictions on this split in both cells (seeds in common: {common})"
    aligned = []
    for mine, theirs in pairs:
        examples = np.intersect1d(mine["example"].to_numpy(), theirs["example"].to_numpy())
        if examples.size == 0:
            return "not comparable", "runs of the same seed share no dev example"
        (labels, predicted), (their_labels, their_predicted) = (_aligned(metric, frame, examples)
                                                                for frame in (mine, theirs))
        if not np.array_equal(labels, their_labels):
            return "not comparable", "runs of the same seed disagree on the dev labels (different dev sets?)"
        aligned.append((examples, labels, predicted, their_predicted))
    examples, labels = aligned[0][:2]
    variant, reference_predictions = (np.stack([pair[i] for pair in aligned]) for i in (2, 3))
    if all(np.array_equal(pair[0], examples) and np.array_equal(pair[1], labels) for pair in aligned):
        return labels, variant, reference_predictions, ""
    if len({len(pair[0]) for pair in aligned}) > 1:
        return "not comparable", "the seeds saw dev sets of different sizes"
    return (np.stack([pair[1] for pair in aligned]), variant, reference_predictions,
            "the seeds saw different dev examples (e.g. data.max_eval_samples): examples resampled within each seed")


def _aligned(metric, frame, examples):
    """(labels, predictions) of a run's predictions (sorted by example) at ``examples``."""
    positions = np.searchsorted(frame["example"].to_numpy(), examples)
    return tuple(values[positions] for values in _as_arrays(metric, frame))


def _as_arrays(metric, predictions: pd.DataFrame):
    labels, predicted = predictions["label"].to_numpy(), predictions["prediction"].to_numpy()
    if metric is not None and metric not in stats.REGRESSION_METRICS:
        labels, predicted = labels.astype(np.int64), predicted.astype(np.int64)
    return labels, predicted


def collapse_table(df: pd.DataFrame, predictions: pd.DataFrame | None = None, by: list[str] | str | None = None,
                   split: str = "validation") -> pd.DataFrame:
    """How many runs of each cell collapsed: one row per configuration (``by``, default
    ``default_grouping(df)``, the rows of the results table), one column per task, cells ``"1/5"``
    (collapsed / runs that could be judged, ``stats.collapsed``: final training loss not below the
    constant predictor's, or a score on ``split`` no better than it; "–" where none could be judged).
    Scores come from ``predictions`` where a run has them, else from its record."""
    runs = ok_runs(df)
    if runs.empty:
        raise ValueError("no successful runs (status == 'ok') to count collapses in")
    keys = grouping_keys(df, by)
    index = _PredictionIndex(predictions, split)
    rows = {}
    for task in ordered_tasks(runs["task"].dropna()):
        task_runs = runs[runs["task"] == task]
        for values, cell in sorted_rows(task_runs, keys, runs).groupby(keys, dropna=False, sort=False):
            values = values if isinstance(values, tuple) else (values,)
            _, collapse = _run_scores(cell, _metric_of(cell), index, split)
            known = ~np.isnan(collapse)
            row = rows.setdefault(values, {key: _plain(value) for key, value in zip(keys, values)})
            row[task] = f"{int(np.nansum(collapse))}/{int(known.sum())}" if known.any() else "–"
    table = sorted_rows(pd.DataFrame(list(rows.values())), keys, runs).reset_index(drop=True)
    return table.fillna("–")


def _metric_of(cell) -> str:
    recorded = cell["main_metric"].dropna()
    return stats.metric_of(str(recorded.iloc[0]) if not recorded.empty else "accuracy")


def _verdict(row, margin, level) -> str:
    if isinstance(row.verdict, str):
        return row.verdict
    excludes_zero = row.ci_low > 0 or row.ci_high < 0
    if excludes_zero and row.p_holm < 1 - level:
        return "better" if row.difference > 0 else "worse"
    if row.tost_equivalent:
        return "equivalent"
    return "not resolved"


# ------------------------------------------------------------------------------------------ displaying
def format_comparison(table: pd.DataFrame) -> pd.DataFrame:
    """``compare``'s table for reading: one text column per quantity, numbers rounded."""
    keys = [c for c in table.columns if c not in _COMPARE_COLUMNS]
    level = table.attrs.get("level", 0.95)
    rows = []
    for _, row in table.iterrows():
        rows.append({
            "task": row["task"], "configuration": config_label(row, keys) if keys else "", "vs": row["reference"],
            "seeds": int(row["n_seeds"]),
            f"Δ ×100 [{100 * level:g} % CI]": "–" if np.isnan(row["difference"]) else
            f"{row['difference']:+.1f} [{row['ci_low']:+.1f}, {row['ci_high']:+.1f}]",
            "p": format_p_value(row["p_value"]), "p (Holm)": format_p_value(row["p_holm"]),
            "verdict": row["verdict"],
            "detectable (80 % power)": format_number(row["detectable"], 1),
            "collapsed [CP CI]": "–" if not row["collapse_known"] else
            f"{row['collapsed']}/{row['collapse_known']} [{row['collapse_low']:.2f}, {row['collapse_high']:.2f}]",
            "mean": format_number(row["mean"], 1),
            "mean w/o collapsed": format_number(row["mean_without_collapsed"], 1),
            "reference mean": format_number(row["mean_reference"], 1), "note": row["note"] or ""})
    return pd.DataFrame(rows)


_COMPARE_COLUMNS = ("task", "baseline", "reference", "metric", "n_seeds", "n_examples", "mean",
                    "mean_reference", "difference", "ci_low", "ci_high", "p_value", "p_holm", "standard_error",
                    "degrees_of_freedom", "detectable", "verdict", "runs", "collapsed",
                    "collapse_known", "collapse_rate", "collapse_low", "collapse_high",
                    "mean_without_collapsed", "tost_equivalent", "note")


def format_p_value(value) -> str:
    """A p-value as the tables print it: '<0.001', three decimals, or '–' when it is missing."""
    return "<0.001" if value < 0.001 else format_number(value, 3)


def plot_differences(table: pd.DataFrame, margin: float | None = None) -> Figure:
    """Forest plot of ``compare``'s table: each row's difference ×100 with its interval, a line at 0 and
    the equivalence band ±margin (default: the margin ``compare`` used)."""
    from .plots import NoDataError, new_figure

    shown = table[table["difference"].notna()]
    if shown.empty:
        raise NoDataError("no comparison with predictions to draw (every row lacks a paired difference)")
    margin = table.attrs.get("margin", 1.5) if margin is None else margin
    keys = [c for c in table.columns if c not in _COMPARE_COLUMNS]
    labels = [f"{row['task']}: {config_label(row, keys)}" for _, row in shown.iterrows()]
    fig, (ax,) = new_figure(width=8.0, height=1.8 + 0.32 * len(shown))
    positions = np.arange(len(shown))[::-1]
    ax.axvspan(-margin, margin, color="0.9", zorder=0, label=f"±{margin:g} (equivalence margin)")
    ax.axvline(0, color="0.3", linewidth=1)
    for position, (_, row) in zip(positions, shown.iterrows()):
        color = variant_color(row["variant"]) if "variant" in row else "C0"
        ax.errorbar(row["difference"], position, xerr=[[row["difference"] - row["ci_low"]],
                                                       [row["ci_high"] - row["difference"]]],
                    fmt="o", color=color, capsize=3)
    ax.set_yticks(positions, labels, fontsize=8)
    ax.grid(False)
    ax.grid(True, axis="x", alpha=0.3)
    reference = table.attrs.get("reference")
    if not isinstance(reference, str):
        reference = table["reference"].iloc[0] if table["reference"].nunique() == 1 else "the reference"
    level = table.attrs.get("level", 0.95)
    ax.set_xlabel(f"difference to {reference} ×100 (paired bootstrap, {100 * level:g} % CI)")
    ax.legend(fontsize=8, loc="best")
    ax.set_title(f"Paired differences to {reference} (n_boot = {table.attrs.get('n_boot', '?')})", fontsize=10)
    return fig
