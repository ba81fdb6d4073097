"""Result records: stable hashes (every committed record's from its own config), atomic writes, a
failure never replaces a success."""
import json
import os

import pytest

from conftest import REPO, composed
from experiments.config import build
from experiments.config import schema
from experiments.records import store as results


def record(run_hash="abc123def456", status="ok", **extra):
    return {"config_hash": run_hash, "status": status, "main_score": 0.5, **extra}


@pytest.mark.slow
def test_hash_ignores_where_results_go_but_not_what_is_run():
    config = build(composed("results.dir=a", "data.glue_dir=/x"))
    moved = build(composed("results.dir=b", "data.glue_dir=/y", "logger=wandb"))
    changed = build(composed("rank=16"))
    assert config.config_hash == moved.config_hash
    assert config.config_hash != changed.config_hash
    assert len(config.config_hash) == 12


@pytest.mark.slow
def test_an_option_at_its_default_is_hashed_as_if_unset():
    assert build(composed("variant.init=kaiming")).config_hash == build(composed()).config_hash
    assert build(composed("variant.init=gaussian")).config_hash != build(composed()).config_hash
    assert build(composed("alpha=16")).config_hash == build(composed("alpha=16.0")).config_hash


def holds(built: dict, stored: dict) -> bool:
    """Whether every key of ``stored`` (nested) has the same value in ``built``."""
    return all(key in built and (holds(built[key], value) if isinstance(value, dict) and isinstance(built[key], dict)
                                 else built[key] == value) for key, value in stored.items())


@pytest.mark.slow
def test_every_committed_record_is_named_by_the_hash_of_its_own_config():
    """What a record stores as its config is what a new run of that configuration would build: typed,
    checked and hashed to the record's own name (so skip-on-rerun and progress find it). A key added to
    the schema after a record was written (e.g. data.test_size) is absent from it: build fills its
    default, which the hash leaves out."""
    paths = sorted(REPO.glob("results/**/runs/*.json"))
    assert len(paths) > 500
    wrong = []
    for path in paths:
        record = json.loads(path.read_text())
        config = build(record["config"], check_files=False)
        if not (config.config_hash == record["config_hash"] == path.stem
                and holds(config.as_dict(), record["config"])):
            wrong.append(path.relative_to(REPO))
    assert not wrong, f"{len(wrong)} records do not match their config, e.g. {wrong[:3]}"


def test_write_is_atomic_and_leaves_no_temporary_files(tmp_path):
    path = results.write_record(tmp_path, record())
    assert json.loads(path.read_text())["status"] == "ok"
    assert sorted(os.listdir(path.parent)) == [path.name]
    assert results.has_successful_record(tmp_path, "abc123def456")


def test_a_failed_attempt_never_replaces_a_successful_record(tmp_path):
    results.write_record(tmp_path, record(main_score=0.9))
    results.write_record(tmp_path, record(status="failed", error="boom"))
    assert results.read_record(results.record_path(tmp_path, "abc123def456"))["main_score"] == 0.9


def test_a_success_replaces_a_failed_record(tmp_path):
    results.write_record(tmp_path, record(status="failed", error="boom"))
    assert not results.has_successful_record(tmp_path, "abc123def456")
    results.write_record(tmp_path, record())
    assert results.has_successful_record(tmp_path, "abc123def456")


def test_unreadable_record_counts_as_missing(tmp_path):
    path = results.record_path(tmp_path, "abc123def456")
    path.parent.mkdir(parents=True)
    path.write_text('{"config_hash": "abc1')  # as if cut off
    assert results.read_record(path) is None
    assert not results.has_successful_record(tmp_path, "abc123def456")


def test_a_new_setting_at_its_neutral_value_leaves_the_hash_alone(monkeypatch):
    config = build(composed())
    before = config.config_hash
    monkeypatch.setitem(schema.HASH_NEUTRAL, "train.lr", (config.train.lr,))
    assert config.config_hash != before and "lr" not in config.hash_input()["train"]
