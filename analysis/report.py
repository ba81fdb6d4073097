"""One self-contained HTML report of a results folder: opens from disk, no server, no network.

    python -m analysis report results/first_edition/glue_table --out results/first_edition/glue_table/report.html

    import analysis
    analysis.write_report(analysis.load_results("results/first_edition/glue_table"), "report.html")

It holds the variant x task table (mean ± std over seeds, recomputed in the page for the runs the
task / model / experiment filters keep, also set from the address: ``report.html#task=mrpc``; click a
header to sort), the runs that did not fit and did not generalise, the paired comparison when one is
given (``comparison=``, a DataFrame as ``analysis.compare`` returns it; its target of inference and
family named), metric vs trainable parameters with the Pareto front, the tuning sensitivity of a tuning
folder, time and memory per variant, learning curves, the environment the runs were made in, and every
run with its full config and provenance on demand. The plots are plotly figures;
plotly's JavaScript is inlined once, so the file is about 5 MB.
"""
from __future__ import annotations

import html
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from . import comparison as comparisons
from . import plots, tables, tuning
from .comparison import format_comparison

SCALE = 100  # scores are shown ×100, as in the tables
RUN_COLUMNS = {  # runs table: header -> record column
    "study": "study", "experiment": "experiment", "model": "model", "variant": "variant", "rank": "rank",
    "α": "alpha", "targets": "target_modules", "task": "task", "seed": "seed", "score ×100": "main_score",
    "status": "status", "trainable": "trainable_params", "train s": "train_seconds",
    "peak MB": "peak_memory_mb", "hash": "config_hash"}


# ------------------------------------------------------------------------------------------ the page
def build_report(df: pd.DataFrame, comparison: pd.DataFrame | None = None, title: str = "lora-arena results"
                 ) -> str:
    """The report's HTML text for the runs in ``df`` (``load_results``'s frame, any filtered subset)."""
    if df.empty:
        raise ValueError("no runs to report: the DataFrame is empty")
    df = df.reset_index(drop=True)
    ok = tables.ok_runs(df)
    keys = tables.default_grouping(df) if not ok.empty else ["variant"]
    tasks = tables.ordered_tasks(ok["task"].dropna()) if not ok.empty else []
    rows = Rows(df, keys)
    sections = [
        f"<h1>{_escape(title)}</h1>",
        f"<p>{len(df)} runs ({len(ok)} ok, {len(df) - len(ok)} failed), {len(tasks)} tasks"
        f"{_time_span(df)}. Scores are the task's main metric ×{SCALE} on the dev set.</p>",
        _filters(df),
        "<h2>Main metric per task</h2>",
        "<p>Mean ± std over seeds of the runs the filters keep (click a header to sort).</p>",
        '<table id="summary" class="sortable"><thead></thead><tbody></tbody></table>',
        _failure_section(df),
        _comparison_section(comparison),
        *(_task_section(df, task, rows) for task in tasks),
        _tuning_section(df),
        _cost_section(ok, rows),
        _environment_section(df),
        _runs_section(df, rows),
    ]
    data = {"runs": _summary_runs(df, rows), "keys": [_key_header(k) for k in keys],
            "rows": rows.labels(), "tasks": tasks,
            "headers": {t: tables._task_header(t, ok[ok["task"] == t]["main_metric"]) for t in tasks}}
    return PAGE.format(title=_escape(title), plotly=_plotly_js(), style=STYLE, body="\n".join(sections),
                       data=json.dumps(data, default=_json_default).replace("</", "<\\/"), script=SCRIPT)


def write_report(df: pd.DataFrame | str | os.PathLike, out: str | os.PathLike,
                 comparison: pd.DataFrame | None = None, title: str | None = None) -> Path:
    """Write the report of ``df`` (or of the results folder ``df`` names) to ``out``; returns the path."""
    if not isinstance(df, pd.DataFrame):
        title = title or f"lora-arena results: {Path(df).resolve().name}"
        df = tables.load_results(df)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(build_report(df, comparison, title or "lora-arena results"), encoding="utf-8")
    return out


