"""analysis/: loading records, paper-style tables, the Pareto front, figures, the command, the notebook."""
import os
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import analysis
from conftest import REPO
from fake_records import write_fake_records

STUDY = "glue_small"


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """A results folder with two studies; returns (folder, records of the first study)."""
    folder = tmp_path_factory.mktemp("results")
    records = write_fake_records(folder, study=STUDY, seed=0)
    write_fake_records(folder, study="repeat", seed=1)
    return folder, records


@pytest.fixture(scope="module")
def df(results):
    folder, _ = results
    return analysis.load_results(folder / STUDY)


def hand_cell(records, variant, task, rank, alpha):
    """Scores of the ok runs of one configuration, straight from the records."""
    return [r["main_score"] for r in records if r["status"] == "ok" and r["variant"] == variant
            and r["task"] == task and r["rank"] == rank and r["alpha"] == alpha]


def subprocess_env(**extra):
    return {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
            **extra}


# --------------------------------------------------------------------------------------------- loading
def test_load_results_one_row_per_record_with_expanded_metrics(results, df):
    _, records = results
    assert len(df) == len(records)
    assert set(df["config_hash"]) == {r["config_hash"] for r in records}
    assert {"metric.accuracy", "metric.f1", "metric.pearson", "metric.spearmanr", "study",
            "learning_curve", "main_score", "trainable_params"} <= set(df.columns)
    assert (df["study"] == STUDY).all()
    by_hash = df.set_index("config_hash")
    for record in records[::7]:
        row = by_hash.loc[record["config_hash"]]
        assert row["learning_curve"] == record["learning_curve"]
        assert row["status"] == record["status"]
        for name, value in record["metrics"].items():
            assert row[f"metric.{name}"] == value
    assert (df["status"] == "failed").sum() == sum(r["status"] == "failed" for r in records) > 0


def test_load_results_from_a_parent_folder_names_each_study(results):
    folder, records = results
    everything = analysis.load_results(folder)
    assert len(everything) == 2 * len(records)
    assert everything["study"].value_counts().to_dict() == {STUDY: len(records), "repeat": len(records)}
    assert len(analysis.load_results(folder / STUDY / "runs")) == len(records)  # a runs/ folder itself


def test_load_results_default_folder_comes_from_the_environment(results, monkeypatch):
    folder, records = results
    monkeypatch.setenv("RESULTS_DIR", str(folder / "repeat"))
    assert len(analysis.load_results()) == len(records)
    with pytest.raises(FileNotFoundError, match="no_such_folder"):
        analysis.load_results(folder / "no_such_folder")


def test_load_results_skips_unreadable_files_with_a_warning(tmp_path):
    records = write_fake_records(tmp_path, study="s")
    (tmp_path / "s" / "runs" / "broken.json").write_text('{"status": "ok", "variant": ')
    (tmp_path / "s" / "runs" / "a_list.json").write_text("[1, 2, 3]")
    with pytest.warns(UserWarning) as caught:
        loaded = analysis.load_results(tmp_path)
    messages = " ".join(str(w.message) for w in caught)
    assert "broken.json" in messages and "a_list.json" in messages
    assert len(loaded) == len(records)


# ---------------------------------------------------------------------------------------------- tables
def test_summary_matches_hand_computed_statistics(results, df):
    _, records = results
    summary = analysis.summarize(df)
    assert analysis.default_grouping(df) == ["variant", "rank", "alpha"]
    configurations = {(r["variant"], r["task"], r["rank"], r["alpha"]) for r in records}
    assert len(summary) == len(configurations)
    for row in summary.itertuples():
        scores = hand_cell(records, row.variant, row.task, row.rank, row.alpha)
        assert row.n == len(scores)
        assert row.mean == pytest.approx(statistics.mean(scores))
        assert row.std == pytest.approx(statistics.stdev(scores))
        assert row.median == pytest.approx(statistics.median(scores))
    failed_cell = summary[(summary.variant == "lora") & (summary.task == "stsb") & (summary["rank"] == 16)]
    assert failed_cell["n"].item() == 2  # one of its three seeds failed and is left out


