"""Figures from the results DataFrame (see ``load_results``); each function returns a matplotlib Figure.

Every function takes the DataFrame (any filtered subset works: ``df[df["rank"] == 8]``) and a task
(optional when the DataFrame holds a single task). Only ``status == "ok"`` runs are drawn; scores are
means over seeds with 95 % confidence intervals (Student t over the seeds) as error bars; cost bars
show ± one standard deviation. ``save_figure`` writes PNG and SVG.
Figures are built with the object-oriented API (no pyplot state), so they work under any backend;
in a notebook, ``%matplotlib inline`` shows a returned figure.
"""
from __future__ import annotations

import re
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullFormatter, NullLocator

from .tables import (baseline_variants, default_grouping, metric_column, ok_runs, ordered_tasks,
                     ordered_variants, score_name, sorted_rows, summarize)


class NoDataError(ValueError):
    """The results hold nothing this figure can show (e.g. no rank sweep, no learning curves)."""


# --------------------------------------------------------------------------------------------- helpers
def save_figure(fig: Figure, folder: str | Path, name: str) -> list[Path]:
    """Write ``fig`` as ``folder/name.png`` (150 dpi) and ``folder/name.svg``; return both paths.

    The same figure gives the same bytes on every call (no date in the SVG, fixed SVG ids), so
    regenerating a results folder's figures changes only those whose data changed.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "figure"
    paths = [folder / f"{stem}.png", folder / f"{stem}.svg"]
    fig.savefig(paths[0], dpi=150)  # the figures use constrained layout: nothing is cut off
    with matplotlib.rc_context({"svg.hashsalt": stem}):
        fig.savefig(paths[1], metadata={"Date": None})
    return paths


def pareto_front(points: pd.DataFrame, x: str = "trainable_params", y: str = "mean") -> pd.Series:
    """Which points are Pareto-optimal when ``x`` (cost) should be low and ``y`` (score) high.

    A point is on the front unless another point is at least as good on both and better on one.
    Returns a boolean Series aligned with ``points``; rows with a missing x or y are never on it.
    """
    xs, ys = points[x].to_numpy(float), points[y].to_numpy(float)
    valid = ~(np.isnan(xs) | np.isnan(ys))
    on_front = []
    for i in range(len(points)):
        if not valid[i]:
            on_front.append(False)
            continue
        dominated = valid & (xs <= xs[i]) & (ys >= ys[i]) & ((xs < xs[i]) | (ys > ys[i]))
        on_front.append(not dominated.any())
    return pd.Series(on_front, index=points.index, name="pareto")


def variant_color(variant: str, runs: pd.DataFrame | None = None) -> tuple:
    """The same colour for a variant in every figure made from the same records: its place in
    ``ordered_variants(runs)`` (without records: from its name)."""
    palette = matplotlib.colormaps["tab10"].colors
    order = ordered_variants(runs) if runs is not None else []
    if variant in order:
        return palette[order.index(variant) % len(palette)]
    return palette[(len(order) + sum(map(ord, str(variant)))) % len(palette)]


def config_label(row: pd.Series | dict, keys: list[str], baselines=()) -> str:
    """A short legend label: ``lora r=8 α=16``; baselines (a variant in ``baselines``, or a row whose
    own ``baseline`` field is true) show their name only."""
    parts = []
    baseline = row.get("variant") in baselines or row.get("baseline") is True or row.get("baseline") is np.True_
    for key in keys:
        value = row[key]
        if key in ("rank", "alpha", "target_modules") and baseline:
            continue
        if isinstance(value, (float, np.floating)) and float(value).is_integer():
            value = int(value)
        if key == "variant":
            parts.append(str(value))
        elif key == "rank":
            parts.append(f"r={value}")
        elif key == "alpha":
            parts.append(f"α={value}")
        elif key in ("target_modules", "study"):
            parts.append(str(value))
        else:
            parts.append(f"{key}={value}")
    return " ".join(parts)


def _short_count(value: float) -> str:
    """Axis labels for parameter counts: 500, 20K, 1M, 2.5M."""
    for size, unit in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if value >= size:
            return f"{value / size:g}{unit}"
    return f"{value:g}"


def _task_runs(df: pd.DataFrame, task: str | None) -> tuple[pd.DataFrame, str]:
    runs = ok_runs(df)
    tasks = ordered_tasks(runs["task"].dropna())
    if not tasks:
        raise NoDataError("no successful runs (status == 'ok') in these results")
    if task is None:
        if len(tasks) > 1:
            raise ValueError(f"these results hold several tasks {tasks}; pass task=")
        task = tasks[0]
    if task not in tasks:
        raise ValueError(f"unknown task {task!r}; choose one of {tasks}")
    return runs[runs["task"] == task], task


def _configurations(runs: pd.DataFrame, by: list[str] | str | None) -> list[str]:
    """The columns that make one configuration: ``by``, or variant plus the settings that vary
    (``default_grouping``); always starting from ``variant``, which picks the colour."""
    keys = default_grouping(runs) if by is None else [by] if isinstance(by, str) else list(by)
    return keys if "variant" in keys else ["variant", *keys]


def _metric_label(runs: pd.DataFrame, metric: str, scale: float) -> str:
    column = metric_column(runs, metric)
    name = score_name(column, ", ".join(sorted(runs["main_metric"].dropna().astype(str).unique())) or "main score")
    return f"{name} ×{scale:g}" if scale != 1 else name


def new_figure(width: float = 7.0, height: float = 4.5, columns: int = 1):
    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(1, columns, squeeze=False)[0]
    for ax in axes:
        ax.grid(True, alpha=0.3)
    return fig, axes


# --------------------------------------------------------------------------------------------- figures
def plot_metric_vs_params(df: pd.DataFrame, task: str | None = None, metric: str = "main_score",
                          by: list[str] | str | None = None, scale: float = 100) -> Figure:
    """Score against trainable parameters (log x), one point per configuration, Pareto front marked.

    Configurations are ``by`` (default: variant plus the settings that vary, see ``default_grouping``).
    """
    runs, task = _task_runs(df, task)
    keys = _configurations(runs, by)
    points = summarize(runs, by=keys, metric=metric)
    points = points.assign(score=points["mean"] * scale, spread=points["ci"].fillna(0.0) * scale)
    points = points.dropna(subset=["trainable_params", "score"])
    if points.empty:
        raise NoDataError(f"no run on {task} recorded both trainable_params and a score")
    fig, (ax,) = new_figure(width=8.5)
    for variant in [v for v in ordered_variants(runs) if v in set(points["variant"])]:
        mine = points[points["variant"] == variant]
        ax.errorbar(mine["trainable_params"], mine["score"], yerr=mine["spread"], fmt="o", capsize=3,
                    color=variant_color(variant, df), label=variant, markersize=6)
    front = points[pareto_front(points, x="trainable_params", y="score")].sort_values("trainable_params")
    members = "\n".join(f"  {config_label(point, keys, baseline_variants(runs))}" for _, point in front.iterrows())
    ax.step(front["trainable_params"], front["score"], where="post", linestyle="--", color="0.3",
            label=f"Pareto front:\n{members}", zorder=1)
    ax.scatter(front["trainable_params"], front["score"], s=140, facecolors="none", edgecolors="black",
               linewidths=1.2, zorder=3)
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: _short_count(value)))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("trainable parameters (log scale)")
    ax.set_ylabel(f"{task} {_metric_label(runs, metric, scale)}")
    ax.set_title(f"{task}: score vs trainable parameters (mean, 95 % CI over seeds; ringed: Pareto front)",
                 fontsize=10)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig


def plot_metric_vs_rank(df: pd.DataFrame, task: str | None = None, alpha: float | None = None,
                        variants=None, metric: str = "main_score", scale: float = 100) -> Figure:
    """Score against rank r (log₂ x) at one fixed alpha, one line per variant (default: every adapter
    variant; those run at a single rank are left out).

    ``alpha=None`` picks the alpha at which most of these variants were swept over rank.
    """
    return _sweep_figure(df, task, x="rank", fixed="alpha", fixed_value=alpha, variants=variants,
                         metric=metric, scale=scale)


def plot_metric_vs_alpha(df: pd.DataFrame, task: str | None = None, rank: int | None = None,
                         variants=None, metric: str = "main_score", scale: float = 100) -> Figure:
    """Score against alpha (log₂ x) at one fixed rank, one line per variant (default: every adapter
    variant; those run at a single alpha are left out).

    ``rank=None`` picks the rank at which most variants were swept over alpha.
    """
    return _sweep_figure(df, task, x="alpha", fixed="rank", fixed_value=rank, variants=variants,
                         metric=metric, scale=scale)


_SYMBOLS = {"rank": "r", "alpha": "α"}


def _sweep_figure(df, task, *, x, fixed, fixed_value, variants, metric, scale) -> Figure:
    runs, task = _task_runs(df, task)
    if variants is None:
        variants = [v for v in ordered_variants(runs) if v not in baseline_variants(runs)]
    variants = [variants] if isinstance(variants, str) else list(variants)
    runs = runs[runs["variant"].isin(variants)]
    if runs.empty:
        raise NoDataError(f"no successful run of {variants} on {task}")
    keys = [key for key in default_grouping(runs) if key not in (x, fixed)] + [x, fixed]
    summary = summarize(runs, by=keys, metric=metric)
    line_keys = [key for key in keys if key not in (x, fixed)]
    # how many lines have at least two x values, for each value of the fixed setting
    swept = (summary.groupby([fixed, *line_keys], dropna=False)[x].nunique() >= 2).groupby(level=0).sum()
    if fixed_value is None:
        if swept.empty or swept.max() == 0:
            raise NoDataError(f"no {x} sweep on {task}: none of {variants} ran at two or more {x} values "
                              f"with the same {fixed}")
        fixed_value = swept.idxmax()
    elif fixed_value not in set(summary[fixed]):
        raise NoDataError(f"no run of {variants} on {task} with {fixed}={fixed_value}; "
                          f"recorded: {sorted(set(summary[fixed]))}")
    summary = summary[summary[fixed] == fixed_value]
    points_per_line = summary.groupby(line_keys, dropna=False)[x].transform("nunique")
    summary = summary[points_per_line >= 2]  # a line needs two points (a variant run at one x is left out)
    if summary.empty:
        raise NoDataError(f"no {x} sweep of {variants} on {task} at {fixed}={fixed_value}")
    fig, (ax,) = new_figure()
    styles = ["-", "--", ":", "-."]  # several lines of one variant (e.g. other target modules)
    lines_drawn = {}
    ticks = set()
    for _, line in summary.groupby(line_keys, dropna=False, sort=False):
        line = line.sort_values(x)
        variant = line["variant"].iloc[0]
        style = styles[lines_drawn.get(variant, 0) % len(styles)]
        lines_drawn[variant] = lines_drawn.get(variant, 0) + 1
        ticks.update(line[x].astype(float))
        ax.errorbar(line[x], line["mean"] * scale, yerr=line["ci"].fillna(0.0) * scale, marker="o",
                    capsize=3, color=variant_color(variant, df), linestyle=style,
                    label=config_label(line.iloc[0], line_keys, baseline_variants(runs)))
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_locator(FixedLocator(sorted(ticks)))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([f"{tick:g}" for tick in sorted(ticks)])
    ax.set_xlabel(f"{x} {_SYMBOLS[x]} (log scale)")
    ax.set_ylabel(f"{task} {_metric_label(runs, metric, scale)}")
    ax.set_title(f"{task}: score vs {x} at {_SYMBOLS[fixed]} = {float(fixed_value):g} "
                 f"(mean, 95 % CI over seeds)", fontsize=10)
    ax.legend(fontsize=8, loc="best")
    return fig


def plot_cost(df: pd.DataFrame, task: str | None = None, by: list[str] | str | None = None) -> Figure:
    """Bars of train time and peak memory per configuration (mean ± std over its ok runs on ``task``).

    Configurations are ``by`` (default: variant plus the settings that vary, see ``default_grouping``);
    ``by="variant"`` pools every run of a variant.
    """
    runs, task = _task_runs(df, task)
    keys = _configurations(runs, by)
    columns = {"train_seconds": "train time (s)", "peak_memory_mb": "peak memory (MB)"}
    if runs[list(columns)].isna().all().all():
        raise NoDataError(f"no run on {task} recorded train_seconds or peak_memory_mb")
    stats = runs.groupby(keys, dropna=False, sort=False)[list(columns)].agg(["mean", "std"])
    labels = [config_label(dict(zip(keys, k if isinstance(k, tuple) else (k,))), keys, baseline_variants(runs))
              for k in stats.index]
    variant_rank = {v: i for i, v in enumerate(ordered_variants(runs))}
    order = sorted(range(len(labels)),
                   key=lambda i: (variant_rank.get(_variant_of(stats.index[i], keys), -1), labels[i]))
    fig, axes = new_figure(width=max(7.0, 0.55 * len(labels) * 2), columns=2)
    positions = np.arange(len(order))
    for ax, (column, label) in zip(axes, columns.items()):
        means = stats[(column, "mean")].to_numpy(float)[order]
        stds = np.nan_to_num(stats[(column, "std")].to_numpy(float)[order])
        colors = [variant_color(_variant_of(stats.index[i], keys), df) for i in order]
        ax.bar(positions, means, yerr=stds, capsize=3, color=colors)
        ax.set_xticks(positions, [labels[i] for i in order], rotation=45, ha="right", fontsize=8)
        ax.set_xlabel(" / ".join(keys))
        ax.set_ylabel(label)
        ax.grid(False)
        ax.grid(True, axis="y", alpha=0.3)
    devices = ", ".join(sorted(runs["device"].dropna().astype(str).unique())) or "unknown device"
    fig.suptitle(f"{task}: cost per run (mean ± std over runs, {devices})", fontsize=10)
    return fig


def _variant_of(index_value, keys) -> str:
    values = index_value if isinstance(index_value, tuple) else (index_value,)
    return dict(zip(keys, values)).get("variant", "")


def plot_learning_curves(df: pd.DataFrame, task: str | None = None, by: list[str] | str | None = None
                         ) -> Figure:
    """Training loss (and the logged dev score, if any) against step.

    A thin line per run and a bold mean line per configuration (``by``, default: variant plus the
    settings that vary, see ``default_grouping``), so runs of different settings are never averaged.
    """
    runs, task = _task_runs(df, task)
    keys = _configurations(runs, by)
    points = []
    for _, run in runs.iterrows():
        for point in run["learning_curve"] if isinstance(run["learning_curve"], list) else []:
            points.append({**{key: run[key] for key in keys}, "run": run["path"], "step": point.get("step"),
                           "loss": point.get("loss"), "eval": point.get("eval")})
    curves = pd.DataFrame(points)
    if curves.empty:
        raise NoDataError(f"no learning curve logged on {task}")
    curves[["step", "loss", "eval"]] = curves[["step", "loss", "eval"]].astype(float)
    panels = {"loss": "training loss"}
    # A dev score logged once, at the end (the comparison protocol scores dev once), is the table's
    # number, not a curve: the panel appears only when some run logged dev at two or more steps.
    if (curves.dropna(subset=["eval"]).groupby("run").size() >= 2).any():
        panels["eval"] = f"dev {_metric_label(runs, 'main_score', 1)} (logged during training)"
    fig, axes = new_figure(width=6.0 * len(panels), columns=len(panels))
    for ax, (column, label) in zip(axes, panels.items()):
        logged = sorted_rows(curves.dropna(subset=[column]), keys, runs)
        for values, group in logged.groupby(keys, dropna=False, sort=False):
            name = config_label(dict(zip(keys, values if isinstance(values, tuple) else (values,))), keys,
                                baseline_variants(runs))
            color = variant_color(group["variant"].iloc[0] if "variant" in group else "", df)
            for _, run in group.groupby("run"):
                ax.plot(run["step"], run[column], color=color, alpha=0.2, linewidth=0.8)
            mean = group.groupby("step")[column].mean()
            runs_in_group = group["run"].nunique()
            how_many = "one run" if runs_in_group == 1 else f"mean of {runs_in_group} runs"
            ax.plot(mean.index, mean.to_numpy(), color=color, linewidth=2, label=f"{name} ({how_many})")
        ax.set_xlabel("training step")
        ax.set_ylabel(label)
        ax.legend(fontsize=8, loc="best")
    fig.suptitle(f"{task}: learning curves (thin: single runs)", fontsize=10)
    return fig
