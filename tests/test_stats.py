"""analysis.stats and analysis.compare against planted answers: metrics against sklearn / scipy, interval
coverage over simulated studies, Holm by hand, the collapse detector, Clopper–Pearson against scipy."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binomtest, pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

import analysis
from analysis import stats
from fake_records import COLLAPSED_RUNS, write_fake_records

N_BOOT = 400  # enough for the checks below, fast on a shared machine


# ---------------------------------------------------------------------------------------------- metrics
def reference_metric(metric, labels, predictions):
    return {"accuracy": lambda: accuracy_score(labels, predictions),
            "f1": lambda: f1_score(labels, predictions, zero_division=0),
            "matthews_correlation": lambda: matthews_corrcoef(labels, predictions),
            "pearson": lambda: pearsonr(labels, predictions)[0],
            "spearmanr": lambda: spearmanr(labels, predictions)[0]}[metric]()


@pytest.mark.parametrize("metric", stats.METRICS)
def test_metrics_match_sklearn_and_scipy_on_the_data_and_on_every_resample(metric):
    rng = np.random.default_rng(0)
    n = 60
    if metric in stats.REGRESSION_METRICS:
        labels = rng.uniform(0, 5, n).round(1)  # rounded: ties, which Spearman must rank as scipy does
        predictions = (labels + rng.normal(0, 1.5, n)).round(1)
    else:
        classes = 3 if metric in ("accuracy", "matthews_correlation") else 2
        labels = rng.integers(0, classes, n)
        predictions = np.where(rng.uniform(size=n) < 0.6, labels, rng.integers(0, classes, n))
    assert stats.score(metric, labels, predictions) == pytest.approx(reference_metric(metric, labels, predictions))
    weights = stats.resample_counts(rng, n, 25)
    assert (weights.sum(axis=1) == n).all()
    resampled = stats.score(metric, labels, predictions, weights)
    expected = [reference_metric(metric, np.repeat(labels, w), np.repeat(predictions, w)) for w in weights]
    assert np.allclose(resampled, expected)


def test_degenerate_predictions_score_as_sklearn_and_scipy_define_them():
    labels = np.array([0, 1, 1, 0, 1])
    constant = np.ones(5, dtype=int)
    assert stats.score("matthews_correlation", labels, constant) == matthews_corrcoef(labels, constant) == 0
    assert stats.score("f1", labels, np.zeros(5, dtype=int)) == 0.0
    assert np.isnan(stats.score("pearson", labels.astype(float), np.full(5, 2.5)))
    with pytest.raises(ValueError, match="pearson"):
        stats.score("pearsonr", labels, labels)


def test_metric_of_maps_main_metrics_with_split_suffixes():
    assert stats.metric_of("accuracy_matched") == "accuracy"
    assert stats.metric_of("matthews_correlation") == "matthews_correlation"
    assert stats.metric_of("spearmanr") == "spearmanr"
    with pytest.raises(ValueError, match="bleu"):
        stats.metric_of("bleu")


# -------------------------------------------------------------------------------------------- bootstrap
def simulated_study(rng, difference, seeds=5, examples=200, seed_spread=0.03):
    """Two variants on one binary task with a planted accuracy difference: example i is right with
    probability p_i (+ difference for the variant) + a per-run seed shift; both variants share each
    seed's per-example luck (so pairing matters). The true difference is exactly ``difference``."""
    difficulty = rng.uniform(0.45, 0.75, examples)
    luck = rng.uniform(size=(seeds, examples))
    shift = rng.uniform(-seed_spread, seed_spread, size=(2, seeds, 1))
    labels = np.zeros(examples, dtype=np.int64)
    variant = np.where(luck < difficulty + difference + shift[0], 0, 1)
    reference = np.where(luck < difficulty + shift[1], 0, 1)
    return labels, variant, reference


def coverage(difference, method, studies=200, **study):
    rng = np.random.default_rng(1)
    covered = []
    for i in range(studies):
        result = stats.paired_bootstrap("accuracy", *simulated_study(rng, difference, **study), n_boot=N_BOOT,
                                        seed=i)
        low, high = result.interval(0.95, method)
        covered.append(low <= difference <= high)
    return np.mean(covered)


@pytest.mark.parametrize("difference", [0.05, 0.0], ids=["planted 5 points", "same variants"])
def test_the_interval_covers_the_planted_difference_in_about_95_percent_of_studies(difference):
    # 200 studies: the share has a binomial standard error of 1.5 points, so 90-99 % is ± 3 of them
    assert 0.90 <= coverage(difference, "t") <= 0.99