def _plotly_js() -> str:
    from plotly.offline import get_plotlyjs

    return get_plotlyjs().replace("</script", "<\\/script")


# ------------------------------------------------------------------------------------ summary table
class Rows:
    """The configurations (rows of ``variant_task_table``) and which row each run belongs to, built on
    the tables' public functions only, so the page shows their rows, labels and order."""

    def __init__(self, df: pd.DataFrame, keys: list[str]):
        self.keys = keys
        ok = tables.ok_runs(df)
        if ok.empty:
            self.order, self.table, self.variants = [], pd.DataFrame(), []
            return
        summary = tables.summarize(ok, by=keys)
        self.order = list(dict.fromkeys(self.key(row) for _, row in summary.iterrows()))
        self.table = tables.variant_task_table(ok, by=keys)  # one row per entry of self.order, same order
        self.variants = list(dict.fromkeys(summary["variant"]))

    def key(self, run) -> tuple:
        return tuple(None if _missing(run[k]) else _plain(run[k]) for k in self.keys)

    def number(self, run) -> int:
        key = self.key(run)
        return self.order.index(key) if key in self.order else -1

    def labels(self) -> list[dict]:
        return [{"label": [str(row[k]) for k in self.keys], "trainable": str(row["trainable params"])}
                for _, row in self.table.iterrows()]

    def label(self, run) -> str:
        number = self.number(run)
        if number < 0:
            return str(run["variant"])
        return " ".join(str(self.table.iloc[number][k]) for k in self.keys if self.table.iloc[number][k] != "–")

    def variant_rank(self, variant) -> int:
        return self.variants.index(variant) if variant in self.variants else len(self.variants)

    def sorted(self, runs: pd.DataFrame, *columns: str) -> pd.DataFrame:
        """Runs with variants in the tables' order, then by ``columns``."""
        order = runs.assign(_variant=runs["variant"].map(self.variant_rank))
        return order.sort_values(["_variant", *columns], kind="stable").drop(columns="_variant")


def _summary_runs(df: pd.DataFrame, rows: Rows) -> list[dict]:
    return [{"row": rows.number(run), "task": run["task"], "model": _text(run["model"]),
             "experiment": _text(run["experiment"]), "seed": _plain(run["seed"]),
             "score": _plain(run["main_score"]) if run["status"] == "ok" else None}
            for _, run in df.iterrows()]


def _key_header(key: str) -> str:
    return {"alpha": "α", "target_modules": "targets"}.get(key, key)


def _filters(df: pd.DataFrame) -> str:
    choices = {"task": tables.ordered_tasks(df["task"].dropna()),
               "model": sorted({_text(v) for v in df["model"]}),
               "experiment": sorted({_text(v) for v in df["experiment"]})}
    parts = []
    for name, values in choices.items():
        options = "".join(f'<option value="{_escape(v)}">{_escape(v)}</option>' for v in values)
        parts.append(f'<label>{name} <select data-filter="{name}"><option value="">all</option>{options}'
                     f"</select></label>")
    return f'<div id="filters">Filter: {" ".join(parts)}</div>'


# ---------------------------------------------------------------------------------------- sections
def _failure_section(df: pd.DataFrame) -> str:
    """The two ways a run can fail, each counted per cell (``comparison.failure_table``)."""
    ok = tables.ok_runs(df)
    if ok.empty:
        return ""
    predictions = comparisons.load_predictions(df)
    parts = []
    for failure, why in (("did not fit", "final training loss not below the constant predictor's"),
                         ("did not generalise", "dev score no better than the best constant prediction's")):
        counts = comparisons.failure_table(df, predictions, failure)
        if (counts[tables.ordered_tasks(ok["task"].dropna())] != "–").to_numpy().any():
            parts.append(f"<h3>Runs that {failure}</h3><p>Per cell, runs that {failure} ({why}) of those that "
                         f"could be judged.</p>" + _html_table(counts, f"failures-{failure.replace(' ', '-')}"))
    return ("<h2>Runs that did not fit, runs that did not generalise</h2>" + "".join(parts)) if parts else ""