def test_a_setting_tuned_per_task_does_not_split_rows_but_one_swept_within_a_task_does():
    def runs(lrs):  # (variant, task, lr) -> two seeds each
        return pd.DataFrame([{"status": "ok", "variant": v, "task": t, "lr": lr, "seed": seed}
                             for v, t, lr in lrs for seed in (1, 2)])
    tuned = runs([("lora", "mrpc", 2e-3), ("lora", "cola", 1e-3), ("full", "mrpc", 1e-4), ("full", "cola", 5e-5)])
    assert analysis.default_grouping(tuned) == ["variant"]
    swept = runs([("lora", "mrpc", 2e-3), ("lora", "mrpc", 1e-3), ("full", "mrpc", 1e-4)])
    assert analysis.default_grouping(swept) == ["variant", "lr"]


def test_variant_task_table_cells_are_mean_and_std_times_100(results, df):
    _, records = results
    table = analysis.variant_task_table(df)
    assert list(table.columns) == ["variant", "rank", "alpha", "trainable params", "mrpc (accuracy)",
                                   "rte (accuracy)", "stsb (pearson)", "Avg."]
    # the order comes from the records: baselines first, then by median trainable parameters (most first)
    order = list(table["variant"].drop_duplicates())
    assert set(order[:2]) == {"full", "head"} and set(order) == {"full", "head", "lora", "rslora", "dora", "vera", "qlora"}
    params = {v: df[df.variant == v]["trainable_params"].median() for v in order}
    assert params[order[0]] >= params[order[1]]
    assert all(params[a] >= params[b] for a, b in zip(order[2:], order[3:]))
    for variant, rank, alpha in [("lora", 4, 16.0), ("rslora", 16, 16.0), ("dora", 8, 16.0),
                                 ("lora", 8, 32.0)]:
        row = table[(table.variant == variant) & (table["rank"] == str(rank))
                     & (table["alpha"] == f"{alpha:g}")].iloc[0]
        means = []
        for task, header in [("mrpc", "mrpc (accuracy)"), ("rte", "rte (accuracy)"),
                             ("stsb", "stsb (pearson)")]:
            scores = hand_cell(records, variant, task, rank, alpha)
            means.append(100 * statistics.mean(scores))
            short = "" if len(scores) == 3 else f" (n={len(scores)})"  # fewer seeds than the others
            assert row[header] == f"{means[-1]:.1f} ± {100 * statistics.stdev(scores):.1f}{short}"
        assert row["Avg."] == f"{statistics.mean(means):.1f}"
    dora = table[table.variant == "dora"].iloc[0]
    assert dora["rte (accuracy)"].endswith(" (n=2)")  # one of its three seeds failed
    assert "(n=" not in dora["mrpc (accuracy)"]
    baseline = table[table.variant == "full"].iloc[0]
    assert baseline["rank"] == "–" and baseline["alpha"] == "–"
    assert baseline["trainable params"].endswith("M")


@pytest.mark.slow
def test_median_table_and_grouping_by_variant_only(results, df):
    _, records = results
    table = analysis.variant_task_table(df, stat="median", by=["variant", "rank", "alpha"])
    row = table[(table.variant == "vera")].iloc[0]
    median = statistics.median(hand_cell(records, "vera", "rte", 64, 16.0))
    assert row["rte (accuracy)"] == f"{100 * median:.1f}"
    with pytest.warns(UserWarning, match="share a seed"):  # lora's ranks and alphas would be pooled
        pooled = analysis.variant_task_table(df, by="variant")
    assert len(pooled) == 7
    with pytest.raises(ValueError, match="median"):
        analysis.variant_task_table(df, stat="average")
    with pytest.raises(ValueError, match="learning_rate"):
        analysis.variant_task_table(df, by=["variant", "learning_rate"])