def test_the_percentile_interval_is_too_narrow_with_three_seeds():
    """Why "t" is the default: with 3 seeds and seed-to-seed noise as large as the example noise, the
    plain hierarchical percentile interval covers the planted difference far less than 95 %."""
    assert coverage(0.0, "percentile", studies=100, seeds=3) < 0.90 <= coverage(0.0, "t", studies=100, seeds=3)


def test_bootstrap_pairs_runs_by_seed_and_uses_the_same_examples_for_both_variants():
    rng = np.random.default_rng(2)
    labels, variant, reference = simulated_study(rng, 0.0, seeds=4)
    same = stats.paired_bootstrap("accuracy", labels, variant, variant, n_boot=N_BOOT)
    assert same.difference == 0 and (same.replicates == 0).all() and same.interval() == (0.0, 0.0)
    assert same.p_value() == 1.0 and same.equivalent(margin=0.01)
    result = stats.paired_bootstrap("accuracy", labels, variant, reference, n_boot=N_BOOT)
    by_hand = [accuracy_score(labels, variant[s]) - accuracy_score(labels, reference[s]) for s in range(4)]
    assert result.difference == pytest.approx(np.mean(by_hand))
    assert np.allclose(result.per_seed, by_hand)
    swapped = stats.paired_bootstrap("accuracy", labels, reference, variant, n_boot=N_BOOT)
    assert np.allclose(swapped.replicates, -result.replicates)  # same draws for both sides


def test_t_interval_combines_the_seed_and_example_parts():
    result = stats.PairedBootstrap(difference=1.0, per_seed=np.array([0.0, 1.0, 2.0]),
                                   replicates=np.zeros(3), example_replicates=np.array([1.0, 1.0, 1.0, 1.0]))
    assert result.t_parts() == (pytest.approx(np.sqrt(1 / 3)), 2.0)  # var 1 over 3 seeds; no example part
    low, high = result.interval(0.95)
    assert high - 1.0 == pytest.approx(4.302653 * np.sqrt(1 / 3), rel=1e-6)  # t(2) quantile
    assert low == pytest.approx(2 - high)


def test_a_planted_difference_of_the_detectable_size_is_found_80_percent_of_the_time():
    """5 seeds, per-seed differences N(delta, 1), no example noise: at delta = (t_0.975 + t_0.8) (4 df)
    / sqrt(5) the t-test rejects with probability 0.79 (noncentral t), and ``detectable`` read off
    each study estimates delta (its median is about 0.92 delta: the median sample sd of 5 normals)."""
    rng = np.random.default_rng(4)
    delta = (2.776445 + 0.940965) / np.sqrt(5)
    per_seed = rng.normal(delta, 1.0, size=(2000, 5))
    studies = [stats.PairedBootstrap(float(d.mean()), d, np.zeros(2), np.zeros(1)) for d in per_seed]
    power = np.mean([study.p_value() < 0.05 for study in studies])
    assert 0.75 <= power <= 0.83  # 2000 studies: binomial standard error 0.9 points
    assert 0.85 * delta <= np.median([study.detectable() for study in studies]) <= 0.98 * delta
    assert studies[0].detectable(power=0.5) < studies[0].detectable()  # more power needs a larger difference


def test_bootstrap_p_value_and_percentile_interval_by_hand():
    replicates = np.array([-1.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5])
    assert stats.bootstrap_p_value(replicates) == pytest.approx(2 * 2 / 11)  # one at or below 0, +1
    assert stats.bootstrap_p_value(np.ones(99)) == pytest.approx(2 / 100)  # the smallest p for B = 99
    assert stats.percentile_interval(np.arange(101.0), 0.9) == pytest.approx((5.0, 95.0))


def test_tost_equivalence_needs_the_90_percent_interval_inside_the_margin():
    narrow = stats.PairedBootstrap(0.2, np.array([0.1, 0.2, 0.3]), np.zeros(2), np.zeros(2))
    assert narrow.equivalent(margin=1.5)
    assert not narrow.equivalent(margin=0.3)  # 0.2 ± t(2) 2.92 × 0.058 reaches 0.37


