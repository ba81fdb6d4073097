"""The planner (analysis.planning, ``python -m analysis plan``) on planted designs whose answers are known:
one where the dev set's own sampling sets a floor no number of seeds lowers (the planner says so and
asks for examples), one where seeds alone suffice, and the command's output and errors."""
import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm
from scipy.stats import t as t_dist

import analysis
from analysis import planning, stats
from analysis.__main__ import main

EXAMPLES = 400


def planted_folder(folder, right_probability, seed=0):
    """A results folder with a reference that is always right and a variant right on example i at seed
    s with probability right_probability[s, i] (accuracy, labels balanced): the per-(seed, example)
    difference is then 1[right] - 1, with the components right_probability's own."""
    rng = np.random.default_rng(seed)
    seeds, n = right_probability.shape
    labels = np.arange(n) % 2
    runs = folder / "pilot" / "runs"
    runs.mkdir(parents=True)
    for variant in ("lora", "planted"):
        for s in range(seeds):
            right = rng.uniform(size=n) < right_probability[s] if variant == "planted" else np.ones(n, bool)
            prediction = np.where(right, labels, 1 - labels)
            name = f"{variant}{s}"
            pd.DataFrame({"split": "validation", "example": np.arange(n), "label": labels,
                          "prediction": prediction}).to_parquet(runs / f"{name}.predictions.parquet")
            record = {"config_hash": name, "status": "ok", "variant": variant, "task": "rte", "seed": s,
                      "main_metric": "accuracy", "main_score": float(right.mean()), "trainable_params": 100,
                      "predictions_file": f"{name}.predictions.parquet"}
            (runs / f"{name}.json").write_text(pd.Series(record).to_json())
    return folder / "pilot"


def plan_of(folder, **settings):
    df = analysis.load_results(folder)
    return planning.plan(df, analysis.load_predictions(df), "lora", **settings).iloc[0]


def test_when_the_dev_set_sets_the_floor_the_planner_says_so_and_counts_examples(tmp_path):
    """Half the examples always right, half right 80 % of the time, whatever the seed: in points,
    σ²(example) = 100 · 100 · var(p) = 100, σ²(interaction) = 10⁴ · mean p(1 - p) = 800, σ²(seed) = 0. With
    400 examples no number of seeds detects 1 point: the floor is (z₀.₉₇₅ + z₀.₈) · √(100 / 400) = 1.40."""
    probability = np.tile(np.where(np.arange(EXAMPLES) % 2 == 0, 1.0, 0.8), (20, 1))
    row = plan_of(planted_folder(tmp_path, probability), margin=3.0, difference=1.0)
    df = analysis.load_results(tmp_path / "pilot")
    components = analysis.compare(df, analysis.load_predictions(df), reference="lora").iloc[0]["paired"].components
    assert components.example == pytest.approx(100, rel=0.35) and components.interaction == pytest.approx(800, rel=0.1)
    assert components.seed < 10
    floor = (norm.ppf(0.975) + norm.ppf(0.8)) * np.sqrt(components.example / EXAMPLES)
    assert row["floor"] == pytest.approx(floor, rel=0.01) and row["floor"] > 1.0
    assert np.isnan(row["seeds_detect"])
    assert row["statement"].startswith(f"Seeds alone cannot detect 1: the dev set's own sampling leaves "
                                       f"{row['floor']:.2f} however many seeds are run; ")
    # examples needed at the pilot's 20 seeds to detect 1: the seed part (σ²(seed) + σ²(interaction) / n)
    # / 20 with t quantiles of 19 degrees of freedom, the example part σ²(example) / n with normal ones
    # (n is large): n = (t² σ²(interaction) / 20 + z² σ²(example)) / (1 - t² σ²(seed) / 20)
    t, z = (t_dist.ppf(0.975, 19) + t_dist.ppf(0.8, 19)) ** 2, (norm.ppf(0.975) + norm.ppf(0.8)) ** 2
    by_hand = (t * components.interaction / 20 + z * components.example) / (1 - t * components.seed / 20)
    assert row["seeds_with_examples_detect"] == 20 and row["examples_detect"] == pytest.approx(by_hand, rel=0.01)
    assert f"; {int(row['examples_detect']):,} evaluation examples would (now 400), at 20 seeds." in row["statement"]
    # equivalence within ±3 when the true difference is 0: seeds do get there
    assert 2 <= row["seeds_equivalence"] <= 20 and np.isnan(row["examples_equivalence"])


