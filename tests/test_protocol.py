"""The comparison protocol's experiment side: the selection split (held out of train, stratified, the
same for every variant and seed), per-example predictions beside each record, the collapse endpoints
(final and constant-prediction training loss), the trainable pooler as a head every variant shares,
learning-rate factors and tuned-settings files folded into the hashed lr, and the tuning rule of
``python -m experiments.tune``."""
import json
import math
from collections import Counter
from pathlib import Path

import datasets
import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from omegaconf import OmegaConf

import variants
from conftest import REPO, composed, make_bert
from experiments import choose, tune
from experiments.config import ConfigError, Task, build
from experiments.config.checking import tuned_rates
from experiments.records import store
from experiments.run import data, runner
from experiments.run.models import head_modules
from experiments.run.train import last_epoch_loss

DEMO = Task.from_config(OmegaConf.load(REPO / "conf" / "task" / "demo.yaml"))
SHORT = ["train.batch_size=8", "train.max_length=32", "data.max_train_samples=64", "data.max_eval_samples=32"]


def tiny_task(num_labels: int) -> Task:
    return Task(name="t", text_fields=("sentence",), label_field="label", num_labels=num_labels,
                metric="stsb" if num_labels == 1 else "sst2", main_metric="pearson" if num_labels == 1 else "accuracy",
                splits={"train": "train", "validation": "validation"})


#: the fields of a record before the protocol's additions
OLD_FIELDS = {"config_hash", "status", "error", "timestamp", "git_commit", "experiment", "variant", "task", "model",
              "model_name_or_path", "pooling", "rank", "alpha", "target_modules", "dropout", "seed", "lr", "head_lr",
              "epochs", "max_steps", "batch_size", "max_length", "warmup", "weight_decay", "max_train_samples",
              "config", "metrics", "main_metric", "main_score", "eval_loss", "trainable_params", "total_params",
              "adapter_bytes", "train_seconds", "steps", "seconds_per_step", "peak_memory_mb", "device",
              "learning_curve"}


def rows(dataset) -> Counter:
    return Counter(zip(dataset["sentence"], dataset["label"]))


# -- the selection split ---------------------------------------------------------------------------------

@pytest.mark.slow
def test_the_selection_split_is_held_out_of_train_and_the_same_whatever_the_seed_and_train_size():
    full = data.load_splits(DEMO, None)["train"]
    first = data.load_splits(DEMO, None, selection_fraction=0.1)
    other = data.load_splits(DEMO, None, max_train_samples=300, seed=7, selection_fraction=0.1)
    selection = first[data.SELECTION]
    assert len(selection) == round(0.1 * len(full)) and len(first["train"]) == len(full) - len(selection)
    assert selection.to_list() == other[data.SELECTION].to_list()  # training seed and size change nothing
    assert rows(first["train"]) + rows(selection) == rows(full)  # a partition of train (rows may repeat)
    assert not rows(other["train"]) - (rows(full) - rows(selection)) and len(other["train"]) == 300
    assert first["validation"].to_list() == data.load_splits(DEMO, None)["validation"].to_list()
    redrawn = data.load_splits(DEMO, None, selection_fraction=0.1, selection_seed=1)[data.SELECTION]
    assert redrawn.to_list() != selection.to_list()


def test_the_selection_split_is_stratified_by_class():
    labels = [0] * 90 + [1] * 10 + [2] * 50
    train = datasets.Dataset.from_dict({"sentence": [str(i) for i in range(len(labels))], "label": labels})
    kept, chosen = data.selection_split(train, 0.2, 0, tiny_task(3))
    assert sorted(kept + chosen) == list(range(len(labels))) and not set(kept) & set(chosen)
    assert Counter(labels[i] for i in chosen) == {0: 18, 1: 2, 2: 10}


