"""What researchers look at: result records -> one DataFrame -> tables and figures.

    import analysis
    df = analysis.load_results()            # results/ (or $RESULTS_DIR), one row per run
    print(analysis.to_markdown(analysis.variant_task_table(df)))
    fig = analysis.plot_metric_vs_params(df, "mrpc")
    table = analysis.compare(df, analysis.load_predictions(df), reference="lora")  # paired differences

Reads result records (JSON) and prediction sidecars (parquet) only: this package never imports torch (nor
transformers, variants, experiments). Its names load on first use, so ``import analysis.metrics`` (the GLUE
metrics, which training uses too) costs numpy and nothing else.
Command line: ``python -m analysis [RESULTS_FOLDER] [--out FOLDER] [--stat median] [--compare lora]``;
``python -m analysis report RESULTS_FOLDER --out report.html [--compare lora]`` writes one self-contained HTML report;
``python -m analysis claims CLAIMS.yaml`` tests published claims (``check_claims``, ``summarize_claims``) and
``python -m analysis claims register CLAIMS.yaml`` registers them (``registration``);
``python -m analysis plan RESULTS_FOLDER --compare lora --margin 1.5`` says what a study can resolve (``planning``).
"""
import importlib

#: each public name -> the module that defines it (a module's own name: the module itself)
_EXPORTS = {
    "stats": "stats", "metrics": "metrics", "verdicts": "verdicts",
    **dict.fromkeys(("FAILURES", "VERDICTS", "failure_table", "compare", "format_comparison", "load_predictions",
                     "plot_differences"), "comparison"),
    **dict.fromkeys(("NoDataError", "pareto_front", "plot_cost", "plot_learning_curves", "plot_metric_vs_alpha",
                     "plot_metric_vs_params", "plot_metric_vs_rank", "save_figure"), "plots"),
    **dict.fromkeys(("check_claims", "summarize_claims"), "published_claims"),
    **dict.fromkeys(("build_report", "write_report"), "report"),
    **dict.fromkeys(("cost_table", "default_grouping", "load_results", "ok_runs", "ordered_tasks",
                     "ordered_variants", "summarize", "to_markdown", "variant_task_table"), "tables"),
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'analysis' has no attribute {name!r}")
    module = importlib.import_module(f".{_EXPORTS[name]}", __name__)
    value = module if _EXPORTS[name] == name else getattr(module, name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