# ---------------------------------------------------------------------------------------------- holm
def test_holm_against_a_hand_computed_case():
    p = [0.01, 0.04, 0.03, 0.005, np.nan]
    # sorted: 0.005 × 4 = 0.02, 0.01 × 3 = 0.03, 0.03 × 2 = 0.06, 0.04 × 1 -> max(0.06, 0.04) = 0.06
    adjusted = stats.holm(p)
    assert np.allclose(adjusted[:4], [0.03, 0.06, 0.06, 0.02]) and np.isnan(adjusted[4])
    assert stats.holm([0.5, 0.9])[1] == 1.0  # capped at 1


# ------------------------------------------------------------------------------------------- collapse
def test_collapse_detector_on_a_constant_predictor_and_a_learning_one():
    rng = np.random.default_rng(3)
    labels = (rng.uniform(size=300) < 0.7).astype(int)
    constant = np.ones_like(labels)
    learning = np.where(rng.uniform(size=300) < 0.9, labels, 1 - labels)
    floor = stats.constant_score("accuracy", labels)
    assert floor == pytest.approx(labels.mean())
    scores = [stats.score("accuracy", labels, p) for p in (constant, learning)]
    assert list(stats.collapsed(dev_score=scores, constant_dev_score=floor)) == [1.0, 0.0]
    # by the training loss: within 2 % of the constant's (or above) is collapsed
    assert list(stats.collapsed(final_train_loss=[0.69, 0.68, 0.66, 0.3], constant_train_loss=0.6931)) == \
        [1.0, 1.0, 0.0, 0.0]
    # the correlations need no labels: a Matthews correlation of 0 is the constant's
    assert stats.collapsed(dev_score=0.0, constant_dev_score=stats.constant_score("matthews_correlation")) == 1
    assert np.isnan(stats.collapsed())  # nothing to judge by
    with pytest.raises(ValueError, match="labels"):
        stats.constant_score("accuracy")


@pytest.mark.parametrize("successes, trials", [(0, 3), (1, 3), (3, 3), (7, 20), (22, 105)])
def test_clopper_pearson_matches_scipy(successes, trials):
    expected = binomtest(successes, trials).proportion_ci(confidence_level=0.95, method="exact")
    assert stats.clopper_pearson(successes, trials) == pytest.approx((expected.low, expected.high))


def test_clopper_pearson_known_values():
    assert stats.clopper_pearson(0, 3)[1] == pytest.approx(1 - 0.025 ** (1 / 3))  # 0.708
    assert stats.clopper_pearson(3, 3)[0] == pytest.approx(0.025 ** (1 / 3))
    assert all(np.isnan(stats.clopper_pearson(0, 0)))


# --------------------------------------------------------------------------------- predictions, compare
@pytest.fixture(scope="module")
def study(tmp_path_factory):
    folder = tmp_path_factory.mktemp("results")
    records = write_fake_records(folder, study="glue_small", with_predictions=True)
    df = analysis.load_results(folder)
    return folder, records, df, analysis.load_predictions(df)


@pytest.fixture(scope="module")
def table(study):
    _, _, df, predictions = study
    return analysis.compare(df, predictions, reference="lora", n_boot=N_BOOT)


def test_load_predictions_round_trips_and_aligns_with_the_records(study):
    folder, records, df, predictions = study
    assert list(predictions.columns) == ["study", "config_hash", "split", "example", "label", "prediction",
                                         "logit_0", "logit_1"]
    ok = [r for r in records if r["status"] == "ok"]
    assert set(predictions["config_hash"]) == {r["config_hash"] for r in ok}
    assert set(zip(predictions["study"], predictions["config_hash"])) <= set(zip(df["study"], df["config_hash"]))
    record = ok[5]
    written = pd.read_parquet(folder / "glue_small" / "runs" / record["predictions_file"])
    mine = predictions[predictions["config_hash"] == record["config_hash"]].reset_index(drop=True)
    assert np.array_equal(mine["prediction"].to_numpy(), written["prediction"].to_numpy())
    assert set(mine["split"]) == {"validation", "selection"}
    dev = mine[mine["split"] == "validation"]
    main = stats.metric_of(record["main_metric"])
    assert stats.score(main, dev["label"].to_numpy(), dev["prediction"].to_numpy()) == \
        pytest.approx(record["main_score"])
    assert analysis.load_predictions(folder).shape == predictions.shape  # a folder works too
    assert analysis.load_predictions(df[df["status"] == "failed"]).empty