def _comparison_section(comparison: pd.DataFrame | None) -> str:
    """``comparison``: analysis.compare's table (shown through format_comparison), or a table already
    formatted for reading."""
    if comparison is None:
        return ""
    reference = comparison.attrs.get("reference")
    level = comparison.attrs.get("level", 0.95)
    described = comparisons.table_description(comparison) if "family_level" in comparison.attrs else ""
    if "difference" in comparison:
        comparison = format_comparison(comparison)
    heading = f"Paired comparison against {_escape(reference)}" if reference else "Paired comparison"
    return (f"<h2>{heading}</h2><p>Per task, each configuration against the reference on the same dev "
            f"examples, paired by seed: the difference ×100 of the main metric with its {100 * level:g} % "
            "confidence interval and its family interval, p-values raw and adjusted, and the verdict read off "
            "the family interval (better/worse only when it excludes 0; equivalent only within the stated "
            f"margin). {_escape(described[:1].upper() + described[1:])}.</p>"
            + _html_table(comparison, table_id="comparison"))


def _tuning_section(df: pd.DataFrame) -> str:
    """Tuning sensitivity (``analysis.tuning``): the table and, per task, the curves."""
    import plotly.graph_objects as go

    table = tuning.sensitivity_table(df)
    if table.empty:
        return ""
    figures = []
    for task in table["task"].drop_duplicates():
        figure = go.Figure()
        keys = tuning.tuning_cells(df)[0][1]
        for first, counts, best in tuning.sensitivity_curves(df, task):
            figure.add_trace(go.Scatter(x=counts, y=best, mode="lines+markers", name=plots.config_label(first, keys),
                                        line={"color": _color(first["variant"])}))
        figure.update_layout(title=f"{task}: expected best selection score ×{SCALE} of n tuning runs",
                             xaxis={"title": "tuning runs (a random n of the grid's points)", "dtick": 1},
                             yaxis={"title": f"selection score ×{SCALE}"}, height=380, template="plotly_white")
        figures.append(_figure_html(figure, f"tuning-{task}"))
    return ("<h2>Tuning sensitivity</h2><p>Expected best selection score of n tuning runs drawn at random from "
            "each variant's grid (Dodge et al. 2019); best of 1 is the mean over the grid, a large best - mean "
            "marks a variant that needs a lucky rate.</p>" + _html_table(table, "tuning") + "".join(figures))


def _task_section(df: pd.DataFrame, task: str, rows: Rows) -> str:
    figures = [_params_figure(df, task, rows), _curves_figure(df, task, rows)]
    body = "".join(_figure_html(figure, f"{name}-{task}") for name, figure in
                   zip(("params", "curves"), figures) if figure is not None)
    return f'<section class="task" data-task="{_escape(task)}"><h2>{_escape(task)}</h2>{body}</section>'


def _figure_html(figure, name: str) -> str:
    return figure.to_html(full_html=False, include_plotlyjs=False, div_id=f"plot-{name}",
                          config={"displaylogo": False, "responsive": True})


def _color(variant: str) -> str:
    red, green, blue = (int(round(255 * c)) for c in plots.variant_color(variant)[:3])
    return f"rgb({red},{green},{blue})"


def _hover(run: pd.Series) -> str:
    parts = [f"<b>{_escape(run['variant'])}</b>"]
    if not _missing(run["rank"]):  # baselines have no rank, alpha or targets
        parts.append(f"rank {_text(run['rank'])}, α {_text(run['alpha'])}, targets {_escape(run['target_modules'])}")
    parts.append(f"seed {_text(run['seed'])}, score {run['main_score'] * SCALE:.2f}")
    parts.append(f"trainable {tables._format_count(float(run['trainable_params']))}")
    return "<br>".join(parts)


