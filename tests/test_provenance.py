"""Provenance: every record says which software, device, weights and data made it; file digests are
cached by path, size and mtime; analysis shows the entries as columns; the config hash ignores them."""
import hashlib
import json
import os
import platform
from pathlib import Path

import pytest
import torch

import analysis
from conftest import composed
from experiments.config import Task, build
from experiments.records import store as results
from experiments.run import provenance, runner

SHORT = ["train.max_steps=2", "train.batch_size=8", "train.max_length=32", "train.eval_each_epoch=false",
         "data.max_train_samples=16", "data.max_eval_samples=16", "variant=head"]


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LORA_ARENA_CACHE", str(tmp_path / "cache"))


def config(tmp_path, *overrides) -> dict:
    return composed(*SHORT, f"results.dir={tmp_path}", *overrides)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_a_file_digest_is_cached_by_path_size_and_mtime(tmp_path):
    file = tmp_path / "weights.bin"
    file.write_bytes(b"abcd")
    os.utime(file, ns=(10**18, 10**18))
    assert provenance.file_sha256(file) == sha256(b"abcd")
    file.write_bytes(b"wxyz")  # same size; with the old mtime the cached digest is (knowingly) kept
    os.utime(file, ns=(10**18, 10**18))
    assert provenance.file_sha256(file) == sha256(b"abcd")
    os.utime(file, ns=(2 * 10**18, 2 * 10**18))  # a new mtime: hashed again
    assert provenance.file_sha256(file) == sha256(b"wxyz")


def tiny_task(**sources) -> Task:
    return Task(name="t", text_fields=("a",), label_field="b", num_labels=2, metric="sst2", main_metric="accuracy",
                splits={"train": "train", "validation": "validation"}, **sources)


def test_a_local_model_is_identified_by_its_weight_files(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"w1")
    (tmp_path / "config.json").write_text("{}")  # not a weight file: not in the digest
    expected = sha256(f"model.safetensors\0{sha256(b'w1')}\n".encode())
    assert provenance.model_identity(str(tmp_path)) == {"model_revision": None, "model_sha256": expected}


def test_a_hub_model_and_dataset_are_identified_by_the_cached_revision(tmp_path, monkeypatch):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))
    commit = "0123456789abcdef0123456789abcdef01234567"
    for folder in ("models--org--bert", "datasets--nyu-mll--glue"):
        (tmp_path / folder / "refs").mkdir(parents=True)
        (tmp_path / folder / "refs" / "main").write_text(commit)
    assert provenance.model_identity("org/bert")["model_revision"] == commit
    assert provenance.model_identity("org/other")["model_revision"] is None  # not cached: unknown
    task = tiny_task(hub={"path": "nyu-mll/glue", "name": "mrpc"}, local={"files": {}})
    assert provenance.data_identity(task, None) == {"data_revision": commit, "data_sha256": None,
                                                    "data_files": None}


def test_local_data_is_identified_by_each_file_digest(tmp_path):
    (tmp_path / "T").mkdir()
    (tmp_path / "T" / "train.tsv").write_text("a\tb\n")
    (tmp_path / "T" / "dev.tsv").write_text("c\td\n")
    task = tiny_task(local={"folder": "T", "files": {"train": "train.tsv", "validation": "dev.tsv"}})
    identity = provenance.data_identity(task, str(tmp_path))
    assert identity["data_sha256"] == {"train": sha256(b"a\tb\n"), "validation": sha256(b"c\td\n")}
    assert identity["data_files"]["train"] == str(tmp_path / "T" / "train.tsv")


@pytest.mark.slow
def test_a_run_records_its_provenance_outside_the_config_hash(tmp_path):
    cfg = config(tmp_path)
    record = runner.run(cfg, show_progress=False)
    assert record["status"] == "ok"
    stored = json.loads(results.record_path(tmp_path, record["config_hash"]).read_text())
    found = stored["provenance"]
    assert found["python"] == platform.python_version() and found["torch"] == torch.__version__
    assert found["transformers"] and found["torch_threads"] == torch.get_num_threads()
    assert found["device"] == ("cuda" if torch.cuda.is_available() else "cpu")
    assert len(found["model_sha256"]) == 64 and found["model_revision"] is None  # the packaged MiniLM
    demo_files = {split: Path(path) for split, path in found["data_files"].items()}
    assert found["data_sha256"] == {split: sha256(path.read_bytes()) for split, path in demo_files.items()}
    assert "provenance" not in stored["config"]
    assert record["config_hash"] == build(stored["config"]).config_hash  # the config alone decides it

    df = analysis.load_results(tmp_path)
    assert df.loc[0, "provenance.torch"] == torch.__version__
    assert df.loc[0, "provenance.data_sha256.train"] == found["data_sha256"]["train"]
    assert "provenance" not in df.columns  # flat columns only