def test_mean_ci_cells_are_the_t_interval_over_seeds(results, df):
    _, records = results
    t_975 = {1: 12.7062, 2: 4.3027}  # Student t quantiles (0.975) for 1 and 2 degrees of freedom
    table = analysis.variant_task_table(df, stat="mean±ci")
    for variant, rank, alpha in [("lora", 4, 16.0), ("dora", 8, 16.0)]:
        row = table[(table.variant == variant) & (table["rank"] == str(rank))
                    & (table["alpha"] == f"{alpha:g}")].iloc[0]
        for task, header in [("mrpc", "mrpc (accuracy)"), ("rte", "rte (accuracy)")]:
            scores = hand_cell(records, variant, task, rank, alpha)
            half = t_975[len(scores) - 1] * statistics.stdev(scores) / np.sqrt(len(scores))
            assert row[header].split(" (n=")[0] == f"{100 * statistics.mean(scores):.1f} ± {100 * half:.1f}"
    assert np.isnan(analysis.stats.mean_interval_half_width([0.5]))
    assert analysis.stats.mean_interval_half_width([0.80, 0.82, 0.84]) == pytest.approx(
        4.3027 * 0.02 / np.sqrt(3), rel=1e-4)


def test_to_markdown_is_a_well_formed_table(df):
    table = analysis.variant_task_table(df)
    lines = analysis.to_markdown(table).splitlines()
    assert len(lines) == len(table) + 2
    assert lines[0].startswith("| variant | rank | alpha |") and "Avg." in lines[0]
    assert set(lines[1].replace("|", "").split()) <= {":---", "---:"}
    assert all(line.startswith("| ") and line.endswith(" |") for line in lines)
    assert len({line.count(" | ") for line in lines}) == 1  # same number of columns everywhere
    assert analysis.to_markdown(pd.DataFrame({"a": ["x|y"]})).splitlines()[2] == "| x\\|y |"


def test_cost_table_reports_medians(results, df):
    _, records = results
    table = analysis.cost_table(df)
    row = table[table.variant == "qlora"].iloc[0]
    times = [r["seconds_per_step"] for r in records if r["variant"] == "qlora" and r["status"] == "ok"]
    assert row["s / step"] == f"{statistics.median(times):.3f}"
    assert row["runs"] == len(times)


# ------------------------------------------------------------------------------------------ Pareto front
def test_pareto_front_on_a_known_set():
    points = pd.DataFrame({"params": [10, 20, 20, 30, 5, 40, 25, 15, 40, np.nan],
                           "score": [0.5, 0.7, 0.6, 0.7, 0.4, 0.9, 0.65, 0.5, 0.9, 0.99]},
                          index=list("ABCDEFGHIJ"))
    front = analysis.pareto_front(points, x="params", y="score")
    # C, G worse than B at no fewer params; D, H tie a cheaper point's score; F and I are identical
    assert list(front[front].index) == ["A", "B", "E", "F", "I"]


def test_pareto_front_members_are_undominated_and_cover_the_rest():
    rng = np.random.default_rng(3)
    points = pd.DataFrame({"x": rng.integers(1, 20, 60), "y": rng.integers(0, 10, 60)})
    front = analysis.pareto_front(points, x="x", y="y")
    best = points[front]
    for i, point in points.iterrows():
        better = best[(best.x <= point.x) & (best.y >= point.y) & ((best.x < point.x) | (best.y > point.y))]
        assert better.empty == bool(front[i])  # on the front <=> no front point beats it
    # the front, sorted by cost, strictly improves in score
    ordered = best.drop_duplicates().sort_values("x")
    assert ordered["y"].is_monotonic_increasing and ordered["y"].is_unique


# -------------------------------------------------------------------------------------------------- plots
PLOTS = [analysis.plot_metric_vs_params, analysis.plot_metric_vs_rank, analysis.plot_metric_vs_alpha,
         analysis.plot_cost, analysis.plot_learning_curves]


