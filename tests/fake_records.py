"""Write a small, synthetic but realistic set of result records for the analysis tests.

The records follow the runner's contract (one JSON file per run at ``<folder>/<study>/runs/<hash>.json``):
seven variants on three GLUE tasks with three seeds each, a rank sweep and an alpha sweep for LoRA and
rsLoRA, learning curves on some runs and a few failed runs. Scores are deterministic (seeded), so tests
can recompute any summary by hand from the returned records.

``with_predictions=True`` also writes each ok run's per-example predictions sidecar
(``<hash>.predictions.parquet``: split, example, label, prediction, logit_*) on a small fake dev set
and selection split, re-scores the record from them (metrics, main_score, selection_metrics,
selection_score) and adds final_train_loss, constant_train_loss, predictions_file and baseline;
the runs in NOT_FIT_RUNS then end at the constant predictor's training loss, and those in
NOT_GENERALISED_RUNS predict (nearly) a constant.
"""
from __future__ import annotations

import hashlib
import json
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score

TASKS = {  # task -> (main metric, all metrics it reports)
    "mrpc": ("accuracy", ("accuracy", "f1")),
    "rte": ("accuracy", ("accuracy",)),
    "stsb": ("pearson", ("pearson", "spearmanr")),
}
SEEDS = (0, 1, 2)
LAYERS, HIDDEN = 6, 384  # all-MiniLM-L6-v2
TOTAL_PARAMS = 22_713_216
VARIANT_QUALITY = {"full": 0.86, "head": 0.70, "lora": 0.84, "rslora": 0.845, "dora": 0.85,
                   "vera": 0.82, "qlora": 0.835}
TASK_OFFSET = {"mrpc": 0.0, "rte": -0.15, "stsb": 0.03}
# (variant, task, seed, rank, alpha) of the runs that crashed
FAILED_RUNS = {("dora", "rte", 2, 8, 16.0), ("lora", "stsb", 1, 16, 16.0), ("vera", "mrpc", 0, 64, 16.0)}
# with_predictions: examples per split, and the runs that fail: NOT_FIT_RUNS end at the constant
# predictor's training loss (the VeRA one predicts the majority class, the head-only one nearly the mean
# score: Pearson -0.015, so neither generalises either); NOT_GENERALISED_RUNS predict a constant on dev
# (those two, and a QLoRA run that fits its training data but predicts the majority class)
SPLIT_SIZES = {"validation": {"mrpc": 200, "rte": 150, "stsb": 150}, "selection": {"mrpc": 60, "rte": 60,
                                                                                   "stsb": 60}}
NOT_FIT_RUNS = {("vera", "rte", 1, 64, 16.0), ("head", "stsb", 0, 8, 16.0)}
NOT_GENERALISED_RUNS = NOT_FIT_RUNS | {("qlora", "rte", 2, 8, 16.0)}


def configurations():
    """(variant, rank, alpha) of every configuration in the fake study."""
    configs = [("full", 8, 16.0), ("head", 8, 16.0), ("dora", 8, 16.0), ("vera", 64, 16.0),
               ("qlora", 8, 16.0)]
    for variant in ("lora", "rslora"):
        configs += [(variant, rank, 16.0) for rank in (4, 8, 16)]       # rank sweep at alpha 16
        configs += [(variant, 8, alpha) for alpha in (8.0, 32.0)]        # alpha sweep at rank 8
    return configs


def trainable_params(variant, rank, num_labels):
    head = HIDDEN * HIDDEN + HIDDEN + HIDDEN * num_labels + num_labels  # pooler-free head: dense + out
    adapted = LAYERS * 2  # query, value
    if variant == "full":
        return TOTAL_PARAMS + head
    if variant == "head":
        return head
    if variant == "vera":
        return adapted * (rank + HIDDEN) + head
    low_rank = adapted * rank * (HIDDEN + HIDDEN)
    if variant == "dora":
        low_rank += adapted * HIDDEN  # magnitude vector
    return low_rank + head


