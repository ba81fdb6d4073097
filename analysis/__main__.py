"""``python -m analysis [RESULTS_FOLDER] [--out FOLDER] [--stat median]``

Prints the variant x task table and the cost table as markdown, then writes every figure that the
results can support (PNG + SVG) for each task to ``--out`` (default: RESULTS_FOLDER/figures).

``python -m analysis report RESULTS_FOLDER [--out report.html]`` writes one self-contained HTML report
(see analysis/report.py) instead.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no window; set before anything imports pyplot

from . import plots, tables  # noqa: E402

FIGURES = {  # file name prefix -> plot function (each takes the DataFrame and a task)
    "params": plots.plot_metric_vs_params,
    "rank": plots.plot_metric_vs_rank,
    "alpha": plots.plot_metric_vs_alpha,
    "cost": plots.plot_cost,
    "curves": plots.plot_learning_curves,
}


def say(text: str = "", file=None) -> None:
    """print, flushed; when the reader has gone (``python -m analysis | head``) keep working silently."""
    stream = file or sys.stdout
    try:
        print(text, file=stream, flush=True)
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), stream.fileno())


def parse_arguments(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m analysis", description=__doc__.split("\n\n")[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="?", default=None,
                        help=f"results folder (default: ${tables.RESULTS_DIR_VARIABLE} or the repo's "
                             f"results/); any parent of runs/ folders works")
    parser.add_argument("--out", default=None, help="where figures go (default: RESULTS_FOLDER/figures)")
    parser.add_argument("--stat", default="mean±std", choices=tables.STATS,
                        help="table cells: mean ± std over seeds (default; 'mean' means the same) "
                             "or the median")
    parser.add_argument("--by", default=None,
                        help="comma-separated table rows, e.g. variant,rank (default: variant plus the "
                             "settings that vary)")
    parser.add_argument("--task", action="append", default=None,
                        help="draw figures for this task only (repeatable; default: every task)")
    parser.add_argument("--no-figures", action="store_true", help="print the tables only")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["report"]:  # a results folder named "report" is ./report
        return report_main(argv[1:])
    arguments = parse_arguments(argv)
    try:
        return run(arguments)
    except (FileNotFoundError, ValueError) as error:
        say(f"error: {error}", file=sys.stderr)
        return 2


def run(arguments: argparse.Namespace) -> int:
    folder = Path(arguments.results or os.environ.get(tables.RESULTS_DIR_VARIABLE)
                  or tables.DEFAULT_RESULTS_DIR)
    df = tables.load_results(folder)
    if df.empty:
        say(f"no result records (runs/*.json) found under {folder}", file=sys.stderr)
        return 1
    ok = tables.ok_runs(df)
    say(f"# Results in {folder}: {len(df)} runs, {len(ok)} ok, {len(df) - len(ok)} failed\n")
    if ok.empty:
        say("no successful run to summarize", file=sys.stderr)
        return 1
    by = arguments.by.split(",") if arguments.by else None
    if by and "seed" in by:
        cells = "one seed per row"
    else:
        cells = "median over seeds" if arguments.stat == "median" else "mean ± std over seeds"
    say(f"## Main metric per task ×100 ({cells})\n")
    say(tables.to_markdown(tables.variant_task_table(df, stat=arguments.stat, by=by)))
    say("\n## Cost (median over all runs of a configuration)\n")
    say(tables.to_markdown(tables.cost_table(df, by=by)))
    failed = df[df["status"] != "ok"]
    if not failed.empty:
        say(f"\n## Failed runs ({len(failed)})\n")
        columns = [c for c in ("study", "variant", "task", "rank", "alpha", "seed", "error") if c in failed]
        say(tables.to_markdown(failed[columns]))
    if not arguments.no_figures:
        write_figures(df, Path(arguments.out) if arguments.out else folder / "figures", arguments.task)
    return 0


def write_figures(df, out: Path, tasks=None) -> None:
    known = tables.ordered_tasks(tables.ok_runs(df)["task"].dropna())
    unknown = sorted(set(tasks or []) - set(known))
    if unknown:
        raise ValueError(f"unknown task(s) {unknown}; choose among {known}")
    tasks = tasks or known
    written, skipped = 0, []
    for task in tasks:
        for prefix, plot in FIGURES.items():
            try:
                figure = plot(df, task)
            except plots.NoDataError as reason:
                skipped.append(f"{prefix}_{task}: {reason}")
                continue
            plots.save_figure(figure, out, f"{prefix}_{task}")
            written += 1
    say(f"\nwrote {written} figures (PNG + SVG) to {out}")
    for line in skipped:
        say(f"skipped {line}")


def report_main(argv) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis report",
                                     description="Write one self-contained HTML report of a results folder.")
    parser.add_argument("results", nargs="?", default=None,
                        help=f"results folder (default: ${tables.RESULTS_DIR_VARIABLE} or the repo's results/)")
    parser.add_argument("--out", default=None, help="the HTML file to write (default: RESULTS_FOLDER/report.html)")
    parser.add_argument("--title", default=None, help="the page title (default: names the folder)")
    arguments = parser.parse_args(argv)
    from .report import write_report

    folder = Path(arguments.results or os.environ.get(tables.RESULTS_DIR_VARIABLE) or tables.DEFAULT_RESULTS_DIR)
    try:
        df = tables.load_results(folder)
        if df.empty:
            raise ValueError(f"no result records (runs/*.json) found under {folder}")
        out = write_report(df, arguments.out or folder / "report.html",
                           title=arguments.title or f"lora-arena results: {folder.resolve().name}")
    except (FileNotFoundError, ValueError) as error:
        say(f"error: {error}", file=sys.stderr)
        return 2
    say(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MB, {len(df)} runs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
