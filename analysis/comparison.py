"""Paired comparisons of variants from per-example predictions.

    df = analysis.load_results("results/my_study")
    predictions = analysis.load_predictions(df)          # or a folder; one row per (run, split, example)
    table = analysis.compare(df, predictions, reference="lora")
    print(analysis.to_markdown(analysis.format_comparison(table)))
    fig = analysis.plot_differences(table)               # forest plot of the differences and their CIs

``compare`` gives one row per task and configuration (other than the reference): the difference to
the reference ×100 with its 95 % interval and its family interval (the crossed seeds × examples
variance components of ``stats.paired_difference``, for one target of inference: "new examples" or
"this dev set"), its p-value, Bonferroni-adjusted over the table, the verdict read off the family
interval by ``analysis.verdicts`` (the one rule set every command uses), and the two ways a run can
fail as their own endpoints: runs that did not fit the training data and runs that did not
generalise (each a count with a Clopper–Pearson interval), and the mean of the runs that fit. The
statistics themselves are plain numpy in ``analysis.stats``.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from . import stats, verdicts
from .plots import config_label, variant_color
from .tables import DEFAULT_RESULTS_DIR, RESULTS_DIR_VARIABLE, grouping_keys, sorted_rows, load_results, \
    ok_runs, ordered_tasks, format_number

#: the columns of ``load_predictions`` before the logits
PREDICTION_COLUMNS = ("study", "config_hash", "split", "example", "label", "prediction")
#: verdicts ``compare`` gives: those of ``verdicts.comparison_verdict``, and two that say why a row has none
VERDICTS = (*verdicts.COMPARISON_VERDICTS, "no predictions", "not comparable")
#: the two ways a run can fail, each counted on its own (``stats.did_not_fit``, ``stats.did_not_generalise``)
FAILURES = ("did not fit", "did not generalise")
#: ``compare``'s reference meaning the best constant prediction (the majority class for accuracy; 0 for a
#: correlation) in place of a variant: did each configuration learn anything, with its interval?
CONSTANT = "constant"
#: the record's own score for a split, used where the run has no predictions
RECORDED_SCORE = {"validation": "main_score", "selection": "selection_score", "test": "test_score"}


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
            split: str = "validation", margin: float = 1.5, by: list[str] | str | None = None,
            target: str = "new-examples", level: float = 0.95, alpha: float = verdicts.ALPHA) -> pd.DataFrame:
    """One row per (task, configuration that is not the reference): the paired difference to the
    reference, in points (metric ×100), and its verdict.

    ``reference``: a variant name, or a dict of column values that picks the reference cells (e.g.
    ``{"variant": "lora", "rank": 8}``; then the other cells of that variant are compared too), or
    ``CONSTANT`` ("constant"): the best constant prediction on each run's own split labels (the majority
    class), which pairs with every seed (``stats.difference_to_constant``).
    Configurations (cells) are ``by``, default ``default_grouping(df)``, as in the results table. Each
    cell is compared with the reference cell of its task; when the reference has several cells there
    (e.g. a rank sweep), with the one that agrees with it on the most grouping settings (a tie gives a
    "not comparable" row that says which cells tie). Runs pair by seed; only seeds that both cells ran
    with predictions on ``split`` count (``n_seeds``), on the dev examples all of them share.

    ``target``: what the intervals are about (``stats.TARGETS``): "new-examples" (default; seeds and
    dev examples both vary, as they would for new examples of the task) or "this-dev-set" (the dev
    examples fixed, only seeds vary). The table is one family: with m rows that have a difference,
    each row's family interval has level 1 - alpha / m, and its verdict is read off that interval
    (``verdicts.comparison_verdict``, with the equivalence ``margin`` in points).

    Columns: the cell's grouping values, ``task``, ``baseline`` (the cell's record field), ``reference``
    (the reference cell's label), ``metric``, ``n_seeds``, ``n_examples``, ``mean`` and ``mean_reference``
    (×100, over all the cells' ok runs), ``difference`` (mean over paired seeds of variant - reference,
    ×100), ``ci_low``, ``ci_high`` (the ``level`` interval, for reading), ``family_low``, ``family_high``
    (the family interval, for verdicts), ``p_value`` (two-sided t, for "no difference"), ``p_adjusted``
    (Bonferroni: min(1, m · p); below alpha exactly when the family interval excludes 0),
    ``standard_error``, ``share_seed``, ``share_example``, ``share_interaction`` (each variance
    component's share of the "new examples" variance, ``stats.VarianceComponents.shares``),
    ``detectable`` (the smallest true difference the family interval would exclude 0 for with 80 %
    power), ``paired`` (the row's ``stats.PairedDifference`` in points: ``row.paired.interval(level,
    target)`` gives its interval at any level, ``row.paired.components`` its variance components),
    ``verdict``, ``runs``, then for
    each way a run can fail (``did_not_fit``, ``did_not_generalise``): the count, ``..._known`` (runs that
    could be judged), ``..._low`` and ``..._high`` (Clopper–Pearson, ``level``); ``mean_of_fitted`` (×100,
    the runs that fit their training data, or could not be judged) and ``note``. The table's ``attrs``
    hold ``family_size``, ``family_level``, ``target`` and the arguments.
    """
    target = stats.target_of(target)
    runs = ok_runs(df)
    if runs.empty:
        raise ValueError("no successful runs (status == 'ok') to compare")
    keys = grouping_keys(df, by)
    is_reference = (pd.Series(False, index=runs.index) if reference == CONSTANT
                    else _reference_mask(runs, reference))
    index = _PredictionIndex(predictions, split)
    rows = []
    for task in ordered_tasks(runs["task"].dropna()):
        task_runs = runs[runs["task"] == task]
        cells = [cell for _, cell in sorted_rows(task_runs, keys).groupby(keys, dropna=False, sort=False)]
        references = (CONSTANT if reference == CONSTANT
                      else [cell for cell in cells if is_reference[cell.index].all()])
        for cell in cells:
            if is_reference[cell.index].any():
                continue
            rows.append(_compare_cell(cell, references, keys, task, index, split, target, level,
                                      fixed=list(reference) if isinstance(reference, dict) else ["variant"]))
    table = pd.DataFrame(rows)
    if table.empty:
        raise ValueError(f"nothing to compare with the reference {reference!r}: every successful run is "
                         f"a reference run")
    size = int(np.isfinite(table["difference"]).sum())
    family = verdicts.family_level(size, alpha)
    paired = [row if isinstance(row, stats.PairedDifference) else None for row in table["paired"]]
    table["family_low"], table["family_high"] = zip(*(row.interval(family, target) if row else (np.nan, np.nan)
                                                      for row in paired))
    table["p_adjusted"] = np.minimum(1.0, size * table["p_value"])
    table["detectable"] = [row.detectable(family, 0.8, target) if row else np.nan for row in paired]
    table["verdict"] = [row.verdict if isinstance(row.verdict, str)
                        else verdicts.comparison_verdict(row.family_low, row.family_high, margin)
                        for row in table.itertuples()]
    table.attrs.update(reference=reference, split=split, margin=margin, level=level, target=target,
                       alpha=alpha, family_size=size, family_level=family)
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


def _compare_cell(cell, references, keys, task, index, split, target, level, fixed=("variant",)) -> dict:
    metric = _metric_of(cell)
    first = cell.iloc[0]
    row = {**{key: first[key] for key in keys}, "task": task, "baseline": bool(first.get("baseline", False)),
           "reference": "–", "metric": metric, "n_seeds": 0, "n_examples": 0, "mean": np.nan,
           "mean_reference": np.nan, "difference": np.nan, "ci_low": np.nan, "ci_high": np.nan,
           "p_value": np.nan, "standard_error": np.nan, "share_seed": np.nan, "share_example": np.nan,
           "share_interaction": np.nan, "paired": None, "verdict": None, "note": ""}
    scores, failures = _run_scores(cell, metric, index, split)
    row.update(_failure_summary(scores, failures, level))
    if references == CONSTANT:  # the cell paired with itself: the constant is computed from its labels
        reference, row["reference"] = cell, CONSTANT
    else:
        reference, why = _matching_reference(cell, references, keys, fixed)
        if reference is None:
            return {**row, "verdict": "not comparable", "note": why}
        row["reference"] = config_label(reference.iloc[0], keys)
        reference_scores = _run_scores(reference, metric, index, split)[0]
        if np.isfinite(reference_scores).any():
            row["mean_reference"] = 100 * np.nanmean(reference_scores)
    checked = [("this cell", cell)] + ([] if reference is cell else [("the reference", reference)])
    duplicated = [name for name, c in checked if c["seed"].duplicated().any()]
    if duplicated:
        return {**row, "verdict": "not comparable",
                "note": f"{' and '.join(duplicated)} hold(s) several runs with one seed: add the setting "
                        f"that differs to by="}
    paired = _paired_predictions(cell, reference, index, metric)
    if isinstance(paired[0], str):
        return {**row, "verdict": paired[0], "note": paired[1]}
    labels, variant, reference_predictions, row["note"] = paired
    if references == CONSTANT:
        result = stats.difference_to_constant(metric, labels, variant).scaled(100)
        row["mean_reference"] = 100 * np.mean([stats.constant_score(metric, seed_labels)
                                               for seed_labels in np.atleast_2d(labels)])
    else:
        result = stats.paired_difference(metric, labels, variant, reference_predictions).scaled(100)
    row.update({f"share_{name}": share for name, share in result.components.shares().items()})
    row.update(n_seeds=result.n_seeds, n_examples=result.n_examples, difference=result.difference,
               standard_error=result.standard_error(target), p_value=result.p_value(target), paired=result)
    row["ci_low"], row["ci_high"] = result.interval(level, target)
    if result.n_seeds == 1:
        row["note"] = "; ".join(filter(None, [row["note"], "one paired seed: the interval leaves out "
                                                            "seed-to-seed variation" if target == "new-examples"
                                              else "one paired seed: no interval for this dev set"]))
    return row


def _run_scores(cell, metric, index, split) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Per run of ``cell``: its score on ``split`` (from its predictions, else its record), and for each
    of ``FAILURES`` whether the run failed that way (1, 0 or NaN)."""
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
    scores = np.array(scores, float)
    return scores, {"did not fit": stats.did_not_fit(*losses),
                    "did not generalise": stats.did_not_generalise(scores, np.array(floors, float))}


def _failure_summary(scores, failures, level) -> dict:
    summary = {"mean": 100 * np.nanmean(scores) if np.isfinite(scores).any() else np.nan, "runs": len(scores)}
    for name, failed in failures.items():
        column = name.replace(" ", "_")
        count, trials = int(np.nansum(failed)), int((~np.isnan(failed)).sum())
        low, high = stats.clopper_pearson(count, trials, level)
        summary.update({column: count, f"{column}_known": trials, f"{column}_low": low, f"{column}_high": high})
    fitted = scores[failures["did not fit"] != 1]  # runs that fit (those that cannot be judged stay)
    summary["mean_of_fitted"] = 100 * np.nanmean(fitted) if np.isfinite(fitted).any() else np.nan
    return summary


def _matching_reference(cell, references, keys, fixed=("variant",)):
    """The reference cell that agrees with ``cell`` on the most settings besides those the reference
    names (``fixed``: a variant reference names the variant; ``precision=fp32`` names the precision, so
    each configuration is paired with its own fp32 twin)."""
    if not references:
        return None, "no reference run on this task"
    if len(references) == 1:
        return references[0], ""
    first = cell.iloc[0]
    settings = [key for key in keys if key not in fixed]

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


def failure_table(df: pd.DataFrame, predictions: pd.DataFrame | None = None, failure: str = "did not fit",
                  by: list[str] | str | None = None, split: str = "validation") -> pd.DataFrame:
    """How many runs of each cell failed one way (``failure``, one of ``FAILURES``): "did not fit" (final
    training loss not below the constant predictor's, ``stats.did_not_fit``) or "did not generalise"
    (a score on ``split`` no better than the best constant prediction's, ``stats.did_not_generalise``).
    One row per configuration (``by``, default ``default_grouping(df)``, the rows of the results table),
    one column per task, cells ``"1/5"`` (runs that failed / runs that could be judged; "–" where none
    could be judged). Scores come from ``predictions`` where a run has them, else from its record."""
    if failure not in FAILURES:
        raise ValueError(f"unknown failure {failure!r}; choose one of {list(FAILURES)}")
    runs = ok_runs(df)
    if runs.empty:
        raise ValueError("no successful runs (status == 'ok') to count failures in")
    keys = grouping_keys(df, by)
    index = _PredictionIndex(predictions, split)
    rows = {}
    for task in ordered_tasks(runs["task"].dropna()):
        task_runs = runs[runs["task"] == task]
        for values, cell in sorted_rows(task_runs, keys, runs).groupby(keys, dropna=False, sort=False):
            values = values if isinstance(values, tuple) else (values,)
            failed = _run_scores(cell, _metric_of(cell), index, split)[1][failure]
            known = ~np.isnan(failed)
            row = rows.setdefault(values, {key: _plain(value) for key, value in zip(keys, values)})
            row[task] = f"{int(np.nansum(failed))}/{int(known.sum())}" if known.any() else "–"
    table = sorted_rows(pd.DataFrame(list(rows.values())), keys, runs).reset_index(drop=True)
    return table.fillna("–")


def _metric_of(cell) -> str:
    recorded = cell["main_metric"].dropna()
    return stats.metric_of(str(recorded.iloc[0]) if not recorded.empty else "accuracy")


# ------------------------------------------------------------------------------------------ displaying
def grouping_columns(table: pd.DataFrame) -> list[str]:
    """The columns of ``compare``'s table that name a configuration (its grouping keys)."""
    return [c for c in table.columns if c not in _COMPARE_COLUMNS]


def format_comparison(table: pd.DataFrame) -> pd.DataFrame:
    """``compare``'s table for reading: one text column per quantity, numbers rounded."""
    keys = grouping_columns(table)
    level = table.attrs.get("level", 0.95)
    family = table.attrs.get("family_level", np.nan)
    rows = []
    for _, row in table.iterrows():
        rows.append({
            "task": row["task"], "configuration": config_label(row, keys) if keys else "", "vs": row["reference"],
            "seeds": int(row["n_seeds"]),
            f"Δ ×100 [{100 * level:g} % CI]": _interval_text(row["difference"], row["ci_low"], row["ci_high"]),
            f"family CI ({format_number(100 * family, 2)} %)": _interval_text(np.nan, row["family_low"],
                                                                             row["family_high"]),
            "p": format_p_value(row["p_value"]), "p (adj.)": format_p_value(row["p_adjusted"]),
            "verdict": row["verdict"], "detectable (80 % power)": format_number(row["detectable"], 1),
            "seed / example / interaction %": _shares_text(row),
            **{f"{name} [CP CI]": _failure_text(row, name) for name in FAILURES},
            "mean": format_number(row["mean"], 1), "mean of runs that fit": format_number(row["mean_of_fitted"], 1),
            "reference mean": format_number(row["mean_reference"], 1), "note": row["note"] or ""})
    return pd.DataFrame(rows)


def _interval_text(centre, low, high) -> str:
    """'+1.2 [-0.3, +2.7]', or '[-0.3, +2.7]' without a centre; '–' when the interval is missing."""
    if not (np.isfinite(low) and np.isfinite(high)):
        return "–" if not np.isfinite(centre) else f"{centre:+.1f}"
    bounds = f"[{low:+.1f}, {high:+.1f}]"
    return bounds if not np.isfinite(centre) else f"{centre:+.1f} {bounds}"


def _shares_text(row) -> str:
    shares = [row[f"share_{name}"] for name in ("seed", "example", "interaction")]
    return "–" if not np.isfinite(shares).all() else " / ".join(f"{100 * share:.0f}" for share in shares)


def _failure_text(row, name) -> str:
    column = name.replace(" ", "_")
    if not row[f"{column}_known"]:
        return "–"
    return (f"{row[column]}/{row[f'{column}_known']} "
            f"[{row[f'{column}_low']:.2f}, {row[f'{column}_high']:.2f}]")


def table_description(table: pd.DataFrame) -> str:
    """One sentence that says what ``compare``'s table is: split, target, family and margin."""
    attrs = table.attrs
    target = stats.TARGET_NAMES.get(attrs.get("target"), attrs.get("target"))
    return (f"on {attrs.get('split', 'validation')}, target of inference: {target}; one family of "
            f"{attrs.get('family_size')} comparisons, each family interval at "
            f"{format_number(100 * attrs.get('family_level', np.nan), 2)} % (Bonferroni, "
            f"{100 * attrs.get('alpha', verdicts.ALPHA):g} % family-wise), every verdict read off it; "
            f"equivalence margin ±{attrs.get('margin', 1.5):g}")


_COMPARE_COLUMNS = ("task", "baseline", "reference", "metric", "n_seeds", "n_examples", "mean",
                    "mean_reference", "difference", "ci_low", "ci_high", "family_low", "family_high", "p_value",
                    "p_adjusted", "standard_error", "share_seed", "share_example",
                    "share_interaction", "paired", "detectable", "verdict", "runs",
                    *(f"{name.replace(' ', '_')}{suffix}" for name in FAILURES
                      for suffix in ("", "_known", "_low", "_high")), "mean_of_fitted", "note")


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
    keys = grouping_columns(table)
    labels = [f"{row['task']}: {config_label(row, keys)}" for _, row in shown.iterrows()]
    fig, (ax,) = new_figure(width=8.0, height=1.8 + 0.32 * len(shown))
    positions = np.arange(len(shown))[::-1]
    ax.axvspan(-margin, margin, color="0.9", zorder=0, label=f"±{margin:g} (equivalence margin)")
    ax.axvline(0, color="0.3", linewidth=1)
    family = table.attrs.get("family_level", np.nan)
    for position, (_, row) in zip(positions, shown.iterrows()):
        color = variant_color(row["variant"]) if "variant" in row else "C0"
        ax.hlines(position, row["family_low"], row["family_high"], color=color, linewidth=0.8, gid="family")
        ax.errorbar(row["difference"], position, xerr=[[row["difference"] - row["ci_low"]],
                                                       [row["ci_high"] - row["difference"]]],
                    fmt="o", color=color, capsize=3, elinewidth=2.2)
    ax.set_yticks(positions, labels, fontsize=8)
    ax.grid(False)
    ax.grid(True, axis="x", alpha=0.3)
    reference = table.attrs.get("reference")
    if not isinstance(reference, str):
        reference = table["reference"].iloc[0] if table["reference"].nunique() == 1 else "the reference"
    level = table.attrs.get("level", 0.95)
    target = stats.TARGET_NAMES.get(table.attrs.get("target"), "new examples")
    ax.set_xlabel(f"difference to {reference} ×100: {100 * level:g} % CI (thick), family CI "
                  f"{format_number(100 * family, 2)} % (thin, the verdicts')")
    ax.legend(fontsize=8, loc="best")
    ax.set_title(f"Paired differences to {reference}, target: {target} (family of "
                 f"{table.attrs.get('family_size', '?')}, Bonferroni)", fontsize=10)
    return fig
