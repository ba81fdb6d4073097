"""Published claims (analysis.published_claims): the overall verdict of a claim from its tasks, the claims
file's errors, and the whole command on a fake study with planted differences (full fine-tuning far
above the head), its rows the rows of the --compare table they belong to. The verdict rules themselves
are tested in test_verdicts.py, registration in test_registration.py."""
import numpy as np
import pandas as pd
import pytest
import yaml

import analysis
from analysis import published_claims, stats
from analysis.__main__ import main
from fake_records import trainable_params, write_fake_records


def test_a_claim_is_confirmed_only_on_every_task_and_refuted_by_one():
    def rows(claim, verdicts):
        return [{"claim": claim, "source": "s", "test": "better", "margin": 1.5, "task": f"t{i}",
                 "configuration": "a", "vs": "b", "detectable": float(i), "params_ratio": 2.0, "verdict": v}
                for i, v in enumerate(verdicts)]

    table = pd.DataFrame(rows("all", ["confirmed", "confirmed"]) + rows("mixed", ["confirmed", "not resolved"])
                         + rows("one refuted", ["confirmed", "refuted", "not resolved"])
                         + rows("untested", ["not tested"]))
    summary = published_claims.summarize_claims(table).set_index("claim")
    assert summary["verdict"].to_dict() == {"all": "confirmed", "mixed": "not resolved at this power",
                                            "one refuted": "refuted", "untested": "not tested"}
    assert summary.loc["one refuted", "refuted on"] == "t1"
    assert summary.loc["one refuted", "tasks"] == "1 confirmed, 1 refuted, 1 not resolved"
    assert summary.loc["one refuted", "detectable (80 % power)"] == "2.0"  # the largest over its tasks


def write_claims(folder, claims, **settings):
    path = folder / "claims.yaml"
    path.write_text(yaml.safe_dump({**settings, "claims": claims}))
    return path


CLAIM = {"claim": "full fine-tuning beats the head", "source": "planted", "results": "pair",
         "variant": "full", "reference": "head", "test": "better"}


@pytest.fixture(scope="module")
def fake_study(tmp_path_factory):
    """The fake study ("study"), and its full fine-tuning and head runs alone ("pair": a family of
    three comparisons, one per task, so that three seeds can resolve a planted 16-point gap)."""
    folder = tmp_path_factory.mktemp("claims")
    records = write_fake_records(folder, study="study", with_predictions=True)
    pair = folder / "pair" / "runs"
    pair.mkdir(parents=True)
    for record in records:
        if record["variant"] in ("full", "head"):
            for file in (folder / "study" / "runs").glob(f"{record['config_hash']}.*"):
                (pair / file.name).write_bytes(file.read_bytes())
    return folder


@pytest.mark.slow
def test_planted_differences_get_the_verdicts_they_should(fake_study):
    claims = [CLAIM,
              {**CLAIM, "claim": "the head beats full fine-tuning", "variant": "head", "reference": "full"},
              {**CLAIM, "claim": "the head is on par with full", "variant": "head", "reference": "full",
               "test": "non-inferior"},
              {**CLAIM, "claim": "rsLoRA r=16 beats LoRA r=16", "variant": {"variant": "rslora", "rank": 16},
               "reference": {"variant": "lora", "rank": 16, "alpha": 16.0}, "results": "study"}]
    table = published_claims.check_claims(write_claims(fake_study, claims, margin=1.5))
    assert table.attrs["target"] == "new-examples"
    verdicts = table.set_index(["claim", "task"])["verdict"]
    # full is planted 16 points above the head; on STS-B one head run predicts a constant (Pearson near
    # 0), which widens that task's interval past zero: not resolved there, so not confirmed overall
    assert verdicts["full fine-tuning beats the head"].to_dict() == {"mrpc": "confirmed", "rte": "confirmed",
                                                                     "stsb": "not resolved"}
    summary = published_claims.summarize_claims(table).set_index("claim")
    assert summary.loc["full fine-tuning beats the head", "verdict"] == "not resolved at this power"
    assert summary.loc["the head beats full fine-tuning", "verdict"] == "refuted"
    assert summary.loc["the head beats full fine-tuning", "refuted on"] == "mrpc, rte"
    assert summary.loc["the head is on par with full", "verdict"] == "refuted"
    by_claim = table.groupby("claim", sort=False)
    assert by_claim.size().to_dict() == {claim["claim"]: 3 for claim in claims}  # one row per task
    rank_rows = table[table["claim"] == "rsLoRA r=16 beats LoRA r=16"]
    assert set(rank_rows["configuration"]) == {"rslora r=16 α=16"}  # only the named cell

    # the claims rows are the rows of the --compare table of the claim's reference: the same family
    df = analysis.load_results(fake_study / "pair")
    reference = analysis.compare(df, analysis.load_predictions(df), reference="head")
    assert reference.attrs["family_size"] == len(reference) == 3  # every configuration against the head
    mine = table[table["claim"] == CLAIM["claim"]].set_index("task")
    for _, row in reference[reference["variant"] == "full"].iterrows():
        for column in ("difference", "ci_low", "family_low", "family_high", "p_adjusted"):
            assert mine.loc[row["task"], column] == pytest.approx(row[column])
        assert mine.loc[row["task"], "family_size"] == len(reference)
    assert (table["family_low"] < table["ci_low"]).all() and (table["ci_high"] < table["family_high"]).all()
    # each row's paired difference gives its interval at any level
    for _, row in reference.iterrows():
        assert row["paired"].interval(0.95) == pytest.approx((row["ci_low"], row["ci_high"]))
        assert row["paired"].interval(reference.attrs["family_level"]) == pytest.approx(
            (row["family_low"], row["family_high"]))
    # the parameter ratio is the reference's trainable parameters over the variant's (formula in fake_records)
    mrpc = mine.loc["mrpc"]
    assert mrpc["params_ratio"] == pytest.approx(trainable_params("head", 8, 2) / trainable_params("full", 8, 2))


