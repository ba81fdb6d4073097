"""Result records: stable hashes, atomic writes, a failure never replaces a success."""
import json
import os

from experiments import results


def record(run_hash="abc123def456", status="ok", **extra):
    return {"config_hash": run_hash, "status": status, "main_score": 0.5, **extra}


def test_hash_ignores_where_results_go_but_not_what_is_run():
    cfg = {"rank": 8, "train": {"lr": 1e-3}, "results": {"dir": "a"}, "data": {"glue_dir": "/x", "max_train_samples": None}}
    moved = {**cfg, "results": {"dir": "b"}, "data": {"glue_dir": "/y", "max_train_samples": None}}
    changed = {**cfg, "rank": 16}
    assert results.config_hash(cfg) == results.config_hash(moved)
    assert results.config_hash(cfg) != results.config_hash(changed)
    assert len(results.config_hash(cfg)) == 12


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
    cfg = {"rank": 8, "data": {"max_train_samples": None}, "train": {"lr": 1e-3}}
    monkeypatch.setitem(results.HASH_NEUTRAL, "data.new_setting", (None, 0))
    monkeypatch.setitem(results.HASH_NEUTRAL, "train.other", (False,))
    assert results.config_hash({**cfg, "data": {"max_train_samples": None, "new_setting": 0}}) == results.config_hash(cfg)
    assert results.config_hash({**cfg, "train": {"lr": 1e-3, "other": False}}) == results.config_hash(cfg)
    assert results.config_hash({**cfg, "data": {"max_train_samples": None, "new_setting": 0.1}}) != results.config_hash(cfg)
