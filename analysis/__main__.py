"""``python -m analysis [RESULTS_FOLDER] [--out FOLDER] [--stat median] [--compare lora] [--target ...]``

Prints the variant x task table, the runs that did not fit and did not generalise, the cost table and,
for a tuning folder, the tuning sensitivity as markdown, then writes every figure that the results can
support (PNG + SVG) for each task to ``--out`` (default: RESULTS_FOLDER/figures). With
``--compare VARIANT``, also the paired differences to that variant (analysis.compare) and their
forest plot.

``python -m analysis report RESULTS_FOLDER [--out report.html] [--compare VARIANT]`` writes one
self-contained HTML report (see analysis/report.py) instead.

``python -m analysis claims CLAIMS.yaml`` tests the published claims a claims file lists against the
records it names (see analysis/published_claims.py): one verdict per claim, then the per-task rows;
``python -m analysis claims register CLAIMS.yaml`` registers the file (analysis/registration.py).

``python -m analysis plan RESULTS_FOLDER --compare VARIANT --margin M`` says what a study can resolve
(analysis/planning.py).

``--target`` chooses the target of inference of every interval: ``new-examples`` (default; seeds and
dev examples vary) or ``this-dev-set`` (the dev examples fixed, only seeds vary).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import yaml

import matplotlib

matplotlib.use("Agg")  # files only, no window; set before anything imports pyplot

from . import comparison, plots, stats, tables, tuning  # noqa: E402

FIGURES = {  # file name prefix -> plot function (each takes the DataFrame and a task)
    "params": plots.plot_metric_vs_params,
    "rank": plots.plot_metric_vs_rank,
    "alpha": plots.plot_metric_vs_alpha,
    "cost": plots.plot_cost,
    "curves": plots.plot_learning_curves,
    "tuning": tuning.plot_tuning_sensitivity,
}
SCORE_FIGURES = {"params", "rank", "alpha"}  # those that take metric=: they follow --split


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
    parser.add_argument("results", nargs="*", default=None,
                        help=f"results folder(s) (default: ${tables.RESULTS_DIR_VARIABLE} or the repo's "
                             f"results/); any parent of runs/ folders works; several are read as one table")
    parser.add_argument("--out", default=None, help="where figures go (default: RESULTS_FOLDER/figures, of the first)")
    parser.add_argument("--stat", default="mean±std", choices=tables.STATS,
                        help="table cells: mean ± std over seeds (default; 'mean' means the same), "
                             "mean ± half the width of its 95%% t interval (mean±ci), or the median")
    parser.add_argument("--by", default=None,
                        help="comma-separated table rows, e.g. variant,rank (default: variant plus the "
                             "settings that vary within a variant on one task; a rate tuned per task "
                             "does not split rows)")
    parser.add_argument("--task", action="append", default=None,
                        help="draw figures for this task only (repeatable; default: every task)")
    parser.add_argument("--no-figures", action="store_true", help="print the tables only")
    parser.add_argument("--compare", metavar="VARIANT", default=None, type=reference_spec,
                        help="also print paired differences to this reference variant (e.g. lora, full), or to "
                             "the same configuration at other settings (e.g. precision=fp32), or to 'constant' (the "
                             "majority class; did it learn anything?): 95%% and family "
                             "CIs, adjusted p-values, verdicts, the runs that did not fit or did not generalise")
    parser.add_argument("--split", default="validation", choices=list(comparison.RECORDED_SCORE),
                        help="which split the table, the score figures and --compare score: validation "
                             "(dev, the default), selection (the split every choice was made on) or test (a held-out "
                             "test split, data.test_size)")
    parser.add_argument("--margin", type=positive(float), default=1.5,
                        help="--compare's equivalence margin in points ×100 (default: 1.5)")
    add_target_argument(parser)
    return parser.parse_args(argv)


def positive(kind):
    """An argparse type: ``kind`` (int or float) above 0, else an error naming the value."""
    def convert(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {kind.__name__}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"{text!r} must be above 0")
        return value
    convert.__name__ = f"positive {kind.__name__}"
    return convert


def add_target_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--target", default="new-examples", choices=list(stats.TARGETS),
                        help="what the intervals are about: new-examples (the default: seeds and dev examples "
                             "both vary, as for new examples of the task) or this-dev-set (the dev examples "
                             "fixed: only seeds vary)")


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["report"]:  # a results folder named "report" is ./report
        return report_main(argv[1:])
    if argv[:1] == ["claims"]:
        return claims_main(argv[1:])
    if argv[:1] == ["plan"]:
        return plan_main(argv[1:])
    arguments = parse_arguments(argv)
    try:
        return run(arguments)
    except (FileNotFoundError, ValueError) as error:
        say(f"error: {error}", file=sys.stderr)
        return 2


#: the key that makes runs hold out each split that is not dev
SPLIT_KEY = {"selection": "data.selection_fraction", "test": "data.test_size", "validation": "data.glue_dir"}


def reference_spec(text: str):
    """``--compare``: a variant name, or ``key=value[,key=value]`` (column values of the reference rows,
    e.g. ``precision=fp32``: each row against the same configuration at fp32)."""
    if "=" not in text:
        return text
    spec = {}
    for part in text.split(","):
        key, _, value = part.partition("=")
        if not key or not value:
            raise argparse.ArgumentTypeError(f"{text!r}: give a variant, or key=value pairs such as precision=fp32")
        spec[key.strip()] = yaml.safe_load(value.strip())
    return spec


def reference_name(reference) -> str:
    return reference if isinstance(reference, str) else ",".join(f"{k}={v}" for k, v in reference.items())


def run(arguments: argparse.Namespace) -> int:
    folders = [Path(f) for f in arguments.results] or [Path(os.environ.get(tables.RESULTS_DIR_VARIABLE)
                                                            or tables.DEFAULT_RESULTS_DIR)]
    folder = folders[0]
    df = tables.load_results(folders[0]) if len(folders) == 1 else tables.load_many(folders)
    if df.empty:
        say(f"no result records (runs/*.json) found under {folder}", file=sys.stderr)
        return 1
    ok = tables.ok_runs(df)
    say(f"# Results in {folder}: {len(df)} runs, {len(ok)} ok, {len(df) - len(ok)} failed\n")
    if ok.empty:
        say("no successful run to summarize", file=sys.stderr)
        return 1
    if (isinstance(arguments.compare, str) and arguments.compare != comparison.CONSTANT
            and arguments.compare not in set(ok["variant"])):
        raise ValueError(f"unknown --compare variant {arguments.compare!r}; the results hold "
                         f"{tables.ordered_variants(ok['variant'].dropna())} (or {comparison.CONSTANT!r}: "
                         f"the best constant prediction)")
    score = comparison.RECORDED_SCORE[arguments.split]
    if score not in ok or ok[score].isna().all():
        raise ValueError(f"--split {arguments.split}: no successful run under {folder} recorded a "
                         f"{arguments.split} score (runs record one when {SPLIT_KEY[arguments.split]} is set); "
                         f"use --split validation")
    by = arguments.by.split(",") if arguments.by else None
    if by and "seed" in by:
        cells = "one seed per row"
    else:
        cells = {"median": "median over seeds", "mean±ci": "mean ± 95 % t interval over seeds"}.get(
            arguments.stat, "mean ± std over seeds")
    split_name = {"validation": "dev"}.get(arguments.split, f"the {arguments.split} split")
    say(f"## Main metric per task ×100 on {split_name} ({cells})\n")
    say(tables.to_markdown(tables.variant_task_table(df, stat=arguments.stat, by=by, metric=score)))
    predictions = comparison.load_predictions(df)
    task_columns = tables.ordered_tasks(ok["task"].dropna())
    for failure, why in (("did not fit", "final training loss not below the constant predictor's"),
                         ("did not generalise", f"a {arguments.split} score no better than the best constant "
                                                f"prediction's")):
        counts = comparison.failure_table(df, predictions, failure, by=by, split=arguments.split)
        if (counts[task_columns] != "–").to_numpy().any():
            say(f"\n## Runs that {failure} per cell (of those that could be judged: {why})\n")
            say(tables.to_markdown(counts))
    say("\n## Cost (median over all runs of a configuration)\n")
    say(tables.to_markdown(tables.cost_table(df, by=by)))
    sensitivity = tuning.sensitivity_table(df)
    if not sensitivity.empty:
        say("\n## Tuning sensitivity: expected best selection score ×100 of n tuning runs drawn from the grid "
            "(Dodge et al. 2019; best of 1 = the mean over the grid)\n")
        say(tables.to_markdown(sensitivity))
    failed = df[df["status"] != "ok"]
    if not failed.empty:
        say(f"\n## Failed runs ({len(failed)})\n")
        columns = [c for c in ("study", "variant", "task", "rank", "alpha", "seed", "error") if c in failed]
        say(tables.to_markdown(failed[columns]))
    differences = compare(df, predictions, arguments, by) if arguments.compare else None
    if not arguments.no_figures:
        out = Path(arguments.out) if arguments.out else folder / "figures"
        write_figures(df, out, arguments.task, split=arguments.split)
        if differences is not None and differences["difference"].notna().any():
            name = (f"compare_{reference_name(arguments.compare).replace('=', '-').replace(',', '_')}"
                    f"{split_suffix(arguments.split)}{target_suffix(arguments.target)}")
            plots.save_figure(comparison.plot_differences(differences), out, name)
            say(f"wrote {name} (PNG + SVG) to {out}")
    return 0


def compare(df, predictions, arguments, by=None):
    """Print analysis.compare's table for ``--compare``; return it."""
    table = comparison.compare(df, predictions, reference=arguments.compare, split=arguments.split,
                               margin=arguments.margin, by=by, target=arguments.target)
    say(f"\n## Paired differences to {reference_name(arguments.compare)} (×100; {comparison.table_description(table)})\n")
    say(tables.to_markdown(comparison.format_comparison(table)))
    if (table["verdict"] == "no predictions").all():
        say(f"\nno per-example predictions on {arguments.split} in these results: the differences need them "
            f"(records written before predictions were saved have none)")
    return table


