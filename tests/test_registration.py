"""Registration (analysis.registration): a claims file registered before its runs shows 0 runs made
before, one registered afterwards all of them; a file changed after registration says how; the
registration file lives in the results folder and is not mistaken for a record."""
from datetime import datetime, timezone

import pytest
import yaml

import analysis
from analysis import published_claims, registration
from analysis.__main__ import main
from fake_records import write_fake_records

CLAIM = {"claim": "full fine-tuning beats the head", "source": "planted", "results": "study",
         "variant": "full", "reference": "head", "test": "better"}
OTHER = {**CLAIM, "claim": "the head is on par with full", "variant": "head", "reference": "full",
         "test": "non-inferior"}
BEFORE = datetime(2025, 1, 1, tzinfo=timezone.utc)  # the fake runs finished on 2025-11-22
AFTER = datetime(2025, 12, 1, tzinfo=timezone.utc)


def write_claims(folder, claims, name="claims.yaml"):
    path = folder / name
    path.write_text(yaml.safe_dump({"margin": 1.5, "claims": claims}))
    return path


def statuses(path):
    table = published_claims.check_claims(path)
    return published_claims.summarize_claims(table).set_index("claim")


@pytest.mark.slow
def test_registered_before_the_runs_counts_none_before_and_after_the_fact_all(tmp_path):
    early = write_claims(tmp_path, [CLAIM], "early.yaml")
    done = registration.register(early, now=BEFORE)  # no run yet: the folder is made for the registration
    assert done == [(tmp_path / "study" / registration.REGISTRATION_FILE, "registered at 2025-01-01T00:00:00Z")]
    records = write_fake_records(tmp_path, study="study", with_predictions=True)
    late = write_claims(tmp_path, [CLAIM], "late.yaml")
    registration.register(late, now=AFTER)
    used = 2 * 3 * 3  # full and head, three seeds, three tasks
    assert statuses(early).loc[CLAIM["claim"], ["registered", "runs made before registration", "since registration"]
                               ].tolist() == ["2025-01-01 00:00 UTC", f"0 of {used}", "unchanged"]
    assert statuses(late).loc[CLAIM["claim"], "runs made before registration"] == f"{used} of {used}"
    assert len(analysis.load_results(tmp_path / "study")) == len(records)  # the registration file is no record
    entries = registration.read_entries(tmp_path / "study" / registration.REGISTRATION_FILE)
    assert [entry["claims_file"] for entry in entries] == ["../early.yaml", "../late.yaml"]
    assert entries[0]["sha256"] == registration.sha256(early)


@pytest.mark.slow
def test_a_file_changed_after_registration_says_how(tmp_path):
    write_fake_records(tmp_path, study="study", with_predictions=True)
    path = write_claims(tmp_path, [CLAIM, OTHER])
    registration.register(path, now=AFTER)
    edited = {**OTHER, "test": "equivalent"}
    added = {**CLAIM, "claim": "added later", "variant": "dora", "reference": "lora"}
    write_claims(tmp_path, [CLAIM, edited, added])
    summary = statuses(path)
    change = "changed; claims added: 'added later'; tests edited: 'the head is on par with full'"
    assert set(summary["since registration"]) == {change}
    assert summary.loc[CLAIM["claim"], "registered"] == "2025-12-01 00:00 UTC"  # unchanged: still registered
    assert summary.loc[OTHER["claim"], "registered"] == "no (test edited after 2025-12-01T00:00:00Z)"
    assert summary.loc["added later", "registered"] == "no (added after 2025-12-01T00:00:00Z)"
    assert summary.loc["added later", "runs made before registration"] == "–"
    # registering again: a new entry; the unchanged claim keeps its first time, the others get the new one
    later = datetime(2026, 1, 1, tzinfo=timezone.utc)
    assert registration.register(path, now=later)[0][1] == "registered at 2026-01-01T00:00:00Z (again: the file changed)"
    summary = statuses(path)
    assert summary.loc[CLAIM["claim"], "registered"] == "2025-12-01 00:00 UTC"
    assert summary.loc["added later", "registered"] == "2026-01-01 00:00 UTC"
    assert set(summary["since registration"]) == {"unchanged"}
    assert registration.register(path, now=later)[0][1].startswith("already registered on 2026-01-01")


@pytest.mark.slow
def test_an_unregistered_file_says_so(tmp_path):
    write_fake_records(tmp_path, study="study", with_predictions=True)
    summary = statuses(write_claims(tmp_path, [CLAIM]))
    assert summary.loc[CLAIM["claim"], ["registered", "since registration"]].tolist() == ["no", "never registered"]


@pytest.mark.slow
def test_the_command_registers_and_names_what_exists_already(tmp_path, capsys):
    records = write_fake_records(tmp_path, study="study", with_predictions=True)
    ok = sum(record["status"] == "ok" for record in records)
    path = write_claims(tmp_path, [CLAIM])
    assert main(["claims", "register", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"{tmp_path / 'study' / registration.REGISTRATION_FILE}: registered at " in out
    assert f"holds {ok} successful run(s) already (registered after the fact for those)" in out
    assert main(["claims", str(path)]) == 0
    assert "| 18 of 18 | unchanged |" in capsys.readouterr().out
    assert main(["claims", "register", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml" in capsys.readouterr().err
    (tmp_path / "study" / registration.REGISTRATION_FILE).write_text("registrations: [1, 2]\n")
    assert main(["claims", str(path)]) == 2
    assert "must hold a list under 'registrations:'" in capsys.readouterr().err