def make_record(variant, task, seed, rank, alpha, *, rng, failed=False, with_curve=False):
    main_metric, metric_names = TASKS[task]
    num_labels = 1 if task == "stsb" else 2
    config = {"variant": variant, "task": task, "model": "minilm",
              "model_name_or_path": "sentence-transformers/all-MiniLM-L6-v2", "rank": rank,
              "alpha": alpha, "target_modules": "query,value", "dropout": 0.0, "seed": seed,
              "lr": 1e-5 if variant == "full" else 5e-4, "head_lr": None, "epochs": 3.0,
              "max_steps": None, "batch_size": 32, "max_length": 128, "warmup": 0.06,
              "weight_decay": 0.0, "max_train_samples": 2000}
    config_hash = hashlib.sha1(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]
    steps = 188
    record = {"config_hash": config_hash, "status": "failed" if failed else "ok",
              "error": "RuntimeError: loss is nan" if failed else None,
              "timestamp": f"2025-11-22T10:{seed:02d}:{rank % 60:02d}Z", "git_commit": "b1aa628",
              "experiment": "glue_small", **config, "baseline": variant in ("full", "head"), "metrics": {}, "main_metric": main_metric,
              "main_score": None, "eval_loss": None, "trainable_params": None,
              "total_params": TOTAL_PARAMS, "adapter_bytes": None, "train_seconds": None, "steps": None,
              "seconds_per_step": None, "peak_memory_mb": None, "device": "cpu", "learning_curve": [],
              "config": {"variant": {"name": variant, "rank": rank, "alpha": alpha},
                         "task": {"name": task}, "seed": seed}}
    if failed:
        return record
    # a higher rank helps rsLoRA more than LoRA; a higher alpha helps a little
    rank_gain = (0.004 if variant == "rslora" else 0.002) * np.log2(rank / 8)
    score = (VARIANT_QUALITY[variant] + TASK_OFFSET[task] + rank_gain + 0.002 * np.log2(alpha / 16)
             + rng.normal(0, 0.01))
    metrics = {name: round(float(score - 0.01 * i), 6) for i, name in enumerate(metric_names)}
    params = trainable_params(variant, rank, num_labels)
    seconds_per_step = {"full": 0.9, "head": 0.2, "qlora": 0.8, "dora": 0.6}.get(variant, 0.45)
    seconds_per_step = round(seconds_per_step * (1 + rng.normal(0, 0.05)), 4)
    record.update(metrics=metrics, main_score=metrics[main_metric],
                  eval_loss=round(float(0.6 - score / 2 + rng.normal(0, 0.01)), 5),
                  trainable_params=params, adapter_bytes=4 * params, steps=steps,
                  seconds_per_step=seconds_per_step, train_seconds=round(seconds_per_step * steps, 2),
                  peak_memory_mb=round(900 + params / 2.5e4 + rng.normal(0, 10), 1))
    if with_curve:
        record["learning_curve"] = [
            {"step": step, "epoch": round(step / steps * 3, 3),
             "loss": round(float(0.7 * np.exp(-step / 80) + 0.25 + rng.normal(0, 0.01)), 5),
             "eval": round(float(score - 0.1 * np.exp(-step / 60)), 5) if step % 40 == 0 else None}
            for step in range(20, steps + 1, 20)]
    return record


def split_labels(task, split):
    """The fake labels of a split: the same for every run (a fixed, task-seeded draw)."""
    rng = np.random.default_rng(zlib.crc32(f"{task}/{split}".encode()))
    n = SPLIT_SIZES[split][task]
    if task == "stsb":
        return rng.uniform(0, 5, n).round(2)
    return (rng.uniform(size=n) < {"mrpc": 0.6, "rte": 0.5}[task]).astype(np.int64)  # share of class 1


def fake_predictions(record, split, constant):
    """Predictions of one run on one split, near the run's own score; runs with the same seed share
    their per-example luck (so the paired comparison has something to pair)."""
    task, target = record["task"], record["main_score"]
    labels = split_labels(task, split)
    shared = np.random.default_rng(zlib.crc32(f"{task}/{split}/{record['seed']}".encode()))
    own = np.random.default_rng(zlib.crc32(f"{record['config_hash']}/{split}".encode()))
    if task == "stsb":
        noise = 0.7 * shared.normal(size=len(labels)) + np.sqrt(1 - 0.7**2) * own.normal(size=len(labels))
        spread = np.sqrt(labels.var() * (1 / min(target, 0.99) ** 2 - 1))
        prediction = labels + spread * noise
        if constant:
            prediction = labels.mean() + 0.01 * own.normal(size=len(labels))
        return pd.DataFrame({"split": split, "example": np.arange(len(labels)), "label": labels,
                             "prediction": prediction.astype(np.float64)})
    luck = 0.8 * shared.uniform(size=len(labels)) + 0.2 * own.uniform(size=len(labels))
    correct = luck < np.quantile(luck, min(target, 1.0))
    prediction = np.where(correct, labels, 1 - labels)
    if constant:
        prediction = np.full_like(labels, np.bincount(labels).argmax())
    margin = 0.5 + own.uniform(size=len(labels))
    return pd.DataFrame({"split": split, "example": np.arange(len(labels)), "label": labels,
                         "prediction": prediction.astype(np.int64), "logit_0": np.where(prediction == 0, margin, 0.0),
                         "logit_1": np.where(prediction == 1, margin, 0.0)})


