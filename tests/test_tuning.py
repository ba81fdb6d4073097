"""Tuning sensitivity (analysis.tuning, Dodge et al. 2019): the expected best of n runs against a brute
force count, the table and figure on a planted tuning folder where one variant needs a lucky rate, and
the command that prints and draws them."""
import itertools

import numpy as np
import pytest

import analysis
from analysis import tuning
from analysis.__main__ import main
from fake_records import TUNING_SCORES, write_fake_records, write_fake_tuning


@pytest.mark.parametrize("runs", [1, 2, 3, 4])
def test_expected_best_is_the_mean_of_the_best_over_every_draw(runs):
    scores = [0.70, 0.72, 0.81, 0.72]  # a tie too
    brute = np.mean([max(draw) for draw in itertools.product(scores, repeat=runs)])
    assert tuning.expected_best(scores, runs) == pytest.approx(brute)
    assert tuning.expected_best([1.0, 2.0, 3.0], 2) == pytest.approx(22 / 9)  # (1·1 + 2·3 + 3·5) / 9
    assert np.isnan(tuning.expected_best([], 2))


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    return analysis.load_results(write_fake_tuning(tmp_path_factory.mktemp("tuning")))


def test_the_table_shows_which_variant_needs_a_lucky_rate(tuned):
    table = tuning.sensitivity_table(tuned).set_index("configuration")
    assert list(table.index) == ["head", "hira", "lora"]  # baselines first, as in every table
    for variant in ("lora", "hira", "head"):
        scores = 100 * np.array(list(TUNING_SCORES[("mrpc", variant)].values()))
        row = table.loc[variant]
        assert row["runs"] == row["rates"] == len(scores)
        assert row["best of 1"] == f"{scores.mean():.1f}" and row["best run"] == f"{scores.max():.1f}"
        assert row["best of all N"] == f"{tuning.expected_best(scores, len(scores)):.1f}"
    assert table.loc["lora", "best of 5"] == "–" and table.loc["head", "best of 5"] != "–"  # only up to N
    # HiRA reaches LoRA's best only at its one good rate: a large best - mean, a low best of 1
    assert float(table.loc["hira", "best - mean"]) > 5 > 1 >= float(table.loc["lora", "best - mean"])
    assert float(table.loc["hira", "best of 1"]) < float(table.loc["lora", "best of 1"]) - 4


def test_the_figure_draws_one_curve_per_variant(tuned):
    ax = tuning.plot_tuning_sensitivity(tuned, "mrpc").axes[0]
    curves = {line.get_label(): line for line in ax.get_lines()}
    assert set(curves) == {"head", "hira", "lora"}
    scores = list(TUNING_SCORES[("mrpc", "hira")].values())
    assert np.allclose(curves["hira"].get_ydata(), [100 * tuning.expected_best(scores, n) for n in (1, 2, 3)])
    with pytest.raises(analysis.NoDataError, match="no tuning runs on rte"):
        tuning.plot_tuning_sensitivity(tuned, "rte")


@pytest.mark.slow
def test_the_command_prints_and_draws_the_tuning_sensitivity(tuned, tmp_path, capsys):
    folder = tmp_path / "tuning"
    write_fake_tuning(tmp_path)
    assert main([str(folder), "--out", str(tmp_path / "figures")]) == 0
    out = capsys.readouterr().out
    assert "## Tuning sensitivity: expected best selection score ×100 of n tuning runs" in out
    assert (tmp_path / "figures" / "tuning_mrpc.png").stat().st_size > 0
    write_fake_records(tmp_path / "final", study="final")  # one rate per variant: no tuning cell
    assert main([str(tmp_path / "final" / "final"), "--task", "rte", "--out", str(tmp_path / "f2")]) == 0
    out = capsys.readouterr().out
    assert "Tuning sensitivity" not in out and "skipped tuning_rte: no tuning runs on rte" in out
