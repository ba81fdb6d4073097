"""What researchers look at: result records -> one DataFrame -> tables and figures.

    import analysis
    df = analysis.load_results()            # results/ (or $RESULTS_DIR), one row per run
    print(analysis.to_markdown(analysis.variant_task_table(df)))
    fig = analysis.plot_metric_vs_params(df, "mrpc")

Reads JSON result files only: this package never imports torch (nor transformers, variants, experiments).
Command line: ``python -m analysis [RESULTS_FOLDER] [--out FOLDER] [--stat median]``;
``python -m analysis report RESULTS_FOLDER --out report.html`` writes one self-contained HTML report.
"""
from .plots import (NoDataError, pareto_front, plot_cost, plot_learning_curves, plot_metric_vs_alpha,
                    plot_metric_vs_params, plot_metric_vs_rank, save_figure)
from .report import build_report, write_report
from .tables import (cost_table, default_grouping, load_results, ok_runs, ordered_tasks,
                     ordered_variants, summarize, to_markdown, variant_task_table)

__all__ = ["NoDataError", "build_report", "cost_table", "default_grouping", "load_results", "ok_runs",
           "ordered_tasks", "ordered_variants", "pareto_front", "plot_cost", "plot_learning_curves",
           "plot_metric_vs_alpha", "plot_metric_vs_params", "plot_metric_vs_rank", "save_figure", "summarize",
           "to_markdown", "variant_task_table", "write_report"]