def _params_figure(df: pd.DataFrame, task: str, rows: Rows):
    """Every run as a dot, each configuration's mean ± std as a marker, the Pareto front of the means."""
    import plotly.graph_objects as go

    runs = tables.ok_runs(df)
    runs = runs[(runs["task"] == task) & runs["trainable_params"].notna() & runs["main_score"].notna()]
    if runs.empty:
        return None
    figure = go.Figure()
    for variant in sorted(set(runs["variant"]), key=rows.variant_rank):
        mine = runs[runs["variant"] == variant]
        figure.add_trace(go.Scatter(
            x=mine["trainable_params"], y=mine["main_score"] * SCALE, mode="markers", name=variant,
            legendgroup=variant, marker={"color": _color(variant), "size": 7, "opacity": 0.55},
            text=[_hover(run) for _, run in mine.iterrows()], hovertemplate="%{text}<extra></extra>"))
    summary = tables.summarize(runs, by=rows.keys)
    summary["label"] = [rows.label(row) for _, row in summary.iterrows()]
    for variant in sorted(set(summary["variant"]), key=rows.variant_rank):
        mine = summary[summary["variant"] == variant]
        figure.add_trace(go.Scatter(
            x=mine["trainable_params"], y=mine["mean"] * SCALE, mode="markers", name=f"{variant} mean",
            legendgroup=variant, showlegend=False,
            marker={"color": _color(variant), "size": 13, "symbol": "diamond", "line": {"width": 1}},
            error_y={"type": "data", "array": (mine["std"].fillna(0) * SCALE).tolist(), "visible": True},
            text=[f"<b>{_escape(row.label)}</b><br>mean {row.mean * SCALE:.2f} ± {row.std * SCALE:.2f} "
                  f"over {row.n} seeds" for row in mine.itertuples()],
            hovertemplate="%{text}<extra></extra>"))
    front = summary[plots.pareto_front(summary)].sort_values("trainable_params")
    figure.add_trace(go.Scatter(x=front["trainable_params"], y=front["mean"] * SCALE, mode="lines",
                                name="Pareto front", line={"color": "black", "dash": "dash", "width": 1},
                                hoverinfo="skip"))
    metric = ", ".join(sorted(runs["main_metric"].dropna().astype(str).unique()))
    figure.update_layout(title=f"{task}: {metric} ×{SCALE} vs trainable parameters (dots: runs; diamonds: "
                               "mean ± std over seeds)", xaxis={"type": "log", "title": "trainable parameters"},
                         yaxis={"title": f"{metric} ×{SCALE}"}, height=460, margin={"t": 60},
                         template="plotly_white")
    return figure