@pytest.mark.slow
def test_the_target_changes_the_intervals_not_the_differences(fake_study):
    path = write_claims(fake_study, [CLAIM])
    new, fixed = (published_claims.check_claims(path, target=target) for target in stats.TARGETS)
    assert np.allclose(new["difference"], fixed["difference"])
    assert not np.allclose(new["family_low"], fixed["family_low"])
    with pytest.raises(ValueError, match="unknown target 'dev'"):
        published_claims.check_claims(path, target="dev")


def test_the_command_prints_one_verdict_per_claim(fake_study, capsys):
    path = write_claims(fake_study, [CLAIM])
    assert main(["claims", str(path)]) == 0
    out = capsys.readouterr().out
    assert "target of inference: new examples" in out
    assert "| full fine-tuning beats the head | planted | full > head | not resolved at this power |" in out
    assert out.count("| full fine-tuning beats the head | ") == 4  # the summary row and one per task


@pytest.mark.parametrize("change, message", [
    ({"test": "superior"}, "unknown test 'superior'; choose among ['better', 'equivalent', 'non-inferior']"),
    ({"variant": None}, "variant must be a variant name or a mapping"),
    ({"colour": "red"}, "unknown key(s) ['colour']"),
    ({"variant": "dora2"}, "no successful run matches its variant 'dora2'"),
    ({"reference": {"variant": "lora", "colour": 1}}, "unknown column 'colour'"),
])
def test_bad_claims_name_the_bad_value(fake_study, capsys, change, message):
    path = write_claims(fake_study, [{**CLAIM, **change}])
    assert main(["claims", str(path)]) == 2
    assert message in capsys.readouterr().err


def test_a_claim_without_its_required_keys_is_refused(tmp_path):
    path = write_claims(tmp_path, [{"claim": "x", "variant": "lora"}])
    with pytest.raises(ValueError, match=r"missing key\(s\) \['source', 'results', 'reference', 'test'\]"):
        published_claims.load_claims(path)
    with pytest.raises(ValueError, match="non-empty list under 'claims:'"):
        published_claims.load_claims(write_claims(tmp_path, []))


def test_a_stage_without_records_yet_is_not_tested(fake_study):
    path = write_claims(fake_study, [CLAIM, {**CLAIM, "claim": "later", "results": "not_run_yet"}])
    table = published_claims.check_claims(path)
    later = table[table["claim"] == "later"].iloc[0]
    assert later["verdict"] == "not tested" and "not_run_yet" in later["note"]
    summary = published_claims.summarize_claims(table).set_index("claim")
    assert summary.loc["later", "verdict"] == "not tested"
    assert summary.loc[CLAIM["claim"], "tasks"] == "2 confirmed, 1 not resolved"  # tested rows keep theirs
    assert summary.loc["later", "tested as"] == "full > head"


PUBLISHED = {"results": "study", "variant": "full",
             "checkpoints": [{"model": "Small-BERT", "source": "planted", "scores": {"mrpc": 90.0, "cola": 50.0}}]}