def test_compare_has_one_row_per_task_and_non_reference_cell(study, table):
    _, records, _, _ = study
    cells = {(r["variant"], r["task"], r["rank"], r["alpha"]) for r in records if r["variant"] != "lora"}
    assert len(table) == len(cells)
    assert set(table["verdict"]) <= set(analysis.VERDICTS)
    rs = table[(table["variant"] == "rslora") & (table["rank"] == 4) & (table["task"] == "mrpc")].iloc[0]
    assert rs["reference"] == "lora r=4 α=16"  # a rank sweep compares like with like
    vera = table[table["variant"] == "vera"].iloc[0]
    assert vera["verdict"] == "not comparable" and "reference={'variant': 'lora', 'rank': 4}" in vera["note"]


def test_compare_difference_is_the_paired_mean_of_record_scores(study, table):
    _, records, _, _ = study
    score = {(r["variant"], r["task"], r["seed"], r["rank"], r["alpha"]): r["main_score"] for r in records
             if r["status"] == "ok"}
    for row in table[table["n_seeds"] > 0].itertuples():
        seeds = [s for s in (0, 1, 2) if (row.variant, row.task, s, row.rank, row.alpha) in score
                 and ("lora", row.task, s, *_reference_settings(row)) in score]
        by_hand = np.mean([score[(row.variant, row.task, s, row.rank, row.alpha)]
                           - score[("lora", row.task, s, *_reference_settings(row))] for s in seeds])
        assert row.n_seeds == len(seeds)
        assert row.difference == pytest.approx(100 * by_hand)
        assert row.ci_low <= row.difference <= row.ci_high
        assert row.detectable > (row.ci_high - row.ci_low) / 2  # (t_0.975 + t_0.8) SE > t_0.975 SE


def _reference_settings(row):
    rank, alpha = row.reference.split()[1:]
    return int(rank.removeprefix("r=")), float(alpha.removeprefix("α="))


def test_compare_verdicts_follow_the_stated_rules(table):
    with_p = table[table["p_value"].notna()]
    assert np.allclose(with_p["p_holm"], stats.holm(with_p["p_value"]))
    assert (with_p["p_holm"] >= with_p["p_value"]).all()
    for row in with_p.itertuples():
        excludes_zero = row.ci_low > 0 or row.ci_high < 0
        if row.verdict in ("better", "worse"):
            assert excludes_zero and row.p_holm < 0.05 and (row.difference > 0) == (row.verdict == "better")
        elif row.verdict == "equivalent":
            assert row.tost_equivalent and -1.5 < row.ci_low and row.ci_high < 1.5
        else:
            assert row.verdict == "not resolved"
    head = table[(table["variant"] == "head") & (table["task"] == "mrpc")].iloc[0]
    assert head["verdict"] == "worse"  # 14 points below LoRA on every seed


def test_compare_reports_the_planted_collapses(study, table):
    _, records, _, _ = study
    for variant, task, seed, rank, alpha in COLLAPSED_RUNS:
        row = table[(table["variant"] == variant) & (table["task"] == task)].iloc[0]
        assert row["collapsed"] == 1 and row["collapse_known"] == row["runs"] == 3
        assert (row["collapse_low"], row["collapse_high"]) == pytest.approx(stats.clopper_pearson(1, 3))
        kept = [r["main_score"] for r in records if r["variant"] == variant and r["task"] == task
                and r["status"] == "ok" and r["seed"] != seed]
        assert row["mean_without_collapsed"] == pytest.approx(100 * np.mean(kept))
    assert table.loc[table["variant"] == "full", "collapsed"].sum() == 0


def test_collapse_table_counts_the_planted_collapses_in_every_cell(study, capsys):
    _, records, df, predictions = study
    table = analysis.collapse_table(df, predictions)
    assert list(table.columns) == ["variant", "rank", "alpha", "mrpc", "rte", "stsb"]
    assert len(table) == len({(r["variant"], r["rank"], r["alpha"]) for r in records})
    for row in table.to_dict("records"):
        for task in ("mrpc", "rte", "stsb"):
            runs = [r for r in records if r["status"] == "ok" and (r["variant"], r["task"], r["rank"], r["alpha"])
                    == (row["variant"], task, row["rank"], row["alpha"])]
            collapsed = sum((row["variant"], task, r["seed"], row["rank"], row["alpha"]) in COLLAPSED_RUNS
                            for r in runs)
            assert row[task] == (f"{collapsed}/{len(runs)}" if runs else "–")
    from analysis.__main__ import main
    assert main([str(study[0]), "--no-figures"]) == 0
    assert "## Collapsed runs per cell" in capsys.readouterr().out