def split_suffix(split: str) -> str:
    """How a figure's file name marks the split it shows: nothing for dev, ``_{split}`` otherwise, so that
    a figure on the selection split sits beside its dev twin instead of overwriting it."""
    return "" if split == "validation" else f"_{split}"


def target_suffix(target: str) -> str:
    """How a forest plot's file name marks its target: nothing for new examples, ``_this_dev_set``
    otherwise."""
    return "" if target == "new-examples" else "_" + target.replace("-", "_")


def write_figures(df, out: Path, tasks=None, split: str = "validation") -> None:
    """Every figure the records support, per task. Score figures show ``split``; off dev, their file
    names end in ``_{split}`` so that they sit beside the dev figures."""
    known = tables.ordered_tasks(tables.ok_runs(df)["task"].dropna())
    unknown = sorted(set(tasks or []) - set(known))
    if unknown:
        raise ValueError(f"unknown task(s) {unknown}; choose among {known}")
    tasks = tasks or known
    score, suffix = comparison.RECORDED_SCORE[split], split_suffix(split)
    written, skipped = 0, []
    for task in tasks:
        for prefix, plot in FIGURES.items():
            scored = prefix in SCORE_FIGURES
            name = f"{prefix}_{task}{suffix if scored else ''}"
            try:
                figure = plot(df, task, metric=score) if scored else plot(df, task)
            except plots.NoDataError as reason:
                skipped.append(f"{name}: {reason}")
                continue
            plots.save_figure(figure, out, name)
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
    parser.add_argument("--compare", metavar="VARIANT", default=None,
                        help="also show the paired differences to this variant (needs prediction sidecars)")
    parser.add_argument("--margin", type=positive(float), default=1.5,
                        help="--compare's equivalence margin in points ×100 (default: 1.5)")
    add_target_argument(parser)
    arguments = parser.parse_args(argv)
    from .report import write_report

    folder = Path(arguments.results or os.environ.get(tables.RESULTS_DIR_VARIABLE) or tables.DEFAULT_RESULTS_DIR)
    try:
        df = tables.load_results(folder)
        if df.empty:
            raise ValueError(f"no result records (runs/*.json) found under {folder}")
        differences = None
        if arguments.compare:
            differences = comparison.compare(df, comparison.load_predictions(df), reference=arguments.compare,
                                             margin=arguments.margin, target=arguments.target)
        out = write_report(df, arguments.out or folder / "report.html", comparison=differences,
                           title=arguments.title or f"lora-arena results: {folder.resolve().name}")
    except (FileNotFoundError, ValueError) as error:
        say(f"error: {error}", file=sys.stderr)
        return 2
    say(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MB, {len(df)} runs)")
    return 0