def test_the_selection_split_of_a_regression_task_is_stratified_by_score_bins():
    scores = [float(i) ** 3 for i in range(200)]  # skewed: most of the range holds few rows
    train = datasets.Dataset.from_dict({"sentence": [str(i) for i in range(200)], "label": scores})
    _, chosen = data.selection_split(train, 0.1, 0, tiny_task(1))
    assert Counter(i // 20 for i in chosen) == {b: 2 for b in range(10)}  # two of every decile


@pytest.mark.parametrize("fraction", [0, 1, 1.5, -0.1, "half"])
def test_a_bad_selection_fraction_is_named(fraction):
    train = datasets.Dataset.from_dict({"sentence": ["a", "b", "c"], "label": [0, 1, 0]})
    with pytest.raises(ValueError, match="data.selection_fraction must be a number in \\(0, 1\\)"):
        data.selection_split(train, fraction, 0, tiny_task(2))


# -- records, predictions, collapse endpoints ------------------------------------------------------------

@pytest.mark.slow
def test_a_run_with_a_selection_split_records_it_and_writes_predictions_that_match(tmp_path):
    cfg = composed(*SHORT, "train.max_steps=10", "data.selection_fraction=0.1", f"results.dir={tmp_path}")
    record = runner.run(cfg, show_progress=False)
    assert record["status"] == "ok", record["error"]
    splits = data.load_splits(DEMO, None, 64, 32, seed=0, selection_fraction=0.1)
    assert record["selection_score"] == record["selection_metrics"]["accuracy"]
    per_epoch, final = record["learning_curve"][-2], record["learning_curve"][-1]  # 8 steps an epoch
    assert per_epoch["step"] == 8 and 0 <= per_epoch["selection"] <= 1
    assert per_epoch["eval"] is None  # dev is scored once, at the end, when a selection split exists
    assert final["selection"] == record["selection_score"] and final["eval"] == record["main_score"]
    frequencies = np.bincount(splits["train"]["label"]) / len(splits["train"])
    assert record["constant_train_loss"] == pytest.approx(-(frequencies * np.log(frequencies)).sum())
    assert math.isfinite(record["final_train_loss"]) and record["final_train_loss"] > 0

    assert record["predictions_file"] == f"{record['config_hash']}.predictions.parquet"
    table = pq.read_table(tmp_path / "runs" / record["predictions_file"]).to_pandas()
    assert list(table.columns) == ["split", "example", "label", "prediction", "logit_0", "logit_1"]
    for split, name, scores in (("validation", "validation", record["metrics"]),
                                ("selection", data.SELECTION, record["selection_metrics"])):
        part = table[table["split"] == split]
        assert part["example"].tolist() == list(range(len(splits[name])))
        assert part["label"].tolist() == splits[name]["label"]  # aligned with the split as loaded
        assert (part["prediction"] == part[["logit_0", "logit_1"]].to_numpy().argmax(axis=1)).all()
        assert (part["prediction"] == part["label"]).mean() == pytest.approx(scores["accuracy"])


@pytest.mark.slow
def test_without_a_selection_split_a_record_is_as_before_and_the_pooler_trains_with_the_head(tmp_path):
    plain = runner.run(composed(*SHORT, "train.max_steps=2", "variant=head", f"results.dir={tmp_path}"),
                       show_progress=False)
    pooled = runner.run(composed(*SHORT, "train.max_steps=2", "variant=head", "model.pooling=trainable",
                                 f"results.dir={tmp_path}"), show_progress=False)
    assert plain["status"] == pooled["status"] == "ok"
    assert not OLD_FIELDS - set(plain)
    assert "selection_score" not in plain and "selection_metrics" not in plain
    assert all("selection" not in entry for entry in plain["learning_curve"])
    table = pq.read_table(tmp_path / "runs" / plain["predictions_file"])
    assert set(table.column("split").to_pylist()) == {"validation"} and table.num_rows == 32
    assert pooled["trainable_params"] == plain["trainable_params"] + 384 * 384 + 384
    assert pooled["adapter_bytes"] > plain["adapter_bytes"]


@pytest.mark.slow
def test_a_run_that_fails_while_writing_its_predictions_leaves_neither_them_nor_an_ok_record(tmp_path, monkeypatch):
    def broken_disk(table, where, **kwargs):
        Path(where).write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(pq, "write_table", broken_disk)
    record = runner.run(composed(*SHORT, "train.max_steps=2", "variant=head", f"results.dir={tmp_path}"),
                        show_progress=False)
    assert record["status"] == "failed" and "disk full" in record["error"]
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == [f"{record['config_hash']}.json"]


def test_predictions_of_a_regression_task_are_scores_in_the_split_order(tmp_path):
    outputs = {"validation": (np.array([[0.3], [0.1], [0.2]], dtype=np.float32), np.array([3.0, 1.0, 2.0]))}
    table = store.predictions_table(outputs, {"validation": [2, 0, 1]}, num_labels=1)
    path = store.write_predictions(tmp_path, "abc", table)
    back = pq.read_table(path).to_pandas()
    assert list(back.columns) == ["split", "example", "label", "prediction"]
    assert back["example"].tolist() == [0, 1, 2] and back["label"].tolist() == [1.0, 2.0, 3.0]
    assert back["prediction"].to_numpy() == pytest.approx([0.1, 0.2, 0.3])
    assert str(back["label"].dtype) == "float64" and not list(path.parent.glob("*.tmp"))


def test_the_constant_prediction_loss_is_the_label_entropy_or_variance():
    assert tiny_task(2).constant_prediction_loss([0, 1, 1, 0]) == pytest.approx(math.log(2))
    assert tiny_task(3).constant_prediction_loss([2, 2]) == 0.0
    assert tiny_task(1).constant_prediction_loss([1.0, 2.0, 3.0]) == pytest.approx(2 / 3)


def test_the_final_training_loss_is_the_last_epoch_or_the_last_window():
    assert last_epoch_loss([[9.0] * 30, [1.0, 3.0] * 15], window=20) == 2.0
    assert last_epoch_loss([[4.0] * 30, [2.0] * 5], window=10) == pytest.approx((5 * 4.0 + 5 * 2.0) / 10)


def test_the_trainable_pooler_is_trained_counted_and_saved_by_every_variant(tmp_path):
    frozen, pooled = make_bert(), make_bert()
    variants.apply(frozen, "lora", rank=2, target_modules=["query"], head_modules=head_modules("model"))
    variants.apply(pooled, "lora", rank=2, target_modules=["query"], head_modules=head_modules("trainable"))
    assert all(p.requires_grad for p in pooled.bert.pooler.parameters())
    assert not any(p.requires_grad for p in frozen.bert.pooler.parameters())
    assert variants.trainable_parameters(pooled) == variants.trainable_parameters(frozen) + 32 * 32 + 32
    with torch_no_grad():
        pooled.bert.pooler.dense.weight.add_(1.0)
    variants.save(pooled, tmp_path / "adapter")
    fresh = make_bert()
    variants.load(fresh, tmp_path / "adapter")
    assert (fresh.bert.pooler.dense.weight == pooled.bert.pooler.dense.weight).all()


def torch_no_grad():
    import torch

    return torch.no_grad()


# -- hashes: old configs keep theirs; factors and tuned files are hashed as the lr they give -------------

def test_new_settings_at_their_defaults_keep_the_old_hashes():
    """Settings added after records were made are left out of the hash at their neutral value, so the
    committed records (made before they existed) keep their hashes."""
    payload = build(composed("variant=vera", "task=mrpc")).hash_input()
    for section, key in (("data", "selection_fraction"), ("data", "selection_seed"), ("train", "lr_factor"),
                         ("train", "tuned_file"), ("train", "tuned_variant")):
        assert key not in payload[section]
    assert payload["variant"] == {"name": "vera", "options": {}}  # options at their defaults: not hashed
    moved = build(composed("variant=vera", "task=mrpc", "variant.projection_seed=3")).hash_input()
    assert moved["variant"] == {"name": "vera", "options": {"projection_seed": 3}}


@pytest.mark.slow
def test_a_learning_rate_factor_is_hashed_as_the_learning_rate_it_gives():
    scaled = build(composed("variant=vera", "train.lr_factor=0.25"))
    direct = build(composed("variant=vera", "train.lr=5e-3", "train.head_lr=1e-3"))
    assert (scaled.train.lr, scaled.train.head_lr) == (5e-3, 1e-3)
    assert scaled.config_hash == direct.config_hash
    assert build(composed("variant=vera", "train.lr_factor=1")).config_hash == build(composed("variant=vera")).config_hash
    with pytest.raises(ConfigError, match=r"train.lr_factor=-1.0: must be a number > 0"):
        build(composed("train.lr_factor=-1"))


@pytest.mark.slow
def test_a_tuned_file_is_hashed_as_the_learning_rate_it_names(tmp_path):
    path = tmp_path / "tuned.yaml"
    path.write_text(yaml.safe_dump({"demo": {"lora": {"lr": 1e-3, "head_lr": None}}}))
    tuned = build(composed(f"train.tuned_file={path}"))
    assert tuned.train.lr == 1e-3 and tuned.train.tuned_file is None
    assert tuned.config_hash == build(composed("train.lr=1e-3")).config_hash
    with pytest.raises(ConfigError, match="no setting for variant 'dora' on task 'demo'; it has demo/lora"):
        build(composed("variant=dora", f"train.tuned_file={path}"))


@pytest.mark.slow
def test_a_run_can_take_another_variants_tuned_rate(tmp_path):
    path = tmp_path / "tuned.yaml"
    path.write_text(yaml.safe_dump({"demo": {"lora": {"lr": 1e-3, "head_lr": 4e-3}, "rslora": {"lr": 3e-4, "head_lr": None}}}))
    borrowed = build(composed("variant=rslora", f"train.tuned_file={path}", "train.tuned_variant=lora"))
    assert (borrowed.train.lr, borrowed.train.head_lr, borrowed.train.tuned_variant) == (1e-3, 4e-3, None)
    own = build(composed("variant=rslora", f"train.tuned_file={path}"))
    assert own.train.lr == 3e-4
    assert borrowed.config_hash == build(composed("variant=rslora", "train.lr=1e-3", "train.head_lr=4e-3")).config_hash
    with pytest.raises(ConfigError, match="unknown variant 'lroa'; available: .*lora"):
        build(composed(f"train.tuned_file={path}", "train.tuned_variant=lroa"))
    with pytest.raises(ConfigError, match="train.tuned_variant='lora' needs train.tuned_file"):
        build(composed("train.tuned_variant=lora"))


# -- the tuning rule -----------------------------------------------------------------------------------

def fake_record(task, variant, lr, seed, score, head_lr=None, **extra) -> dict:
    return {"config_hash": f"{variant}{task}{lr}{seed}", "status": "ok", "task": task, "variant": variant,
            "lr": lr, "head_lr": head_lr, "seed": seed, "selection_score": score, "main_score": 0.0,
            "rank": 8, "pooling": "model", "epochs": 3, **extra}


def write_records(folder: Path, records) -> Path:
    (folder / "runs").mkdir(parents=True, exist_ok=True)
    for record in records:
        (folder / "runs" / f"{record['config_hash']}.json").write_text(json.dumps(record))
    return folder


#: lora on mrpc: 4e-4 has the best median (0.80) but 2e-4 (0.79) is within its standard error
#: (std 0.03 / sqrt 3 = 0.017), so the rule picks 2e-4; 1e-4 (0.70) is not. dora: the best is the
#: highest lr tried, flagged as the edge of the grid.
GRID = {("lora", 1e-4): [0.70, 0.69, 0.71], ("lora", 2e-4): [0.79, 0.78, 0.80],
        ("lora", 4e-4): [0.80, 0.77, 0.83], ("dora", 1e-4): [0.60, 0.61, 0.62],
        ("dora", 2e-4): [0.70, 0.71, 0.72], ("dora", 4e-4): [0.80, 0.81, 0.82]}


def fake_study(folder):
    return write_records(folder, [fake_record("mrpc", variant, lr, seed, score)
                                  for (variant, lr), scores in GRID.items() for seed, score in enumerate(scores)])


def test_the_tuning_rule_prefers_the_lower_lr_within_one_standard_error_and_flags_an_edge(tmp_path):
    rows = tune.choose(tune.read_records(fake_study(tmp_path)))
    chosen = {row["variant"]: row for row in rows if row["chosen"]}
    assert (chosen["lora"]["lr"], chosen["lora"]["edge"]) == (2e-4, None)
    assert (chosen["dora"]["lr"], chosen["dora"]["edge"]) == (4e-4, "highest")
    assert sum(row["chosen"] for row in rows) == 2 and len(rows) == 6


def test_the_tuning_command_prints_its_table_warns_and_writes_what_a_final_run_reads(tmp_path, capsys):
    out = tmp_path / "tuned.yaml"
    assert tune.main([str(fake_study(tmp_path / "study")), "--out", str(out)]) == 0
    printed = capsys.readouterr()
    assert "| mrpc | lora | 0.0002 |  | 3 | 79.00 |" in printed.out and "at the highest lr" in printed.out
    assert "dora on mrpc: the chosen lr 0.0004 is the highest of its grid" in printed.err
    assert "| variant | mrpc |" in printed.out
    assert "| dora | 0.0004 (81.0), edge |" in printed.out and "| lora | 0.0002 (79.0) |" in printed.out
    assert tuned_rates(out, "lora", "mrpc") == {"lr": 2e-4, "head_lr": None}
    cfg = build(composed("task=mrpc", "variant=dora", f"train.tuned_file={out}"))
    assert cfg.train.lr == 4e-4


def test_the_tuning_command_refuses_records_that_differ_in_more_than_the_lr(tmp_path, capsys):
    write_records(tmp_path, [fake_record("rte", "lora", 1e-4, 0, 0.5),
                             fake_record("rte", "lora", 2e-4, 0, 0.6, pooling="mean")])
    assert tune.main([str(tmp_path), "--out", str(tmp_path / "t.yaml")]) == 2
    assert "differ in pooling ('model' and 'mean')" in capsys.readouterr().err


def test_the_tuning_command_says_when_budgets_are_unequal(tmp_path):
    records = [fake_record("rte", "lora", lr, s, 0.5) for lr in (1e-4, 2e-4) for s in range(3)]
    records += [fake_record("rte", "dora", 1e-4, 0, 0.5)]
    notes = tune.warnings_for(tune.choose(records))
    assert any("unequal tuning budgets" in note and "dora 1, lora 6" in note for note in notes)


# -- a study-wide choice (stage 1 of the second edition: the head) -------------------------------------

def pooling_record(task, variant, pooling, seed, score, at_epoch_3):
    curve = [{"step": 10 * epoch, "epoch": float(epoch), "loss": None, "eval": None,
              "selection": at_epoch_3 if epoch == 3 else 0.5} for epoch in (1, 2, 3, 4)]
    curve.append({"step": 50, "epoch": 5.0, "loss": None, "eval": 0.1, "selection": score})
    return fake_record(task, variant, 1e-4, seed, score, config_hash=f"{task}{variant}{pooling}{seed}",
                       pooling=pooling, epochs=5, learning_curve=curve)


def pooling_study(folder, scores, late_gain=0.0):
    """scores: {pooling: points in every cell}; the two seeds are 1 point either side of it."""
    records = [pooling_record(task, variant, pooling, seed, (points + offset) / 100,
                              (points + offset - late_gain) / 100)
               for task in ("mrpc", "stsb") for variant in ("lora", "full")
               for pooling, points in scores.items() for seed, offset in enumerate((-1.0, 1.0))]
    return write_records(folder, records)


PREFER = ["--setting", "pooling", "--prefer", "model,mean,trainable", "--shorter-epochs", "3"]


def test_the_choice_prefers_the_value_that_changes_the_model_least_within_the_margin(tmp_path, capsys):
    # trainable is 0.5 points above model, mean 2 below: model wins (within 1.0, listed first)
    folder = pooling_study(tmp_path, {"model": 80.0, "mean": 78.0, "trainable": 80.5})
    out = tmp_path / "choice.yaml"
    assert choose.main([str(folder), *PREFER, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "chosen: pooling = model (80.00: within 1 points of the highest (trainable, 80.50)" in printed
    assert "| mrpc | lora | 78.00 | 80.00 | 80.50 |" in printed  # columns in sorted order: mean, model, trainable
    assert yaml.safe_load(out.read_text()) == {"pooling": "model", "epochs": 3}


def test_the_choice_takes_the_best_beyond_the_margin_and_keeps_the_longer_budget_when_it_still_gains(tmp_path,
                                                                                                    capsys):
    folder = pooling_study(tmp_path, {"model": 80.0, "mean": 82.0, "trainable": 81.5}, late_gain=1.5)
    assert choose.main([str(folder), *PREFER, "--out", str(tmp_path / "c.yaml")]) == 0
    printed = capsys.readouterr().out
    assert "chosen: pooling = mean (82.00: the highest mean)" in printed
    assert "epochs: 5 (the largest gain after epoch 3 is +1.50 points, more than 1)" in printed
    assert yaml.safe_load((tmp_path / "c.yaml").read_text()) == {"pooling": "mean", "epochs": 5}


def test_the_choice_refuses_a_value_missing_from_a_cell_or_from_the_preference(tmp_path, capsys):
    folder = pooling_study(tmp_path, {"model": 80.0, "mean": 82.0})
    (folder / "runs" / "stsbfullmean0.json").unlink()
    (folder / "runs" / "stsbfullmean1.json").unlink()
    assert choose.main([str(folder), *PREFER]) == 2
    assert "full on stsb has no run with pooling = mean" in capsys.readouterr().err
    assert choose.main([str(folder), "--setting", "pooling", "--prefer", "model"]) == 2
    assert "--prefer does not list mean" in capsys.readouterr().err


def test_a_test_split_is_held_out_of_train_apart_from_the_selection_split_and_the_same_for_every_run():
    full = data.load_splits(DEMO, None)["train"]
    first = data.load_splits(DEMO, None, selection_fraction=0.1, test_size=500)
    other = data.load_splits(DEMO, None, max_train_samples=300, seed=7, selection_fraction=0.1, test_size=500)
    test, selection = first[data.TEST], first[data.SELECTION]
    assert abs(len(test) - 500) <= 2 and test.to_list() == other[data.TEST].to_list()
    assert selection.to_list() == data.load_splits(DEMO, None, selection_fraction=0.1)[data.SELECTION].to_list()
    assert rows(first["train"]) + rows(selection) + rows(test) == rows(full)  # a partition of train
    assert not rows(other["train"]) - (rows(full) - rows(selection) - rows(test))
    assert Counter(test["label"])[0] == pytest.approx(Counter(test["label"])[1], abs=2)  # stratified
    with pytest.raises(ValueError, match="data.test_size=4000 must leave rows to train on"):
        data.load_splits(DEMO, None, selection_fraction=0.1, test_size=4000)


@pytest.mark.slow
def test_a_run_with_a_test_split_scores_it_once_and_saves_its_predictions(tmp_path):
    record = runner.run(composed(*SHORT, "train.max_steps=4", "variant=head", "data.selection_fraction=0.1",
                                 "data.test_size=100", f"results.dir={tmp_path}"), show_progress=False)
    assert record["status"] == "ok" and record["test_score"] == record["test_metrics"]["accuracy"]
    assert all("test" not in entry for entry in record["learning_curve"])  # scored at the end only
    table = pq.read_table(tmp_path / "runs" / record["predictions_file"]).to_pandas()
    part = table[table["split"] == "test"]
    assert 98 <= len(part) <= 102 and (part["prediction"] == part["label"]).mean() == pytest.approx(record["test_score"])
    assert build(composed("data.test_size=100")).config_hash != build(composed()).config_hash
    assert "test_size" not in build(composed()).hash_input()["data"]  # neutral when unset: old hashes stay