def test_compare_on_planted_answers_better_and_equivalent():
    labels = np.array([0, 1] * 100)
    rng = np.random.default_rng(4)
    runs, predictions = [], []
    for variant in ("lora", "good", "twin"):
        for seed in range(3):
            if variant == "good":
                predicted = labels
            else:  # lora and its twin: the same predictions, 60 % right
                predicted = np.where(np.random.default_rng(seed).uniform(size=200) < 0.6, labels, 1 - labels)
            runs.append({"study": "s", "config_hash": f"{variant}{seed}", "status": "ok", "variant": variant,
                         "task": "rte", "seed": seed, "main_metric": "accuracy",
                         "main_score": accuracy_score(labels, predicted)})
            predictions.append(pd.DataFrame({"study": "s", "config_hash": f"{variant}{seed}",
                                             "split": "validation", "example": rng.permutation(200)}))
            predictions[-1]["label"] = labels[predictions[-1]["example"]]  # stored in any order
            predictions[-1]["prediction"] = predicted[predictions[-1]["example"]]
    table = analysis.compare(pd.DataFrame(runs), pd.concat(predictions), reference="lora", n_boot=N_BOOT)
    verdicts = dict(zip(table["variant"], table["verdict"]))
    assert verdicts == {"good": "better", "twin": "equivalent"}
    twin = table[table["variant"] == "twin"].iloc[0]
    assert twin["difference"] == 0 and twin["ci_low"] == twin["ci_high"] == 0


def test_compare_without_predictions_says_so_instead_of_failing(study):
    _, _, df, _ = study
    table = analysis.compare(df, None, reference="full", n_boot=N_BOOT)
    comparable = table[~table["note"].str.contains("fit equally well")]
    assert set(comparable["verdict"]) == {"no predictions"}
    assert comparable["note"].str.contains("no seed has predictions").all()
    assert comparable["mean"].notna().all()  # the record's own scores still give the means
    with pytest.raises(ValueError, match="lorra.*'full'"):
        analysis.compare(df, None, reference="lorra")


def test_command_prints_the_comparison_table(study, capsys):
    from analysis.__main__ import main
    folder, _, _, _ = study
    assert main([str(folder), "--no-figures", "--compare", "full", "--n-boot", "200"]) == 0
    out = capsys.readouterr().out
    assert "## Paired differences to full" in out
    lines = [line for line in out.splitlines() if line.startswith("| stsb | dora r=8 α=16 | full |")]
    assert len(lines) == 1
    assert main([str(folder), "--no-figures", "--compare", "lorra"]) == 2
    assert "lorra" in capsys.readouterr().err


def test_command_split_selection_tabulates_and_draws_the_selection_scores(study, tmp_path, capsys):
    from analysis.__main__ import main
    folder, records, _, _ = study
    assert main([str(folder), "--split", "selection", "--task", "rte", "--out", str(tmp_path),
                 "--compare", "full", "--n-boot", "200"]) == 0
    out = capsys.readouterr().out
    assert "## Main metric per task ×100 on the selection split (mean ± std over seeds)" in out
    header = next(line for line in out.splitlines() if line.startswith("| variant |"))
    assert "rte (accuracy on the selection split)" in header
    row = next(line for line in out.splitlines() if line.startswith("| lora | 4 | 16 |"))
    scores = [100 * r["selection_score"] for r in records if r["status"] == "ok"
              and (r["variant"], r["task"], r["rank"], r["alpha"]) == ("lora", "rte", 4, 16.0)]
    dev = [100 * r["main_score"] for r in records if r["status"] == "ok"
           and (r["variant"], r["task"], r["rank"], r["alpha"]) == ("lora", "rte", 4, 16.0)]
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert f"{np.mean(scores):.1f} ± {np.std(scores, ddof=1):.1f}" == cells[header.strip("|").split("|").index(
        " rte (accuracy on the selection split) ")]
    assert f"{np.mean(scores):.1f}" != f"{np.mean(dev):.1f}"  # the planted splits differ: the test can fail
    for name in ("rank_rte_selection", "alpha_rte_selection", "params_rte_selection", "cost_rte",
                 "compare_full_selection"):
        assert (tmp_path / f"{name}.png").stat().st_size > 0
    for name in ("rank_rte", "compare_full"):  # the dev figures are not overwritten with selection scores
        assert not (tmp_path / f"{name}.png").exists()


