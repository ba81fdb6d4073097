"""analysis.verdicts: every verdict read off one family interval, so that --compare, the claims command
and the report cannot contradict each other; the case the re-analysis found (VeRA on SST-2: "equivalent"
in --compare, its non-inferiority "not resolved" in the claims table) planted and checked."""
import itertools

import numpy as np
import pandas as pd
import pytest
import yaml

import analysis
from analysis import published_claims, simulation, verdicts
from analysis.__main__ import main


@pytest.mark.parametrize("low, high, expected", [
    (0.5, 2.0, "better"), (0.2, 1.0, "better, within the margin"), (-2.0, -0.5, "worse"),
    (-1.0, -0.2, "worse, within the margin"), (-1.0, 1.2, "equivalent"), (-1.0, 3.0, "non-inferior"),
    (-3.0, 1.0, "non-superior"), (-3.0, 3.0, "not resolved"), (np.nan, np.nan, "not resolved"),
    (-1.5, 1.0, "non-superior"),  # the bounds are strict: -1.5 is not above -1.5
])
def test_comparison_verdict_names_the_strongest_statement(low, high, expected):
    assert verdicts.comparison_verdict(low, high, 1.5) == expected


@pytest.mark.parametrize("test, low, high, expected", [
    ("better", 0.5, 2.0, "confirmed"), ("better", -2.0, -0.5, "refuted"), ("better", -1.0, 1.0, "not resolved"),
    ("equivalent", -1.2, 1.2, "confirmed"), ("equivalent", 1.6, 3.0, "refuted"), ("equivalent", -4.0, -1.6, "refuted"),
    ("equivalent", -1.0, 2.0, "not resolved"), ("non-inferior", -1.4, 3.0, "confirmed"),
    ("non-inferior", -4.0, -1.6, "refuted"), ("non-inferior", -2.0, 1.0, "not resolved"),
    ("non-inferior", np.nan, np.nan, "not resolved"),
])
def test_claim_verdict_follows_the_stated_rules(test, low, high, expected):
    assert verdicts.claim_verdict(test, low, high, 1.5) == expected
    with pytest.raises(ValueError, match=r"choose among \['better', 'equivalent', 'non-inferior'\]"):
        verdicts.claim_verdict("superior", low, high, 1.5)


def test_no_interval_gives_verdicts_that_contradict_each_other():
    """Over a grid of intervals: what --compare calls equivalent (or better or worse within the margin)
    is non-inferior and equivalent for the claims; better confirms "better" and never refutes it; worse
    refutes it; a refuted non-inferiority is "worse"."""
    points = np.linspace(-4, 4, 33)
    for low, high in itertools.combinations(points, 2):
        shown = verdicts.comparison_verdict(low, high, 1.5)
        claims = {test: verdicts.claim_verdict(test, low, high, 1.5) for test in verdicts.TESTS}
        equivalent = shown in ("equivalent", "better, within the margin", "worse, within the margin")
        assert (claims["equivalent"] == "confirmed") == equivalent
        assert (claims["non-inferior"] == "confirmed") == (equivalent or shown in ("better", "non-inferior"))
        assert (claims["better"] == "confirmed") == shown.startswith("better")
        assert (claims["better"] == "refuted") == shown.startswith("worse")
        if claims["non-inferior"] == "refuted":
            assert shown == "worse"


def test_the_family_level_is_bonferronis():
    assert verdicts.family_level(1) == pytest.approx(0.95)
    assert verdicts.family_level(35) == pytest.approx(1 - 0.05 / 35)


def vera_like_study(folder):
    """A results folder where a variant trails its reference by about a point with enough noise that the
    unadjusted 90 % interval can lie inside a margin the 95 % one reaches beyond: the VeRA on SST-2 case.
    Two variants, one task, five seeds, 400 examples (a planted design of analysis.simulation)."""
    design = simulation.Design("vera-like", seeds=5, examples=400, shift=-0.05, seed_spread=0.03,
                               example_spread=0.2)
    labels, vera, lora = simulation.draw_study(design, np.random.default_rng(21))
    runs = folder / "study" / "runs"
    runs.mkdir(parents=True)
    for variant, predictions in (("lora", lora), ("vera", vera)):
        for seed, prediction in enumerate(predictions):
            name = f"{variant}{seed}"
            pd.DataFrame({"split": "validation", "example": np.arange(len(labels)), "label": labels,
                          "prediction": prediction}).to_parquet(runs / f"{name}.predictions.parquet")
            record = {"config_hash": name, "status": "ok", "variant": variant, "task": "sst2", "seed": seed,
                      "main_metric": "accuracy", "main_score": float((prediction == labels).mean()),
                      "trainable_params": 100, "timestamp": f"2026-12-01T0{seed}:00:00Z",
                      "predictions_file": f"{name}.predictions.parquet"}
            (runs / f"{name}.json").write_text(pd.Series(record).to_json())
    return folder / "study"


@pytest.mark.slow
def test_the_vera_case_gets_one_verdict_in_compare_and_in_the_claims_table(tmp_path, capsys):
    study = vera_like_study(tmp_path)
    df = analysis.load_results(study)
    predictions = analysis.load_predictions(df)
    per_comparison = analysis.compare(df, predictions, reference="lora", level=0.90).iloc[0]
    at_95 = analysis.compare(df, predictions, reference="lora", level=0.95).iloc[0]
    assert per_comparison["difference"] < 0  # the variant trails, as VeRA did
    margin = round(float(abs(per_comparison["ci_low"]) + abs(at_95["ci_low"])) / 2, 3)
    # the planted case: the old rules' two readings disagree at this margin
    assert -margin < per_comparison["ci_low"] and per_comparison["ci_high"] < margin  # old --compare: equivalent
    assert at_95["ci_low"] < -margin  # old claims: non-inferiority not resolved
    claims = tmp_path / "claims.yaml"
    claims.write_text(yaml.safe_dump({"margin": margin, "claims": [
        {"claim": "VeRA is comparable to LoRA", "source": "planted", "results": "study", "variant": "vera",
         "reference": "lora", "test": "non-inferior"}]}))
    row = analysis.compare(df, predictions, reference="lora", margin=margin).iloc[0]
    claim = published_claims.check_claims(claims).iloc[0]
    assert (claim["family_low"], claim["family_high"]) == (row["family_low"], row["family_high"])
    assert row["verdict"] not in ("equivalent", "non-inferior", "worse, within the margin")
    assert claim["verdict"] == "not resolved"
    # with a margin the family interval clears, both say so
    wide = float(np.ceil(max(-row["family_low"], row["family_high"])) + 0.5)
    assert analysis.compare(df, predictions, reference="lora", margin=wide).iloc[0]["verdict"] == "equivalent"
    claims.write_text(claims.read_text().replace(f"margin: {margin}", f"margin: {wide}"))
    assert published_claims.check_claims(claims).iloc[0]["verdict"] == "confirmed"
    # and the printed tables carry the same interval
    assert main([str(study), "--no-figures", "--compare", "lora", "--margin", str(wide)]) == 0
    assert main(["claims", str(claims)]) == 0
    compared, claimed = capsys.readouterr().out.split("# Published claims")
    shown = f"[{row['family_low']:+.1f}, {row['family_high']:+.1f}]"  # a family of 1: the 95 % interval
    assert shown in compared and shown in claimed