def claims_main(argv) -> int:
    if argv[:1] == ["register"]:
        return register_main(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m analysis claims",
                                     description="Test the published claims a claims file lists: "
                                                 "confirmed, refuted or not resolved at this power. "
                                                 "'python -m analysis claims register CLAIMS.yaml' registers "
                                                 "the file first.")
    parser.add_argument("claims", help="the claims file (YAML; see analysis/published_claims.py)")
    add_target_argument(parser)
    arguments = parser.parse_args(argv)
    from . import published_claims

    try:
        scores = published_claims.published_scores_table(arguments.claims)  # its errors come before the rest
        table = published_claims.check_claims(arguments.claims, target=arguments.target)
    except (FileNotFoundError, ValueError) as error:
        say(f"error: {error}", file=sys.stderr)
        return 2
    say(f"# Published claims ({arguments.claims}; paired differences ×100; target of inference: "
        f"{stats.TARGET_NAMES[arguments.target]}; each claim's rows are those of its --compare table, one family "
        f"per results folder, reference and split, every verdict read off the family interval)\n")
    say(tables.to_markdown(published_claims.summarize_claims(table)))
    say("\n## Per task\n")
    say(tables.to_markdown(published_claims.format_claims(table)))
    if scores is not None:
        say("\n## Next to published dev scores of other checkpoints (×100; theirs as published)\n")
        say(tables.to_markdown(scores))
    return 0