def test_command_split_names_the_valid_choices_and_records_without_that_split(study, tmp_path, capsys):
    from analysis.__main__ import main
    with pytest.raises(SystemExit):
        main([str(study[0]), "--no-figures", "--split", "test"])
    assert "'validation', 'selection'" in capsys.readouterr().err
    write_fake_records(tmp_path, study="no_selection_split")  # without predictions: no selection score
    assert main([str(tmp_path), "--no-figures", "--split", "selection"]) == 2
    assert "no successful run" in capsys.readouterr().err


def test_forest_plot_draws_each_difference_and_saves_the_same_bytes_twice(table, tmp_path):
    figure = analysis.plot_differences(table)
    ax = figure.axes[0]
    drawn = sorted(round(container.lines[0].get_xdata()[0], 9) for container in ax.containers)
    assert drawn == sorted(round(value, 9) for value in table["difference"].dropna())
    rte = table[table["task"] == "rte"]  # fewer rows: faster to save
    first = analysis.save_figure(analysis.plot_differences(rte), tmp_path / "a", "forest")
    second = analysis.save_figure(analysis.plot_differences(rte), tmp_path / "b", "forest")
    assert all(one.read_bytes() == other.read_bytes() for one, other in zip(first, second))
    with pytest.raises(analysis.NoDataError, match="predictions"):
        analysis.plot_differences(table[table["difference"].isna()])


def test_params_plot_error_bars_are_95_percent_t_intervals_over_seeds(study):
    _, records, df, _ = study
    ax = analysis.plot_metric_vs_params(df, "rte").axes[0]
    container = next(c for c in ax.containers if c.get_label() == "qlora")
    (bar,) = container.lines[2]
    segment = bar.get_segments()[0]
    scores = [100 * r["main_score"] for r in records if r["variant"] == "qlora" and r["task"] == "rte"]
    half = 4.302653 * np.std(scores, ddof=1) / np.sqrt(3)  # t(2) quantile × standard error
    assert segment[1][1] - segment[0][1] == pytest.approx(2 * half)


def test_notebook_shows_the_comparison_table_and_forest_plot(study, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    folder, _, _, _ = study
    monkeypatch.setenv("RESULTS_DIR", str(folder))
    repo = Path(__file__).resolve().parent.parent
    notebook = nbformat.read(repo / "analysis" / "compare_variants.ipynb", as_version=4)
    nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(repo / "analysis")}}).execute()
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    assert not [output for output in outputs if output.output_type == "error"]
    assert sum("image/png" in output.get("data", {}) for output in outputs) == 6  # five figures + forest
    assert any("Δ ×100" in output.get("data", {}).get("text/html", "") for output in outputs)
    assert not any("no per-example predictions" in output.get("text", "") for output in outputs)


def test_seeds_with_their_own_dev_examples_are_resampled_within_each_seed():
    rng = np.random.default_rng(5)
    labels, variant, reference = simulated_study(rng, 0.05, seeds=3)
    own_labels = np.stack([np.roll(labels, s) for s in range(3)])  # (seeds, n): each seed its own dev set
    nested = stats.paired_bootstrap("accuracy", own_labels, variant, reference, n_boot=N_BOOT)
    crossed = stats.paired_bootstrap("accuracy", labels, variant, reference, n_boot=N_BOOT)
    assert nested.difference == pytest.approx(crossed.difference)  # labels all 0 here: the same data
    assert not np.allclose(nested.example_replicates, crossed.example_replicates)  # other draws
    runs, predictions = [], []
    for variant_name, predicted in (("lora", reference), ("dora", variant)):
        for seed in range(3):
            runs.append({"study": "s", "config_hash": f"{variant_name}{seed}", "status": "ok",
                         "variant": variant_name, "task": "rte", "seed": seed, "main_metric": "accuracy"})
            predictions.append(pd.DataFrame({"study": "s", "config_hash": f"{variant_name}{seed}",
                                             "split": "validation", "example": np.arange(200),
                                             "label": labels + seed % 2, "prediction": predicted[seed]}))
    row = analysis.compare(pd.DataFrame(runs), pd.concat(predictions), reference="lora", n_boot=N_BOOT).iloc[0]
    assert row["n_seeds"] == 3 and "resampled within each seed" in row["note"]