@pytest.mark.slow
def test_when_seeds_vary_and_examples_do_not_seeds_suffice(tmp_path):
    """Every example right with probability 0.8 + a seed's shift of ±0.05: σ²(seed) = 25 points²,
    σ²(example) = 0, σ²(interaction) = 10⁴ · mean p(1 - p) ≈ 1575. Detecting 5 points takes about
    (t + t)² (25 + 1575 / 400) / 25 seeds, 10 or 11 with the t quantiles of so few seeds."""
    shift = np.where(np.arange(30) % 2 == 0, 0.05, -0.05)[:, None]
    probability = np.broadcast_to(0.8 + shift, (30, EXAMPLES))
    row = plan_of(planted_folder(tmp_path, probability, seed=1), margin=5.0, difference=5.0)
    assert row["floor"] < 1.0 and row["statement"] == ""
    truth = stats.VarianceComponents(30, EXAMPLES, EXAMPLES * 25 + 1575, 1575, 1575)
    needed = planning._seeds_needed(truth, 5.0, "new-examples", 0.95, 0.8)
    assert 9 <= needed <= 12 and abs(row["seeds_detect"] - needed) <= 2
    assert abs(row["share_seed"] - 25 / 30 / (25 / 30 + 1575 / (30 * EXAMPLES))) < 0.08
    # "this dev set" has no floor: seeds always suffice
    fixed = plan_of(tmp_path / "pilot", margin=5.0, difference=5.0, target="this-dev-set")
    assert fixed["floor"] == 0 and np.isfinite(fixed["seeds_detect"])


def test_the_command_prints_the_plan_and_refuses_bad_input(tmp_path, capsys):
    probability = np.tile(np.where(np.arange(EXAMPLES) % 2 == 0, 1.0, 0.8), (5, 1))
    folder = planted_folder(tmp_path, probability)
    assert main(["plan", str(folder), "--compare", "lora", "--margin", "1.5"]) == 0
    out = capsys.readouterr().out
    assert "target of inference: new examples" in out and "verdicts at the family level of 1 comparisons" in out
    assert "| rte | planted | lora | 5 | 400 |" in out and "Seeds alone cannot show ±1.5: " in out
    with pytest.raises(SystemExit):
        main(["plan", str(folder), "--compare", "lora", "--margin", "-1"])
    assert "'-1' must be above 0" in capsys.readouterr().err
    assert main(["plan", str(folder), "--compare", "dora"]) == 2
    assert "unknown --compare variant 'dora'" in capsys.readouterr().err


def test_a_planned_design_is_projected_from_the_same_components(tmp_path, capsys):
    """What 5 seeds on 4× the examples would detect: the pilot's components at that design, less than
    the pilot's 5 seeds on its own examples detect."""
    probability = np.tile(np.where(np.arange(EXAMPLES) % 2 == 0, 1.0, 0.8), (5, 1))
    folder = planted_folder(tmp_path, probability)
    row = plan_of(folder, margin=1.5, design=(5, 4 * EXAMPLES))
    df = analysis.load_results(folder)
    components = analysis.compare(df, analysis.load_predictions(df), reference="lora").iloc[0]["paired"].components
    assert row["detectable_at_design"] == pytest.approx(
        components.at(5, 4 * EXAMPLES).detectable(0.95, 0.8, "new-examples"))
    assert row["detectable_at_design"] < row["detectable_now"]
    assert main(["plan", str(folder), "--compare", "lora", "--design", "5x1600"]) == 0
    assert "detectable at 5 seeds × 1,600 examples" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["plan", str(folder), "--compare", "lora", "--design", "5"])
    assert "give SEEDSxEXAMPLES, e.g. 5x5000" in capsys.readouterr().err