def test_published_scores_stand_beside_ours_with_the_gap(fake_study, capsys):
    path = write_claims(fake_study, [CLAIM], published_scores=PUBLISHED)
    table = published_claims.published_scores_table(path).set_index("task")
    df = analysis.load_results(fake_study / "study")
    mrpc = 100 * df[(df["variant"] == "full") & (df["task"] == "mrpc")]["main_score"]
    ours = table.loc["mrpc", "full (ours, mean ± 95 % CI)"]
    assert ours.startswith(f"{mrpc.mean():.1f} ± ") and table.loc["mrpc", "seeds"] == len(mrpc)
    assert table.loc["mrpc", "ours - Small-BERT"] == f"{mrpc.mean() - 90.0:+.1f}"
    assert table.loc["mrpc", "metric"] == "accuracy" and "f1" in table.loc["mrpc", "other metrics (ours, mean)"]
    # a published task we did not run, and one of ours without a published score, both keep their row
    assert table.loc["cola", "full (ours, mean ± 95 % CI)"] == "–" and table.loc["cola", "Small-BERT"] == "50.0"
    assert table.loc["rte", "Small-BERT"] == "–" and table.loc["rte", "ours - Small-BERT"] == "–"
    assert main(["claims", str(path)]) == 0
    assert "## Next to published dev scores" in capsys.readouterr().out
    assert published_claims.published_scores_table(write_claims(fake_study, [CLAIM])) is None


@pytest.mark.parametrize("change, message", [
    ({"colour": "red"}, "must hold exactly ['results', 'variant', 'checkpoints']"),
    ({"checkpoints": [{"model": "x", "scores": {}}]}, "checkpoints must be a list of ['model', 'source', 'scores']"),
    ({"checkpoints": [{"model": "x", "source": "s", "scores": {"mrpc": "high"}}]}, "a mapping of task to a number"),
    ({"variant": "dora2"}, "no successful 'dora2' run under"),
])
def test_bad_published_scores_are_refused_before_the_bootstrap(fake_study, capsys, change, message):
    path = write_claims(fake_study, [CLAIM], published_scores={**PUBLISHED, **change})
    assert main(["claims", str(path)]) == 2
    assert message in capsys.readouterr().err


def test_a_file_that_is_no_claims_file_gets_a_clear_error(tmp_path, capsys):
    for text, message in [("- just\n- a list\n", "must hold a non-empty list under 'claims:'"),
                          ("claims: [unclosed\n", "is not valid YAML")]:
        path = tmp_path / "claims.yaml"
        path.write_text(text)
        assert main(["claims", str(path)]) == 2
        assert message in capsys.readouterr().err


@pytest.mark.slow
def test_a_claim_against_the_constant_predictor_reads_the_compare_to_constant_table(fake_study):
    """"learns the task": the configuration against the majority class, each row the --compare constant row."""
    claim = {**CLAIM, "claim": "full fine-tuning learns the task", "reference": "constant"}
    rows = published_claims.check_claims(write_claims(fake_study, [claim]))
    table = analysis.compare(analysis.load_results(fake_study / "pair"), analysis.load_predictions(fake_study / "pair"),
                             reference="constant")
    full = table[table["variant"] == "full"].set_index("task")
    assert set(rows["vs"]) == {"constant"} and len(rows) == len(full)
    for _, row in rows.iterrows():
        assert row["family_low"] == pytest.approx(full.loc[row["task"], "family_low"])
        assert row["difference"] == pytest.approx(full.loc[row["task"], "difference"])
    assert rows["params_ratio"].isna().all()


@pytest.mark.slow
def test_a_claim_about_some_tasks_is_judged_on_those_within_the_whole_family(fake_study):
    every = published_claims.check_claims(write_claims(fake_study, [CLAIM]))
    one = published_claims.check_claims(write_claims(fake_study, [{**CLAIM, "tasks": ["mrpc"]}]))
    assert list(one["task"]) == ["mrpc"] and len(every) > 1
    assert one["family_size"].iloc[0] == every["family_size"].iloc[0]  # the family is the folder's table
    mrpc = every[every["task"] == "mrpc"].iloc[0]
    assert one["family_low"].iloc[0] == pytest.approx(mrpc["family_low"])
    later = published_claims.check_claims(write_claims(fake_study, [{**CLAIM, "tasks": ["qnli"]}]))
    assert list(later["verdict"]) == ["not tested"] and "qnli" in later["note"].iloc[0]
    with pytest.raises(ValueError, match="tasks must be a list of task names"):
        published_claims.check_claims(write_claims(fake_study, [{**CLAIM, "tasks": "mrpc"}]))