def official_metrics(task, frame):
    """The task's metrics from predictions, computed with sklearn / scipy (not with analysis.stats)."""
    labels, prediction = frame["label"].to_numpy(), frame["prediction"].to_numpy()
    if task == "stsb":
        return {"pearson": float(pearsonr(labels, prediction)[0]),
                "spearmanr": float(spearmanr(labels, prediction)[0])}
    metrics = {"accuracy": float(accuracy_score(labels, prediction))}
    if "f1" in TASKS[task][1]:
        metrics["f1"] = float(f1_score(labels, prediction))
    return metrics


def add_predictions(record, runs):
    """Write ``record``'s predictions sidecar into ``runs`` and re-score the record from it (in place)."""
    key = (record["variant"], record["task"], record["seed"], record["rank"], record["alpha"])
    frames = {split: fake_predictions(record, split, key in NOT_GENERALISED_RUNS) for split in SPLIT_SIZES}
    file = f"{record['config_hash']}.predictions.parquet"
    pd.concat(frames.values(), ignore_index=True).to_parquet(runs / file, index=False)
    metrics = official_metrics(record["task"], frames["validation"])
    selection = official_metrics(record["task"], frames["selection"])
    main_metric = record["main_metric"]
    labels = split_labels(record["task"], "validation")
    constant_loss = float(labels.var()) if record["task"] == "stsb" else 0.627
    rng = np.random.default_rng(zlib.crc32(record["config_hash"].encode()))
    record.update(metrics=metrics, main_score=metrics[main_metric], selection_metrics=selection,
                  selection_score=selection[main_metric], predictions_file=file,
                  baseline=record["variant"] in ("full", "head"), constant_train_loss=round(constant_loss, 5),
                  final_train_loss=round(constant_loss * (1.004 if key in NOT_FIT_RUNS else 0.3 + 0.2 * rng.uniform()), 5))


def write_fake_records(folder, study="glue_small", seed=0, with_predictions=False):
    """Write the fake study under ``folder/study/runs/`` and return its records (dicts); with
    ``with_predictions``, also each ok run's predictions sidecar (see the module's docstring)."""
    runs = Path(folder) / study / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    records = []
    for variant, rank, alpha in configurations():
        for task in TASKS:
            for run_seed in SEEDS:
                record = make_record(variant, task, run_seed, rank, alpha, rng=rng,
                                     failed=(variant, task, run_seed, rank, alpha) in FAILED_RUNS,
                                     with_curve=(rank == 8 and alpha == 16.0))
                if with_predictions and record["status"] == "ok":
                    add_predictions(record, runs)
                (runs / f"{record['config_hash']}.json").write_text(json.dumps(record, indent=1))
                records.append(record)
    return records


#: write_fake_tuning: (task, variant) -> the planted selection score of each learning rate, in order. LoRA
#: is good at every rate; HiRA only at one (it needs a lucky rate); the head's grid was extended twice.
TUNING_SCORES = {("mrpc", "lora"): {5e-4: 0.78, 1e-3: 0.79, 2e-3: 0.80},
                 ("mrpc", "hira"): {1e-3: 0.70, 2e-3: 0.72, 4e-3: 0.81},
                 ("mrpc", "head"): {1e-3: 0.68, 2e-3: 0.69, 4e-3: 0.70, 8e-3: 0.71, 1.6e-2: 0.705}}


def write_fake_tuning(folder, study="tuning"):
    """A small tuning folder: one run per (task, variant, learning rate) of TUNING_SCORES at seed 0,
    scored on the selection split (``selection_score``) as planted."""
    runs = Path(folder) / study / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    for (task, variant), scores in TUNING_SCORES.items():
        for lr, selection in scores.items():
            name = hashlib.sha1(f"{task}/{variant}/{lr}".encode()).hexdigest()[:12]
            record = {"config_hash": name, "status": "ok", "timestamp": "2026-12-04T07:00:00Z",
                      "experiment": "tuning", "variant": variant, "task": task, "model": "minilm", "seed": 0,
                      "lr": lr, "baseline": variant == "head", "main_metric": "accuracy",
                      "main_score": selection - 0.01, "selection_score": selection, "trainable_params": 1000,
                      "learning_curve": []}
            (runs / f"{name}.json").write_text(json.dumps(record))
    return runs.parent