def _curves_figure(df: pd.DataFrame, task: str, rows: Rows):
    """Training loss and dev score against the step, one line per run."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    runs = tables.ok_runs(df)
    runs = runs[(runs["task"] == task) & runs["learning_curve"].map(lambda c: bool(c))]
    if runs.empty:
        return None
    figure = make_subplots(rows=1, cols=2, subplot_titles=("training loss", "dev score ×100"))
    shown = set()
    for _, run in rows.sorted(runs).iterrows():
        curve = pd.DataFrame(run["learning_curve"])
        name = run["variant"]
        label = _hover(run)
        for column, (key, scale) in enumerate((("loss", 1), ("eval", SCALE)), start=1):
            points = curve[curve[key].notna()] if key in curve else curve.iloc[:0]
            if points.empty:
                continue
            figure.add_trace(go.Scatter(
                x=points["step"], y=points[key].astype(float) * scale, mode="lines+markers" if key == "eval"
                else "lines", name=name, legendgroup=name, showlegend=name not in shown,
                line={"color": _color(name), "width": 1}, opacity=0.7, text=[label] * len(points),
                hovertemplate="%{text}<br>step %{x}: %{y:.3f}<extra></extra>"), row=1, col=column)
            shown.add(name)
    figure.update_layout(title=f"{task}: learning curves (one line per run)", height=420,
                         template="plotly_white", margin={"t": 70})
    figure.update_xaxes(title_text="step")
    return figure


def _cost_section(ok: pd.DataFrame, rows: Rows) -> str:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    if ok.empty:
        return ""
    figure = make_subplots(rows=1, cols=2, subplot_titles=("train time (s)", "peak memory (MB)"))
    for variant in sorted(set(ok["variant"]), key=rows.variant_rank):
        mine = ok[ok["variant"] == variant]
        text = [f"{_hover(run)}<br>task {_escape(run['task'])}" for _, run in mine.iterrows()]
        for column, field in enumerate(("train_seconds", "peak_memory_mb"), start=1):
            figure.add_trace(go.Box(y=mine[field].astype(float), name=variant, legendgroup=variant,
                                    showlegend=column == 1, boxpoints="all", jitter=0.4, pointpos=0,
                                    marker={"color": _color(variant), "size": 5}, text=text,
                                    hovertemplate="%{text}<br>%{y:.1f}<extra></extra>"), row=1, col=column)
    figure.update_layout(title="Time and memory per variant (every run, all tasks)", height=420,
                         template="plotly_white", margin={"t": 70})
    cost = tables.cost_table(ok, by=rows.keys)
    return ("<h2>Cost</h2>" + _figure_html(figure, "cost")
            + "<p>Median over all runs of a configuration (all tasks):</p>" + _html_table(cost, "cost"))


def _environment_section(df: pd.DataFrame) -> str:
    """Each provenance entry's values with how many runs had them (digests and file paths left out)."""
    columns = [c for c in df.columns if c.startswith("provenance.") and "sha256" not in c
               and ".data_files." not in c]
    recorded = df[columns].notna().any(axis=1) if columns else pd.Series(False, index=df.index)
    note = (f"<p>{int((~recorded).sum())} of {len(df)} runs were made before records stated their "
            "provenance.</p>" if (~recorded).any() else "")
    if not columns:
        return "<h2>Environment</h2>" + note
    rows = []
    for column in columns:
        counts = df.loc[recorded, column].map(_text).value_counts()
        rows.append({"entry": column.removeprefix("provenance."),
                     "values (runs)": "; ".join(f"{value} ({count})" for value, count in counts.items())})
    return "<h2>Environment</h2>" + note + _html_table(pd.DataFrame(rows), "environment")


def _runs_section(df: pd.DataFrame, rows: Rows) -> str:
    header = "".join(f"<th>{_escape(name)}</th>" for name in [*RUN_COLUMNS, "config and provenance"])
    body = []
    for _, run in rows.sorted(df, "rank", "alpha", "task", "seed").iterrows():
        cells = []
        for name, column in RUN_COLUMNS.items():
            value = run.get(column)
            if column == "main_score":
                value = None if pd.isna(value) else f"{value * SCALE:.2f}"
            elif column == "trainable_params":
                value = None if pd.isna(value) else int(value)
            elif column in ("train_seconds", "peak_memory_mb"):
                value = None if pd.isna(value) else f"{value:.0f}"
            cells.append(f"<td>{_escape(_text(value))}</td>")
        cells.append(f"<td>{_details(run)}</td>")
        attributes = " ".join(f'data-{key}="{_escape(_text(run[key]))}"' for key in ("task", "model", "experiment"))
        body.append(f"<tr {attributes}>{''.join(cells)}</tr>")
    return (f"<h2>Runs ({len(df)})</h2><table id=\"runs\" class=\"sortable\"><thead><tr>{header}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table>")


def _details(run: pd.Series) -> str:
    provenance = {c.removeprefix("provenance."): _plain(run[c]) for c in run.index
                  if c.startswith("provenance.") and not _missing(run[c])}
    parts = []
    if run.get("status") != "ok" and not _missing(run.get("error")):
        parts.append(f"<b>error</b><pre>{_escape(run['error'])}</pre>")
    parts.append("<b>provenance</b><pre>" + (_escape(json.dumps(provenance, indent=1, default=str))
                                           if provenance else "not recorded (an older record)") + "</pre>")
    parts.append(f"<b>git commit</b> {_escape(_text(run.get('git_commit')))}, "
                 f"<b>finished</b> {_escape(_text(run.get('timestamp')))}")
    parts.append(f"<b>config</b><pre>{_escape(json.dumps(run.get('config'), indent=1, default=str))}</pre>")
    return f"<details><summary>show</summary>{''.join(parts)}</details>"


