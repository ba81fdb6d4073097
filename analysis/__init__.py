"""What researchers look at: result records -> one DataFrame -> tables and figures.

    import analysis
    df = analysis.load_results()            # results/ (or $RESULTS_DIR), one row per run
    print(analysis.to_markdown(analysis.variant_task_table(df)))
    fig = analysis.plot_metric_vs_params(df, "mrpc")
    table = analysis.compare(df, analysis.load_predictions(df), reference="lora")  # paired differences

Reads result records (JSON) and prediction sidecars (parquet) only: this package never imports torch (nor transformers, variants, experiments).
Command line: ``python -m analysis [RESULTS_FOLDER] [--out FOLDER] [--stat median] [--compare lora] [--target this-dev-set]``;
``python -m analysis report RESULTS_FOLDER --out report.html [--compare lora]`` writes one self-contained HTML report;
``python -m analysis claims CLAIMS.yaml`` tests published claims (``check_claims``, ``summarize_claims``) and
``python -m analysis claims register CLAIMS.yaml`` registers them (``registration``);
``python -m analysis plan RESULTS_FOLDER --compare lora --margin 1.5`` says what a study can resolve (``planning``).
The statistics are explained in docs/statistics.md.
"""
from . import stats, verdicts
from .comparison import FAILURES, VERDICTS, compare, failure_table, format_comparison, load_predictions, plot_differences
from .plots import (NoDataError, pareto_front, plot_cost, plot_learning_curves, plot_metric_vs_alpha,
                    plot_metric_vs_params, plot_metric_vs_rank, save_figure)
from .published_claims import check_claims, summarize_claims
from .report import build_report, write_report
from .tables import (cost_table, default_grouping, load_results, ok_runs, ordered_tasks,
                     ordered_variants, summarize, to_markdown, variant_task_table)

__all__ = ["FAILURES", "NoDataError", "VERDICTS", "build_report", "check_claims", "compare", "cost_table", "default_grouping", "failure_table",
           "format_comparison", "load_predictions", "load_results", "ok_runs", "ordered_tasks", "ordered_variants",
           "pareto_front", "plot_cost", "plot_differences", "plot_learning_curves", "plot_metric_vs_alpha",
           "plot_metric_vs_params", "plot_metric_vs_rank", "save_figure", "stats", "summarize", "summarize_claims", "to_markdown",
           "variant_task_table", "verdicts", "write_report"]