@pytest.mark.slow
@pytest.mark.parametrize("plot", PLOTS, ids=lambda plot: plot.__name__)
def test_each_plot_writes_non_empty_png_and_svg(plot, df, tmp_path):
    figure = plot(df, "mrpc")
    png, svg = analysis.save_figure(figure, tmp_path / "figures", plot.__name__)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert "<svg" in svg.read_text()[:1000] and svg.stat().st_size > 10_000
    assert all(ax.get_xlabel() and ax.get_ylabel() for ax in figure.axes if ax.has_data())


@pytest.mark.slow
def test_saving_the_same_figure_twice_gives_the_same_bytes(df, tmp_path):
    first = analysis.save_figure(analysis.plot_cost(df, "mrpc"), tmp_path / "a", "cost")
    second = analysis.save_figure(analysis.plot_cost(df, "mrpc"), tmp_path / "b", "cost")
    for one, other in zip(first, second):
        assert one.read_bytes() == other.read_bytes(), one.name


def test_rank_plot_draws_hand_computed_means_at_the_fixed_alpha(results, df):
    _, records = results
    figure = analysis.plot_metric_vs_rank(df, "rte")
    ax = figure.axes[0]
    assert ax.get_xscale() == "log" and "16" in ax.get_title()  # the sweep's alpha
    lines = {container.get_label(): container.lines[0] for container in ax.containers}
    assert set(lines) == {"lora", "rslora"}
    for variant, line in lines.items():
        assert list(line.get_xdata()) == [4, 8, 16]
        expected = [100 * statistics.mean(hand_cell(records, variant, "rte", rank, 16.0))
                    for rank in (4, 8, 16)]
        assert np.allclose(line.get_ydata(), expected)


def test_params_plot_marks_the_pareto_front_of_the_means(df):
    ax = analysis.plot_metric_vs_params(df, "stsb").axes[0]
    assert ax.get_xscale() == "log"
    ok = analysis.ok_runs(df)
    points = analysis.summarize(ok[ok["task"] == "stsb"])
    expected = points[analysis.pareto_front(points, y="mean")]
    front_line = next(line for line in ax.get_lines() if line.get_label().startswith("Pareto front"))
    assert sorted(front_line.get_xdata()) == sorted(expected["trainable_params"])


def test_alpha_plot_shows_only_variants_swept_over_alpha(df):
    ax = analysis.plot_metric_vs_alpha(df, "mrpc").axes[0]
    assert {container.get_label() for container in ax.containers} == {"lora", "rslora"}
    assert "r = 8" in ax.get_title()


def one_mrpc_lora_run_with_a_curve(df):
    logged = df[(df["status"] == "ok") & (df["task"] == "mrpc")
                & df["learning_curve"].apply(lambda curve: isinstance(curve, list) and len(curve) > 0)]
    return logged[logged["variant"] == "lora"].iloc[[0]]


def test_learning_curves_never_average_runs_of_different_settings(df):
    one = one_mrpc_lora_run_with_a_curve(df)
    other = one.assign(rank=one["rank"] * 4, path=one["path"] + ".rank32")  # same variant, other rank
    ax = analysis.plot_learning_curves(pd.concat([one, other]), "mrpc").axes[0]
    labels = [line.get_label() for line in ax.lines if line.get_linewidth() == 2]
    assert len(labels) == len(set(labels)) == 2, labels
    assert all(label.endswith("(one run)") for label in labels)


def test_learning_curves_show_dev_only_where_it_was_logged_during_training(df):
    run = one_mrpc_lora_run_with_a_curve(df)
    assert len(analysis.plot_learning_curves(run, "mrpc").axes) == 2  # dev logged every 40 steps
    dev_once = [{**point, "eval": None} for point in run["learning_curve"].iloc[0]]
    dev_once[-1]["eval"] = 0.8  # the protocol's one dev score, at the end
    scored_once = run.assign(learning_curve=[dev_once])
    assert [ax.get_ylabel() for ax in analysis.plot_learning_curves(scored_once, "mrpc").axes] == ["training loss"]


