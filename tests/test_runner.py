"""End to end: one short run per variant on the packaged MiniLM and the demo task, skip-on-rerun,
failed runs recorded, determinism, and sweeps through the basic, joblib and submitit_local launchers."""
import os
import subprocess
import sys

import pytest

import variants
from conftest import REPO, SHORT, records
from conftest import short_config as config
from experiments.run import runner

pytestmark = pytest.mark.slow  # every test here trains (seconds each) or starts processes


@pytest.mark.parametrize("variant", variants.available())
def test_a_short_run_per_variant_leaves_one_ok_record(variant, tmp_path):
    record = runner.run(config(tmp_path, f"variant={variant}", "rank=4"), show_progress=False)
    assert record["status"] == "ok", record["error"]
    assert [r["config_hash"] for r in records(tmp_path)] == [record["config_hash"]]
    assert 0 <= record["main_score"] <= 1 and record["main_metric"] in record["metrics"]
    assert record["steps"] == 3 and record["seconds_per_step"] > 0 and record["peak_memory_mb"] > 0
    assert 0 < record["trainable_params"] <= record["total_params"]
    assert record["adapter_bytes"] > 0
    assert record["baseline"] is variants.lookup(variant).is_baseline
    assert record["precision"] == {"no": "fp32", "bf16": "bf16"}[record["config"]["train"]["mixed_precision"]]
    if variants.lookup(variant).saves_all_trainable:
        assert record["trainable_params"] == record["total_params"]
    elif variants.lookup(variant).is_baseline:
        assert record["trainable_params"] < 1000  # the head only: 384 * 2 + 2


def test_a_bf16_run_records_its_precision_and_is_its_own_configuration(tmp_path):
    fp32 = runner.run(config(tmp_path, "variant=lora", "train.mixed_precision=no"), show_progress=False)
    bf16 = runner.run(config(tmp_path, "variant=lora", "train.mixed_precision=bf16"), show_progress=False)
    assert (fp32["precision"], bf16["precision"]) == ("fp32", "bf16") and bf16["status"] == "ok"
    assert fp32["config_hash"] != bf16["config_hash"] and not bf16.get("skipped")


def test_a_successful_config_is_skipped_on_rerun(tmp_path):
    first = runner.run(config(tmp_path, "variant=head"), show_progress=False)
    again = runner.run(config(tmp_path, "variant=head"), show_progress=False)
    assert again.get("skipped") and again["config_hash"] == first["config_hash"]
    assert len(records(tmp_path)) == 1


def test_mean_pooling_is_its_own_configuration_and_is_recorded(tmp_path):
    pooled = runner.run(config(tmp_path, "variant=head", "model.pooling=mean"), show_progress=False)
    plain = runner.run(config(tmp_path, "variant=head"), show_progress=False)
    assert pooled["status"] == plain["status"] == "ok"
    assert (pooled["pooling"], plain["pooling"]) == ("mean", "model")
    assert pooled["config_hash"] != plain["config_hash"] and not plain.get("skipped")
    assert pooled["total_params"] == plain["total_params"] - (384 * 384 + 384)  # no pooler weights


def test_baselines_ignore_rank_so_a_rank_sweep_runs_them_once(tmp_path):
    a = runner.run(config(tmp_path, "variant=head", "rank=4"), show_progress=False)
    b = runner.run(config(tmp_path, "variant=head", "rank=16"), show_progress=False)
    assert b.get("skipped") and a["config_hash"] == b["config_hash"]


def test_nan_loss_is_recorded_as_failed_with_its_reason(tmp_path, monkeypatch):
    real = runner.load_model_and_tokenizer

    def broken(*args, **kwargs):
        model, tokenizer = real(*args, **kwargs)
        model.classifier.weight.data.fill_(float("nan"))
        return model, tokenizer

    monkeypatch.setattr(runner, "load_model_and_tokenizer", broken)
    record = runner.run(config(tmp_path, "variant=lora"), show_progress=False)
    assert record["status"] == "failed" and "loss became nan" in record["error"]
    assert records(tmp_path)[0]["status"] == "failed"


def test_same_config_and_seed_give_the_same_metrics(tmp_path):
    first = runner.run(config(tmp_path / "a", "variant=lora"), show_progress=False)
    second = runner.run(config(tmp_path / "b", "variant=lora"), show_progress=False)
    assert first["metrics"] == second["metrics"] and first["eval_loss"] == second["eval_loss"]


def sweep(tmp_path, *args):
    command = [sys.executable, "run.py", "-m", *SHORT, f"results.dir={tmp_path}",
               f"hydra.sweep.dir={tmp_path}/sweep", *args]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("launcher", [["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
                                      ["hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10"]],
                         ids=["joblib", "submitit_local"])
def test_a_two_run_sweep_leaves_one_row_per_run(launcher, tmp_path):
    done = sweep(tmp_path, *launcher, "variant=lora,head")
    assert done.returncode == 0, done.stderr[-3000:]
    rows = records(tmp_path)
    assert sorted(r["variant"] for r in rows) == ["head", "lora"]
    assert all(r["status"] == "ok" for r in rows)


def test_on_the_demo_task_head_only_scores_clearly_below_lora(tmp_path):
    """The embedded default task is chosen so that adapting the encoder matters: its label depends on
    word order, which the frozen sentence vector that a head-only model sees does not separate."""
    budget = ["train.max_steps=150", "train.batch_size=32", "train.lr=2e-3", "data.max_train_samples=null",
              "data.max_eval_samples=200"]
    head = runner.run(config(tmp_path, "variant=head", *budget), show_progress=False)
    lora = runner.run(config(tmp_path, "variant=lora", *budget), show_progress=False)
    assert head["status"] == lora["status"] == "ok"
    assert head["main_score"] < 0.62, head["main_score"]
    assert lora["main_score"] - head["main_score"] >= 0.2, (head["main_score"], lora["main_score"])


def test_wandb_logging_works_offline(tmp_path):
    command = [sys.executable, "run.py", *SHORT, "logger=wandb", "train.log_every=1", f"results.dir={tmp_path}",
               f"hydra.run.dir={tmp_path}/hydra"]
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path)}
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert list((tmp_path / "wandb").glob("offline-run-*")), "no offline wandb run was written"
    assert records(tmp_path)[0]["status"] == "ok"
