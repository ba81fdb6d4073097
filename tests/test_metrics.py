"""The GLUE metrics, written once (analysis.metrics, on analysis.stats.score) and used by training
(Task.scores) and the analysis alike: they agree with scikit-learn and scipy, reproduce the metrics of
committed records from their own predictions, and every task YAML's headline metric is computed."""
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from analysis.metrics import GLUE_METRICS, glue_scores
from conftest import REPO
from experiments.config import Task

TASK_DIR = REPO / "conf" / "task"


def task(name):
    return Task.from_config(OmegaConf.load(TASK_DIR / f"{name}.yaml"), f"conf/task/{name}.yaml")


@pytest.mark.parametrize("seed", range(5))
def test_formulas_match_sklearn_and_scipy(seed):
    rng = np.random.default_rng(seed)
    gold = rng.integers(0, 2, 200)
    predicted = np.where(rng.random(200) < 0.7, gold, 1 - gold)
    scores = glue_scores("mrpc", gold, predicted)
    assert scores["accuracy"] == pytest.approx(accuracy_score(gold, predicted), abs=1e-12)
    assert scores["f1"] == pytest.approx(f1_score(gold, predicted), abs=1e-12)
    assert glue_scores("cola", gold, predicted)["matthews_correlation"] == pytest.approx(
        matthews_corrcoef(gold, predicted), abs=1e-12)
    three_gold, three_predicted = rng.integers(0, 3, 200), rng.integers(0, 3, 200)
    assert glue_scores("cola", three_gold, three_predicted)["matthews_correlation"] == pytest.approx(
        matthews_corrcoef(three_gold, three_predicted), abs=1e-12)
    x = rng.normal(size=300)
    y = x + rng.normal(size=300)
    assert glue_scores("stsb", y, x)["pearson"] == pytest.approx(pearsonr(x, y)[0], abs=1e-12)
    rounded_x, rounded_y = np.round(x), np.round(y * 2) / 2     # many ties
    assert glue_scores("stsb", rounded_y, rounded_x)["spearmanr"] == pytest.approx(
        spearmanr(rounded_x, rounded_y)[0], abs=1e-12)


def test_degenerate_inputs_give_zero_like_sklearn():
    gold = np.array([0, 1, 1, 0, 1])
    constant = np.ones(5, dtype=int)
    assert glue_scores("cola", gold, constant)["matthews_correlation"] == matthews_corrcoef(gold, constant) == 0.0
    assert glue_scores("mrpc", np.zeros(5, dtype=int), np.zeros(5, dtype=int))["f1"] == 0.0
    assert glue_scores("stsb", np.arange(5.0), np.ones(5)) == {"pearson": 0.0, "spearmanr": 0.0}


@pytest.mark.parametrize("name", ["cola", "sst2", "mrpc", "qqp", "qnli", "rte", "wnli", "demo"])
def test_task_scores_from_logits_match_sklearn(name):
    rng = np.random.default_rng(1)
    spec = task(name)
    logits = rng.normal(size=(120, spec.num_labels))
    gold = rng.integers(0, spec.num_labels, 120)
    predicted = logits.argmax(axis=1)
    scores = spec.scores(logits, gold)
    assert list(scores) == list(GLUE_METRICS[spec.metric])
    if name == "cola":
        assert scores["matthews_correlation"] == pytest.approx(matthews_corrcoef(gold, predicted))
    else:
        assert scores["accuracy"] == pytest.approx(accuracy_score(gold, predicted))
    if name in ("mrpc", "qqp"):
        assert scores["f1"] == pytest.approx(f1_score(gold, predicted))
    assert spec.scores(predicted, gold) == scores      # class indices work as well as logits
    assert spec.main_score(scores) == scores[spec.main_metric]


def test_stsb_pearson_and_spearman_from_scores():
    rng = np.random.default_rng(2)
    gold = rng.uniform(0, 5, 150)
    outputs = rng.normal(size=(150, 1)) + gold[:, None]          # regression head output (N, 1)
    result = task("stsb").scores(outputs, gold)
    assert result["pearson"] == pytest.approx(pearsonr(outputs[:, 0], gold)[0])
    assert result["spearmanr"] == pytest.approx(spearmanr(outputs[:, 0], gold)[0])
    assert task("stsb").main_score(result) == result["pearson"]


def test_mnli_splits_get_their_suffix_and_matched_is_the_headline():
    rng = np.random.default_rng(3)
    mnli, scores = task("mnli"), {}
    for split in ("validation", "validation_mismatched"):
        logits, gold = rng.normal(size=(90, 3)), rng.integers(0, 3, 90)
        scores.update(mnli.scores(logits, gold, split=split))
    assert set(scores) == {"accuracy_matched", "accuracy_mismatched"}
    assert scores["accuracy_mismatched"] == pytest.approx(accuracy_score(gold, logits.argmax(1)))
    assert mnli.main_score(scores) == scores["accuracy_matched"]


@pytest.mark.parametrize("path", sorted(TASK_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_task_headline_metric_is_computed(path):
    spec = task(path.stem)
    rng = np.random.default_rng(4)
    n = 40
    shape = (n,) if spec.is_regression else (n, spec.num_labels)
    gold = rng.uniform(0, 5, n) if spec.is_regression else rng.integers(0, spec.num_labels, n)
    scores = {}
    for split in spec.evaluation_splits:
        scores.update(spec.scores(rng.normal(size=shape), gold, split=split))
    assert set(scores) == set(spec.metric_names) and math.isfinite(spec.main_score(scores))


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match=r"3 labels but the logits have shape \(4, 2\)"):
        task("mnli").scores(np.zeros((4, 2)), np.zeros(4, dtype=int), split="validation")
    with pytest.raises(ValueError, match="4 predictions but labels of shape"):
        task("sst2").scores(np.zeros((4, 2)), np.zeros(5, dtype=int))
    with pytest.raises(ValueError, match="main metric 'pearson'.*accuracy"):
        task("stsb").main_score({"accuracy": 1.0})
    with pytest.raises(ValueError, match="unknown metric 'glue'; valid: cola"):
        glue_scores("glue", [0], [0])


def committed_runs_with_predictions(limit_per_task: int = 3):
    """A few committed second-edition records per task with their prediction files (scored before the
    metrics were written once)."""
    chosen = {}
    for path in sorted((REPO / "results" / "second_edition" / "final" / "runs").glob("*.json")):
        record = json.loads(path.read_text())
        if record.get("predictions_file") and len(chosen.setdefault(record["task"], [])) < limit_per_task:
            chosen[record["task"]].append((path, record))
    return [run for runs in chosen.values() for run in runs]


@pytest.mark.parametrize("path, record", committed_runs_with_predictions(), ids=lambda v: getattr(v, "stem", ""))
def test_records_metrics_are_reproduced_from_their_predictions(path, record):
    predictions = pd.read_parquet(path.parent / record["predictions_file"])
    dev = predictions[predictions["split"] == "validation"].sort_values("example")
    spec = task(record["task"])
    rescored = spec.scores(dev["prediction"].to_numpy(), dev["label"].to_numpy())
    for name, value in record["metrics"].items():
        assert rescored[name] == pytest.approx(value, abs=1e-12), name