def register_main(argv) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis claims register",
                                     description="Register a claims file: record its sha256, the time and its "
                                                 "claims in each results folder it names (commit that file).")
    parser.add_argument("claims", help="the claims file (YAML; see analysis/published_claims.py)")
    arguments = parser.parse_args(argv)
    from . import registration

    try:
        done = registration.register(arguments.claims)
    except (FileNotFoundError, ValueError) as error:
        say(f"error: {error}", file=sys.stderr)
        return 2
    for file, what in done:
        existing = tables.load_results(file.parent) if file.parent.is_dir() else None
        runs = 0 if existing is None or existing.empty else len(tables.ok_runs(existing))
        say(f"{file}: {what}; the folder holds {runs} successful run(s) already"
            + (" (registered after the fact for those)" if runs else ""))
    return 0


def design_spec(text: str) -> tuple[int, int]:
    """``--design``: SEEDSxEXAMPLES, both whole numbers, at least 2 seeds and 2 examples."""
    seeds, _, examples = text.lower().partition("x")
    if not (seeds.isdigit() and examples.isdigit() and int(seeds) >= 2 and int(examples) >= 2):
        raise argparse.ArgumentTypeError(f"{text!r}: give SEEDSxEXAMPLES, e.g. 5x5000 (at least 2 of each)")
    return int(seeds), int(examples)


def plan_main(argv) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis plan",
                                     description="What a study can resolve: from the runs in a folder (a pilot "
                                                 "or a finished study), per task and configuration, the variance "
                                                 "components and the seeds (or evaluation examples) needed.")
    parser.add_argument("results", help="the results folder (its records and prediction sidecars)")
    parser.add_argument("--compare", metavar="VARIANT", required=True, help="the reference variant (e.g. lora)")
    parser.add_argument("--margin", type=positive(float), default=1.5,
                        help="equivalence margin in points ×100 (default: 1.5)")
    parser.add_argument("--difference", type=positive(float), default=None,
                        help="the true difference to detect, in points ×100 (default: the margin)")
    parser.add_argument("--split", default="validation", choices=list(comparison.RECORDED_SCORE),
                        help="the split the comparisons score (default: validation)")
    parser.add_argument("--family-size", type=positive(int), default=None,
                        help="plan for a table of this many comparisons (default: the folder's own table)")
    parser.add_argument("--design", type=design_spec, default=None, metavar="SEEDSxEXAMPLES",
                        help="also say what a study of this design would detect, e.g. 5x5000 (5 seeds scored "
                             "on 5,000 evaluation examples)")
    add_target_argument(parser)
    arguments = parser.parse_args(argv)
    from . import planning

    try:
        df = tables.load_results(arguments.results)
        if df.empty:
            raise ValueError(f"no result records (runs/*.json) found under {arguments.results}")
        known = set(tables.ok_runs(df)["variant"])
        if arguments.compare not in known:
            raise ValueError(f"unknown --compare variant {arguments.compare!r}; the results hold "
                             f"{tables.ordered_variants(tables.ok_runs(df)['variant'].dropna())}")
        table = planning.plan(df, comparison.load_predictions(df), arguments.compare, margin=arguments.margin,
                              difference=arguments.difference, split=arguments.split, target=arguments.target,
                              family_size=arguments.family_size, design=arguments.design)
    except (FileNotFoundError, ValueError) as error:
        say(f"error: {error}", file=sys.stderr)
        return 2
    say(f"# What {arguments.results} can resolve against {arguments.compare} ({planning.plan_description(table)})\n")
    say(tables.to_markdown(planning.format_plan(table)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