# ------------------------------------------------------------------------------------------ helpers
def _html_table(frame: pd.DataFrame, table_id: str) -> str:
    header = "".join(f"<th>{_escape(c)}</th>" for c in frame.columns)
    rows = []
    for _, row in frame.iterrows():
        task = f' data-task="{_escape(_text(row["task"]))}"' if "task" in frame.columns else ""
        rows.append(f"<tr{task}>" + "".join(f"<td>{_escape(_cell(v))}</td>" for v in row) + "</tr>")
    return (f'<table id="{table_id}" class="sortable"><thead><tr>{header}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table>")


def _cell(value) -> str:
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (float, np.floating)):
        return "–" if np.isnan(value) else f"{value:.4g}"
    return _text(value)


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


def _text(value) -> str:
    if _missing(value):
        return "–"
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


def _plain(value):
    if _missing(value):
        return None
    return value.item() if isinstance(value, np.generic) else value


def _json_default(value):
    return _plain(value) if isinstance(value, np.generic) else str(value)


def _escape(value) -> str:
    return html.escape(str(value), quote=True)


def _time_span(df: pd.DataFrame) -> str:
    stamps = df["timestamp"].dropna()
    if stamps.empty:
        return ""
    return f", finished between {stamps.min():%Y-%m-%d %H:%M} and {stamps.max():%Y-%m-%d %H:%M} UTC"


STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1300px; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.6em 0 1.4em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.55em; text-align: right; vertical-align: top; }
th { background: #f2f2f2; cursor: pointer; user-select: none; }
th.asc::after { content: " ▲"; } th.desc::after { content: " ▼"; }
td:first-child, th:first-child { text-align: left; }
#runs td { white-space: nowrap; } #runs pre { white-space: pre; text-align: left; max-height: 30em; overflow: auto; }
#filters { position: sticky; top: 0; background: #fff; padding: 0.5em 0; border-bottom: 1px solid #ddd; z-index: 5; }
#filters select { margin-right: 1em; }
#script-errors { background: #fdd; color: #900; padding: 0.5em; white-space: pre-wrap; }
#script-errors:empty { display: none; }
"""

PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<script>window.reportErrors = [];
window.addEventListener("error", function (e) {{ window.reportErrors.push(String(e.message)); }});
window.addEventListener("unhandledrejection", function (e) {{ window.reportErrors.push(String(e.reason)); }});</script>
<script>{plotly}</script>
<style>{style}</style></head>
<body>
<div id="script-errors"></div>
{body}
<script id="report-data" type="application/json">{data}</script>
<script>{script}</script>
</body></html>
"""

SCRIPT = r"""
(function () {
  var data = JSON.parse(document.getElementById("report-data").textContent);
  var filters = Array.prototype.slice.call(document.querySelectorAll("[data-filter]"));

  function chosen() {
    var values = {};
    filters.forEach(function (f) { values[f.dataset.filter] = f.value; });
    return values;
  }
  function keeps(item, values) {
    return Object.keys(values).every(function (key) { return !values[key] || item[key] === values[key]; });
  }
  function mean(xs) { return xs.reduce(function (a, b) { return a + b; }, 0) / xs.length; }
  function std(xs) {
    if (xs.length < 2) return NaN;
    var m = mean(xs);
    return Math.sqrt(xs.reduce(function (a, x) { return a + (x - m) * (x - m); }, 0) / (xs.length - 1));
  }
  function cell(tag, text) { var c = document.createElement(tag); c.textContent = text; return c; }

  function renderSummary(values) {
    var tasks = data.tasks.filter(function (t) { return !values.task || t === values.task; });
    var scores = {};
    data.runs.forEach(function (run) {
      if (run.score === null || !keeps(run, values)) return;
      var key = run.row + "|" + run.task;
      (scores[key] = scores[key] || []).push(run.score * 100);
    });
    var most = 0;
    Object.keys(scores).forEach(function (k) { most = Math.max(most, scores[k].length); });
    var table = document.getElementById("summary");
    var head = document.createElement("tr");
    data.keys.concat(["trainable params"], tasks.map(function (t) { return data.headers[t]; }), ["Avg."])
      .forEach(function (h) { head.appendChild(cell("th", h)); });
    table.tHead.replaceChildren(head);
    var body = [];
    data.rows.forEach(function (row, index) {
      var present = tasks.filter(function (t) { return scores[index + "|" + t]; });
      if (!present.length) return;
      var tr = document.createElement("tr"), centres = [];
      row.label.forEach(function (v) { tr.appendChild(cell("td", v)); });
      tr.appendChild(cell("td", row.trainable));
      tasks.forEach(function (t) {
        var xs = scores[index + "|" + t];
        if (!xs) { tr.appendChild(cell("td", "–")); return; }
        var m = mean(xs), s = std(xs), text = m.toFixed(1);
        if (!isNaN(s)) text += " ± " + s.toFixed(1);
        if (xs.length < most) text += " (n=" + xs.length + ")";
        centres.push(m);
        tr.appendChild(cell("td", text));
      });
      tr.appendChild(cell("td", centres.length === tasks.length ? mean(centres).toFixed(1) : "–"));
      body.push(tr);
    });
    table.tBodies[0].replaceChildren.apply(table.tBodies[0], body);
    makeSortable(table);
  }

  function apply() {
    var values = chosen();
    renderSummary(values);
    document.querySelectorAll("#runs tbody tr").forEach(function (tr) {
      tr.hidden = !keeps(tr.dataset, values);
    });
    document.querySelectorAll("#comparison tbody tr, section.task").forEach(function (el) {
      el.hidden = !!values.task && el.dataset.task !== values.task;
    });
    if (window.Plotly) {
      document.querySelectorAll("section.task:not([hidden]) .plotly-graph-div").forEach(function (div) {
        Plotly.Plots.resize(div);
      });
    }
  }

  function number(text) {
    var x = parseFloat(String(text).replace(/[,\s]/g, ""));
    if (isNaN(x)) return null;
    if (/^-?[\d.]+M/.test(text)) x *= 1e6; else if (/^-?[\d.]+K/.test(text)) x *= 1e3;
    return x;
  }
  function makeSortable(table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, column) {
      th.onclick = function () {
        var descending = th.classList.contains("asc");
        Array.prototype.forEach.call(th.parentNode.cells, function (c) { c.classList.remove("asc", "desc"); });
        th.classList.add(descending ? "desc" : "asc");
        var rows = Array.prototype.slice.call(table.tBodies[0].rows);
        rows.sort(function (a, b) {
          var x = a.cells[column].textContent, y = b.cells[column].textContent;
          var nx = number(x), ny = number(y), order;
          if (nx !== null && ny !== null) order = nx - ny;
          else if (nx !== null || ny !== null) order = nx !== null ? -1 : 1;
          else order = x.localeCompare(y);
          return descending ? -order : order;
        });
        rows.forEach(function (r) { table.tBodies[0].appendChild(r); });
      };
    });
  }

  // report.html#task=mrpc&model=minilm opens with those filters set (and the address follows the filters)
  location.hash.replace(/^#/, "").split("&").forEach(function (pair) {
    var parts = pair.split("="), key = decodeURIComponent(parts[0]), value = decodeURIComponent(parts[1] || "");
    filters.forEach(function (f) {
      var known = Array.prototype.some.call(f.options, function (o) { return o.value === value; });
      if (f.dataset.filter === key && known) f.value = value;
    });
  });
  filters.forEach(function (f) {
    f.addEventListener("change", function () {
      history.replaceState(null, "", "#" + filters.filter(function (g) { return g.value; }).map(function (g) {
        return g.dataset.filter + "=" + encodeURIComponent(g.value); }).join("&"));
      apply();
    });
  });
  document.querySelectorAll("table.sortable").forEach(function (t) { if (t.id !== "summary") makeSortable(t); });
  apply();
  function showErrors() {
    document.getElementById("script-errors").textContent = window.reportErrors.length
      ? "Script errors while drawing this report:\n" + window.reportErrors.join("\n") : "";
  }
  showErrors();
  window.addEventListener("error", function () { setTimeout(showErrors, 0); });
  document.body.dataset.ready = "yes";
})();
"""
