"""GLUE metrics as an `evaluate` metric module, shipped with the project so it loads offline:

    metric = evaluate.load("experiments/glue_metric", "mrpc")
    metric.compute(predictions=[0, 1, 1], references=[0, 1, 0])   # {'accuracy': ..., 'f1': ...}

Configs: cola (Matthews correlation), sst2, qnli, rte, wnli, mnli, mnli_matched, mnli_mismatched
(accuracy), mrpc and qqp (accuracy and F1 of the positive class), stsb (Pearson and Spearman).
Predictions are class indices (scores for stsb). Written with numpy from the textbook formulas; the
project's tests check them against scikit-learn and scipy. Where a statistic is undefined (a constant
input to a correlation), it is 0.0, as scikit-learn does for the Matthews correlation.
"""
import datasets
import evaluate
import numpy as np

ACCURACY = ("sst2", "mnli", "mnli_matched", "mnli_mismatched", "qnli", "rte", "wnli")
F1 = ("mrpc", "qqp")
CONFIGS = ("cola", *ACCURACY, *F1, "stsb")

_DESCRIPTION = "Official GLUE metrics: Matthews correlation, accuracy, F1, Pearson and Spearman correlation."
_CITATION = """@inproceedings{wang2019glue,
  title={{GLUE}: A Multi-Task Benchmark and Analysis Platform for Natural Language Understanding},
  author={Wang, Alex and Singh, Amanpreet and Michael, Julian and Hill, Felix and Levy, Omer and Bowman, Samuel R.},
  booktitle={International Conference on Learning Representations}, year={2019}}"""
_INPUTS = """predictions: class indices (float scores for stsb); references: the gold labels, same length."""


def accuracy(predictions, references) -> float:
    return float(np.mean(predictions == references))


def f1_positive(predictions, references) -> float:
    """F1 of class 1: 2 TP / (2 TP + FP + FN); 0.0 when there is no positive at all."""
    true_positive = np.sum((predictions == 1) & (references == 1))
    wrong = np.sum(predictions != references)
    denominator = 2 * true_positive + wrong
    return float(2 * true_positive / denominator) if denominator else 0.0


def matthews_correlation(predictions, references) -> float:
    """Matthews correlation from the confusion matrix (the multi-class form; binary is a special case)."""
    classes, encoded = np.unique(np.concatenate([references, predictions]), return_inverse=True)
    gold, predicted = encoded[:len(references)], encoded[len(references):]
    confusion = np.zeros((len(classes), len(classes)))
    np.add.at(confusion, (gold, predicted), 1)
    total, correct = confusion.sum(), np.trace(confusion)
    gold_counts, predicted_counts = confusion.sum(axis=1), confusion.sum(axis=0)
    numerator = correct * total - gold_counts @ predicted_counts
    denominator = np.sqrt((total ** 2 - predicted_counts @ predicted_counts) * (total ** 2 - gold_counts @ gold_counts))
    return float(numerator / denominator) if denominator else 0.0


def pearson(x, y) -> float:
    x, y = x - x.mean(), y - y.mean()
    denominator = np.sqrt((x @ x) * (y @ y))
    return float(np.clip((x @ y) / denominator, -1.0, 1.0)) if denominator else 0.0


def ranks(values) -> np.ndarray:
    """1-based ranks, ties sharing their average rank."""
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    ends = np.r_[starts[1:], len(values)]
    average = (starts + ends + 1) / 2.0  # mean of the 1-based positions start+1 .. end
    result = np.empty(len(values))
    result[order] = np.repeat(average, ends - starts)
    return result


def spearman(x, y) -> float:
    return pearson(ranks(x), ranks(y))


class GlueMetric(evaluate.Metric):
    def _info(self):
        if self.config_name not in CONFIGS:
            raise KeyError(f"unknown GLUE metric config {self.config_name!r}; valid: {', '.join(CONFIGS)}")
        kind = "float64" if self.config_name == "stsb" else "int64"
        return evaluate.MetricInfo(
            description=_DESCRIPTION, citation=_CITATION, inputs_description=_INPUTS,
            features=datasets.Features({"predictions": datasets.Value(kind), "references": datasets.Value(kind)}))

    def _compute(self, predictions, references):
        predictions, references = np.asarray(predictions), np.asarray(references)
        if self.config_name == "cola":
            return {"matthews_correlation": matthews_correlation(predictions, references)}
        if self.config_name == "stsb":
            predictions, references = predictions.astype(float), references.astype(float)
            return {"pearson": pearson(predictions, references), "spearmanr": spearman(predictions, references)}
        if self.config_name in F1:
            return {"accuracy": accuracy(predictions, references), "f1": f1_positive(predictions, references)}
        return {"accuracy": accuracy(predictions, references)}
