"""The GLUE metrics (experiments/glue_metric, through experiments.metrics) agree with scikit-learn and
scipy, and every task YAML's headline metric is among the metrics computed for it."""
import math
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from experiments import metrics
from experiments.glue_metric import glue_metric

TASK_DIR = Path(__file__).resolve().parents[1] / "conf" / "task"


def task(name):
    return OmegaConf.load(TASK_DIR / f"{name}.yaml")


@pytest.mark.parametrize("seed", range(5))
def test_formulas_match_sklearn_and_scipy(seed):
    rng = np.random.default_rng(seed)
    gold = rng.integers(0, 2, 200)
    predicted = np.where(rng.random(200) < 0.7, gold, 1 - gold)
    assert glue_metric.accuracy(predicted, gold) == pytest.approx(accuracy_score(gold, predicted))
    assert glue_metric.f1_positive(predicted, gold) == pytest.approx(f1_score(gold, predicted))
    assert glue_metric.matthews_correlation(predicted, gold) == pytest.approx(matthews_corrcoef(gold, predicted))
    three_gold, three_predicted = rng.integers(0, 3, 200), rng.integers(0, 3, 200)
    assert glue_metric.matthews_correlation(three_predicted, three_gold) == pytest.approx(
        matthews_corrcoef(three_gold, three_predicted))
    x = rng.normal(size=300)
    y = x + rng.normal(size=300)
    assert glue_metric.pearson(x, y) == pytest.approx(pearsonr(x, y)[0])
    rounded_x, rounded_y = np.round(x), np.round(y * 2) / 2     # many ties
    assert glue_metric.spearman(rounded_x, rounded_y) == pytest.approx(spearmanr(rounded_x, rounded_y)[0])


def test_degenerate_inputs_give_zero_like_sklearn():
    gold = np.array([0, 1, 1, 0, 1])
    constant = np.ones(5, dtype=int)
    assert glue_metric.matthews_correlation(constant, gold) == matthews_corrcoef(gold, constant) == 0.0
    assert glue_metric.f1_positive(np.zeros(5, dtype=int), np.zeros(5, dtype=int)) == 0.0
    assert glue_metric.pearson(np.ones(5), np.arange(5.0)) == 0.0


@pytest.mark.parametrize("name", ["cola", "sst2", "mrpc", "qqp", "qnli", "rte", "wnli", "demo"])
def test_compute_from_logits_matches_sklearn(name):
    rng = np.random.default_rng(1)
    spec = task(name)
    logits = rng.normal(size=(120, spec.num_labels))
    gold = rng.integers(0, spec.num_labels, 120)
    predicted = logits.argmax(axis=1)
    scores = metrics.compute(spec, logits, gold)
    if name == "cola":
        assert scores == {"matthews_correlation": pytest.approx(matthews_corrcoef(gold, predicted))}
    else:
        assert scores["accuracy"] == pytest.approx(accuracy_score(gold, predicted))
    if name in ("mrpc", "qqp"):
        assert scores["f1"] == pytest.approx(f1_score(gold, predicted))
    assert metrics.compute(spec, predicted, gold) == scores      # class indices work as well as logits
    assert metrics.main_score(spec, scores) == scores[spec.main_metric]


def test_stsb_pearson_and_spearman_from_scores():
    rng = np.random.default_rng(2)
    gold = rng.uniform(0, 5, 150)
    scores = rng.normal(size=(150, 1)) + gold[:, None]          # regression head output (N, 1)
    result = metrics.compute(task("stsb"), scores, gold)
    assert result["pearson"] == pytest.approx(pearsonr(scores[:, 0], gold)[0])
    assert result["spearmanr"] == pytest.approx(spearmanr(scores[:, 0], gold)[0])
    assert metrics.main_score(task("stsb"), result) == result["pearson"]


def test_mnli_splits_get_their_suffix_and_matched_is_the_headline():
    rng = np.random.default_rng(3)
    outputs = {split: (rng.normal(size=(90, 3)), rng.integers(0, 3, 90))
               for split in ("validation", "validation_mismatched")}
    scores = metrics.compute_splits(task("mnli"), outputs)
    assert set(scores) == {"accuracy_matched", "accuracy_mismatched"}
    logits, gold = outputs["validation_mismatched"]
    assert scores["accuracy_mismatched"] == pytest.approx(accuracy_score(gold, logits.argmax(1)))
    assert metrics.main_score(task("mnli"), scores) == scores["accuracy_matched"]


@pytest.mark.parametrize("path", sorted(TASK_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_task_headline_metric_is_computed(path):
    spec = OmegaConf.load(path)
    rng = np.random.default_rng(4)
    n = 40
    shape = (n,) if spec.num_labels == 1 else (n, spec.num_labels)
    gold = rng.uniform(0, 5, n) if spec.num_labels == 1 else rng.integers(0, spec.num_labels, n)
    outputs = {split: (rng.normal(size=shape), gold) for split in spec.splits if split != "train"}
    scores = metrics.compute_splits(spec, outputs)
    assert math.isfinite(metrics.main_score(spec, scores))


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match=r"3 labels but the logits have shape \(4, 2\)"):
        metrics.compute(task("mnli"), np.zeros((4, 2)), np.zeros(4, dtype=int), split="validation")
    with pytest.raises(ValueError, match="4 predictions but references of shape"):
        metrics.compute(task("sst2"), np.zeros((4, 2)), np.zeros(5, dtype=int))
    with pytest.raises(ValueError, match="main metric 'pearson'.*accuracy"):
        metrics.main_score(task("stsb"), {"accuracy": 1.0})
    with pytest.raises(ValueError, match="unknown metric 'glue'; valid: cola"):
        metrics.load_metric("glue")