def test_plots_explain_missing_data(df):
    with pytest.raises(analysis.NoDataError, match="rank sweep"):
        analysis.plot_metric_vs_rank(df[df["rank"] == 8], "mrpc")
    with pytest.raises(analysis.NoDataError, match="learning curve"):
        analysis.plot_learning_curves(df[df["variant"] == "vera"], "mrpc")
    with pytest.raises(ValueError, match="mrpc"):
        analysis.plot_cost(df, "sst2")
    with pytest.raises(ValueError, match="several tasks"):
        analysis.plot_cost(df)


# ------------------------------------------------------------------------------ command, notebook, imports
@pytest.mark.slow
def test_command_prints_markdown_tables_and_writes_figures(results, tmp_path):
    folder, _ = results
    completed = subprocess.run(
        [sys.executable, "-m", "analysis", str(folder / STUDY), "--out", str(tmp_path), "--stat", "median",
         "--task", "rte"], cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("| variant | rank | alpha |"))
    assert lines[header + 1].startswith("| :--- |")
    assert lines[header + 2].startswith("| full | – | – |") and "±" not in lines[header + 2]  # medians
    assert "## Failed runs (3)" in completed.stdout
    for name in ("params_rte", "rank_rte", "alpha_rte", "cost_rte", "curves_rte"):
        assert (tmp_path / f"{name}.png").stat().st_size > 0 and (tmp_path / f"{name}.svg").stat().st_size > 0


@pytest.mark.slow
def test_command_names_what_a_cell_is(results, capsys):
    from analysis.__main__ import main
    folder, _ = results
    assert main([str(folder / STUDY), "--no-figures"]) == 0
    assert "## Main metric per task ×100 on dev (mean ± std over seeds)" in capsys.readouterr().out
    assert main([str(folder / STUDY), "--no-figures", "--by", "variant,rank,alpha,seed"]) == 0
    assert "## Main metric per task ×100 on dev (one seed per row)" in capsys.readouterr().out


@pytest.mark.slow
def test_command_reports_bad_input_without_a_traceback(results, tmp_path, capsys):
    from analysis.__main__ import main
    folder, _ = results
    assert main([str(tmp_path / "nothing")]) != 0
    assert "nothing" in capsys.readouterr().err
    assert main([str(folder / STUDY), "--task", "cola", "--out", str(tmp_path)]) != 0
    assert "cola" in capsys.readouterr().err
    (tmp_path / "empty" / "runs").mkdir(parents=True)
    assert analysis.load_results(tmp_path / "empty").empty
    assert main([str(tmp_path / "empty")]) != 0
    assert "no result records" in capsys.readouterr().err


@pytest.mark.slow
def test_notebook_runs_on_the_fake_results(results, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    folder, _ = results
    monkeypatch.setenv("RESULTS_DIR", str(folder / STUDY))
    notebook = nbformat.read(REPO / "analysis" / "compare_variants.ipynb", as_version=4)
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code")  # saved clean
    nbclient.NotebookClient(notebook, timeout=120, kernel_name="python3",
                            resources={"metadata": {"path": str(REPO / "analysis")}}).execute()
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    assert not [output for output in outputs if output.output_type == "error"]
    assert sum("image/png" in output.get("data", {}) for output in outputs) == 5
    assert any(f"{len(analysis.load_results(folder / STUDY))} runs" in output.get("text", "")
               for output in outputs)


@pytest.mark.slow
def test_importing_analysis_never_imports_torch(results):
    folder, _ = results
    code = ("import sys, analysis, analysis.__main__; "
            f"analysis.variant_task_table(analysis.load_results({str(folder / STUDY)!r})); "
            "heavy = [m for m in ('torch', 'transformers', 'variants', 'experiments') if m in sys.modules]; "
            "print('heavy:', heavy); sys.exit(1 if heavy else 0)")
    completed = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=subprocess_env(),
                               capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stdout + completed.stderr
