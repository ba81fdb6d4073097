"""Write a small, synthetic but realistic set of result records for the analysis tests.

The records follow the runner's contract (one JSON file per run at ``<folder>/<study>/runs/<hash>.json``):
seven variants on three GLUE tasks with three seeds each, a rank sweep and an alpha sweep for LoRA and
rsLoRA, learning curves on some runs and a few failed runs. Scores are deterministic (seeded), so tests
can recompute any summary by hand from the returned records.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

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


def write_fake_records(folder, study="glue_small", seed=0):
    """Write the fake study under ``folder/study/runs/`` and return its records (dicts)."""
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
                (runs / f"{record['config_hash']}.json").write_text(json.dumps(record, indent=1))
                records.append(record)
    return records
