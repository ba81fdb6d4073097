"""Statistics for comparing two variants on the same dev examples: plain numpy (and scipy's t and binomial
distributions), no pandas.

* ``score(metric, labels, predictions, weights)``: the GLUE main metrics (accuracy, F1, Matthews
  correlation, Pearson, Spearman) of one run, on the dev set as it is (``weights=None``) or on many
  weighted samples at once (``weights``: a (B, n) matrix of how often each example counts).
* ``paired_difference`` (also under its old name ``paired_bootstrap``): the paired difference in a
  metric between two variants run with the same seeds on the same examples, with the variance
  components of the seeds × examples design (``VarianceComponents``); its result gives the interval,
  the p-value and the detectable difference for either target of inference (``TARGETS``): "new
  examples" of the task (default) or "this dev set".
* ``example_contributions``: each example's share in a run's metric (exact for accuracy, jackknife
  pseudo-values for the others), the per-(seed, example) differences the components come from.
* ``t_interval``, ``mean_interval_half_width``: the pieces.
* ``constant_score``, ``did_not_fit``, ``did_not_generalise``, ``clopper_pearson``: the two ways a run
  can fail, each its own endpoint.

Every metric is written in terms of weighted sums over examples, so many weighted samples (the
leave-one-out samples of the jackknife) cost one matrix product instead of a Python loop; with
``weights`` all ones the numbers are exactly the ordinary (sklearn / scipy) ones. The statistics are
explained, and checked by simulation, in docs/statistics.md.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import brentq
from scipy.stats import binomtest
from scipy.stats import t as student_t

#: the metrics ``score`` computes; a task's ``main_metric`` maps to one of them (``metric_of``)
METRICS = ("accuracy", "f1", "matthews_correlation", "pearson", "spearmanr")
#: metrics on a continuous score (regression tasks); the others take class indices
REGRESSION_METRICS = ("pearson", "spearmanr")
#: metrics whose constant-prediction value does not depend on the labels: correlation with a constant
#: is 0 (Matthews, as sklearn defines it) or undefined (Pearson, Spearman; counted as 0)
LABEL_FREE_CONSTANT = ("matthews_correlation", "pearson", "spearmanr")
#: a run did not fit its training data when its final training loss is not at least this share below
#: the constant predictor's loss
FIT_LOSS_TOLERANCE = 0.02


def metric_of(main_metric: str) -> str:
    """The metric ``score`` computes for a task's ``main_metric`` (``accuracy_matched`` -> ``accuracy``)."""
    for name in sorted(METRICS, key=len, reverse=True):
        if str(main_metric) == name or str(main_metric).startswith(name + "_"):
            return name
    raise ValueError(f"unknown metric {main_metric!r}; choose one of {list(METRICS)} "
                     f"(optionally with a split suffix such as accuracy_matched)")


# ---------------------------------------------------------------------------------------------- metrics
def score(metric: str, labels, predictions, weights=None):
    """``metric`` of ``predictions`` against ``labels`` (both shape (n,)).

    ``weights=None``: one float, the metric on the examples as they are. ``weights`` of shape (B, n):
    an array of B values, the metric on each weighted sample (weight = how often the example was
    drawn), i.e. on the sample with example i repeated ``weights[b, i]`` times.
    F1 is the binary F1 of class 1 (GLUE's MRPC and QQP); Matthews' correlation is the multiclass one
    (sklearn's ``matthews_corrcoef``, 0 when undefined); Pearson and Spearman are NaN when a side is
    constant; Spearman ranks ties by their average rank, as scipy does.
    """
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose one of {list(METRICS)}")
    labels, predictions = np.asarray(labels), np.asarray(predictions)
    if labels.shape != predictions.shape or labels.ndim != 1:
        raise ValueError(f"labels {labels.shape} and predictions {predictions.shape} must be the same "
                         f"1-d shape")
    single = weights is None
    weights = np.ones((1, len(labels))) if single else np.asarray(weights, dtype=float)
    if weights.ndim != 2 or weights.shape[1] != len(labels):
        raise ValueError(f"weights must have shape (B, {len(labels)}), got {weights.shape}")
    with np.errstate(divide="ignore", invalid="ignore"):
        values = _SCORERS[metric](labels, predictions, weights)
    return float(values[0]) if single else values


def _accuracy(labels, predictions, weights):
    return weights @ (labels == predictions).astype(float) / weights.sum(axis=1)


def _f1(labels, predictions, weights):
    true_positive = weights @ ((predictions == 1) & (labels == 1)).astype(float)
    predicted = weights @ (predictions == 1).astype(float)
    actual = weights @ (labels == 1).astype(float)
    denominator = predicted + actual
    return np.where(denominator > 0, 2 * true_positive / np.where(denominator > 0, denominator, 1), 0.0)


def _matthews(labels, predictions, weights):
    classes = np.union1d(labels, predictions)
    total = weights.sum(axis=1)
    correct = weights @ (labels == predictions).astype(float)
    actual = weights @ (labels[:, None] == classes[None, :]).astype(float)          # (B, classes)
    predicted = weights @ (predictions[:, None] == classes[None, :]).astype(float)
    covariance = correct * total - (actual * predicted).sum(axis=1)
    spread = np.sqrt((total**2 - (predicted**2).sum(axis=1)) * (total**2 - (actual**2).sum(axis=1)))
    return np.where(spread > 0, covariance / np.where(spread > 0, spread, 1), 0.0)


def _pearson(labels, predictions, weights):
    return _weighted_correlation(labels.astype(float), predictions.astype(float), weights)


def _spearman(labels, predictions, weights):
    return _weighted_correlation(_weighted_ranks(labels, weights), _weighted_ranks(predictions, weights),
                                 weights)


def _weighted_correlation(x, y, weights):
    """Pearson correlation of x and y (each (n,) or (B, n)) on each weighted sample; NaN where a side
    is constant among the drawn examples."""
    x, y = np.broadcast_to(x, weights.shape), np.broadcast_to(y, weights.shape)
    total = weights.sum(axis=1, keepdims=True)
    x_centred = x - (weights * x).sum(axis=1, keepdims=True) / total
    y_centred = y - (weights * y).sum(axis=1, keepdims=True) / total
    covariance = (weights * x_centred * y_centred).sum(axis=1)
    variance = (weights * x_centred**2).sum(axis=1) * (weights * y_centred**2).sum(axis=1)
    varies = ~(_constant(x, x_centred, weights) | _constant(y, y_centred, weights))
    return np.where(varies, covariance / np.sqrt(np.where(varies, variance, 1)), np.nan)


def _constant(values, centred, weights):
    """(B,): whether the drawn examples (weight > 0) of each sample all share one value (checked
    exactly on the samples whose variance is within rounding of 0)."""
    spread = (weights * centred**2).sum(axis=1)
    suspect = np.flatnonzero(spread <= 1e-9 * weights.sum(axis=1) * np.max(values**2, axis=-1).clip(1e-300))
    constant = np.zeros(len(weights), dtype=bool)
    if suspect.size:
        drawn = weights[suspect] > 0
        chosen = values[suspect] if values.ndim == 2 else values
        constant[suspect] = (np.where(drawn, chosen, np.inf).min(axis=1)
                             == np.where(drawn, chosen, -np.inf).max(axis=1))
    return constant


def _weighted_ranks(values, weights):
    """(B, n): each example's average rank (1-based) in each weighted sample, ties sharing one rank."""
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])  # first of each distinct value
    group_weight = np.add.reduceat(weights[:, order], starts, axis=1)  # (B, distinct values)
    before = np.cumsum(group_weight, axis=1) - group_weight
    group = np.empty(len(values), dtype=int)
    group[order] = np.cumsum(np.r_[True, ordered[1:] != ordered[:-1]]) - 1
    return (before + (group_weight + 1) / 2)[:, group]


_SCORERS = {"accuracy": _accuracy, "f1": _f1, "matthews_correlation": _matthews, "pearson": _pearson,
            "spearmanr": _spearman}


# ----------------------------------------------------------------------------------- paired difference
#: what a paired comparison's interval is about: "new-examples" (the task: a new draw of seeds and of
#: dev examples would give another difference; the default) or "this-dev-set" (these dev examples,
#: fixed: only a new draw of seeds would change the difference)
TARGETS = ("new-examples", "this-dev-set")
#: how tables name each target
TARGET_NAMES = {"new-examples": "new examples", "this-dev-set": "this dev set"}


def target_of(target: str) -> str:
    """``target`` itself when it is one of ``TARGETS``; else a ValueError naming the choices."""
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; choose one of {list(TARGETS)}")
    return target


def example_contributions(metric: str, labels, predictions, chunk_elements: int = 2_000_000) -> np.ndarray:
    """(n,): each example's share in one run's ``metric``, averaging to the metric itself.

    For accuracy it is exact: 1 where the prediction is right, else 0. For the other metrics (F1,
    Matthews, Pearson, Spearman: not means over examples) it is the jackknife pseudo-value
    n·θ - (n - 1)·θ₋ᵢ (θ₋ᵢ: the metric without example i), a linearisation of the metric, shifted
    so that the n values average to θ. The leave-one-out scores are computed ``chunk_elements``
    weights at a time, as weighted scores (weight 0 for the example left out).
    """
    labels, predictions = np.asarray(labels), np.asarray(predictions)
    n = len(labels)
    if metric == "accuracy":
        return (labels == predictions).astype(float)
    whole = score(metric, labels, predictions)
    left_out = np.empty(n)
    step = max(1, chunk_elements // max(n, 1))
    for start in range(0, n, step):
        rows = np.arange(start, min(start + step, n))
        weights = np.ones((len(rows), n))
        weights[np.arange(len(rows)), rows] = 0.0
        left_out[rows] = score(metric, labels, predictions, weights)
    pseudo = n * whole - (n - 1) * left_out
    return pseudo - pseudo.mean() + whole


@dataclass(frozen=True)
class VarianceComponents:
    """The two-way crossed random-effects decomposition of per-(seed, example) differences d[s, i]:
    d = mean + seed effect + example effect + interaction (seed × example, with the residual).

    Mean squares of the (seeds × examples) table (ANOVA, each component once): ``seed_mean_square``
    = examples · var over seeds of the row means (seeds - 1 degrees of freedom),
    ``example_mean_square`` = seeds · var over examples of the column means (examples - 1),
    ``residual_mean_square`` (the interaction; (seeds - 1)(examples - 1)). ``nested``: each seed
    saw its own dev examples (then columns do not line up and only the seed mean square is used).
    """
    seeds: int
    examples: int
    seed_mean_square: float
    example_mean_square: float
    residual_mean_square: float
    nested: bool = False

    @classmethod
    def of(cls, differences, nested: bool = False) -> "VarianceComponents":
        """The mean squares of a (seeds, examples) table of per-(seed, example) differences."""
        d = np.atleast_2d(np.asarray(differences, dtype=float))
        seeds, examples = d.shape
        row, column, grand = d.mean(axis=1), d.mean(axis=0), d.mean()
        seed_ms = examples * np.sum((row - grand) ** 2) / (seeds - 1) if seeds > 1 else np.nan
        example_ms = seeds * np.sum((column - grand) ** 2) / (examples - 1) if examples > 1 else np.nan
        residual = d - row[:, None] - column[None, :] + grand
        residual_ms = (np.sum(residual ** 2) / ((seeds - 1) * (examples - 1))
                       if seeds > 1 and examples > 1 else np.nan)
        return cls(seeds, examples, float(seed_ms), float(example_ms), float(residual_ms), nested)

    # the components (variances), each estimated once and never below 0
    @property
    def seed(self) -> float:
        """σ²(seed): how much the difference moves from seed to seed on all examples at once."""
        return max(0.0, (self.seed_mean_square - self.residual_mean_square) / self.examples)

    @property
    def example(self) -> float:
        """σ²(example): how much the difference varies from example to example (averaged over seeds)."""
        return max(0.0, (self.example_mean_square - self.residual_mean_square) / self.seeds)

    @property
    def interaction(self) -> float:
        """σ²(seed × example): what is left, each (seed, example) cell's own part."""
        return self.residual_mean_square

    def at(self, seeds: int, examples: int) -> "VarianceComponents":
        """The mean squares a study with ``seeds`` seeds and ``examples`` examples would expect, from
        these components (for planning: the ``parts`` and ``detectable`` of that design)."""
        return VarianceComponents(seeds, examples, examples * self.seed + self.interaction,
                                  seeds * self.example + self.interaction, self.interaction, self.nested)

    def parts(self, target: str = "new-examples") -> list[tuple[float, float]]:
        """The variance of the mean difference as (variance, degrees of freedom) parts, each source of
        variation once; their variances add up to the variance for ``target``.

        The seed part is var(per-seed differences) / seeds = MS seed / (seeds · examples), with seeds - 1
        degrees of freedom; its expectation is σ²(seed) / seeds + σ²(interaction) / (seeds · examples),
        so it carries the interaction as well. "this-dev-set" (the examples fixed, only seeds vary) is
        that part alone: the plain t interval of the per-seed differences. "new-examples" adds the
        example part σ²(example) / examples = (MS example - MS residual) / (seeds · examples), 0 when
        negative (then left out), with examples - 1 degrees of freedom; the interaction stays in the seed
        part only.

        One seed: "new-examples" is one part, MS example / examples (examples - 1 degrees of freedom;
        seed-to-seed variation cannot be seen); "this-dev-set" has no estimate (NaN). Nested seeds
        (each its own examples): both targets are the seed part, which then carries every source."""
        target_of(target)
        cells = self.seeds * self.examples
        if self.seeds == 1:
            if target == "this-dev-set":
                return [(np.nan, np.nan)]
            return [(self.example_mean_square / self.examples, self.examples - 1.0)]
        parts = [(self.seed_mean_square / cells, self.seeds - 1.0)]
        if target == "new-examples" and not self.nested and self.example > 0:
            parts.append((self.example / self.examples, self.examples - 1.0))
        return parts

    def variance(self, target: str = "new-examples") -> float:
        """Variance of the mean difference over seeds and examples, for ``target`` (see ``parts``)."""
        return float(sum(variance for variance, _ in self.parts(target)))

    def half_width(self, level: float = 0.95, target: str = "new-examples") -> float:
        """Half the width of the central ``level`` interval (``half_width_of`` the ``parts``)."""
        return half_width_of(self.parts(target), level)

    def detectable(self, level: float = 0.95, power: float = 0.8, target: str = "new-examples") -> float:
        """The smallest true difference the ``level`` interval would exclude 0 for with probability
        ``power`` (``detectable_of`` the ``parts``)."""
        return detectable_of(self.parts(target), level, power)

    def shares(self) -> dict[str, float]:
        """The share of each component in the "new-examples" variance of this design:
        {"seed": σ²(seed) / seeds, "example": σ²(example) / examples, "interaction": σ²(seed × example) /
        (seeds · examples)}, each divided by their sum (NaN when the sum is 0 or unknown)."""
        parts = {"seed": self.seed / self.seeds, "example": self.example / self.examples,
                 "interaction": self.interaction / (self.seeds * self.examples)}
        total = sum(parts.values())
        return {name: part / total if total > 0 else np.nan for name, part in parts.items()}

    def scaled(self, factor: float) -> "VarianceComponents":
        """The same components for differences multiplied by ``factor`` (mean squares by factor²)."""
        square = factor ** 2
        return VarianceComponents(self.seeds, self.examples, square * self.seed_mean_square,
                                  square * self.example_mean_square, square * self.residual_mean_square,
                                  self.nested)


def half_width_of(parts, level: float = 0.95) -> float:
    """Half the width of the central ``level`` interval for a sum of independent (variance, degrees of
    freedom) parts: √(Σ t² · variance), each part with the t quantile at (1 + level) / 2 of its own
    degrees of freedom (Banerjee's interval: never narrower than what each part alone asks for; see
    docs/statistics.md for why not one pooled Satterthwaite t quantile)."""
    quantile = 0.5 + level / 2
    return float(np.sqrt(sum(student_t.ppf(quantile, degrees) ** 2 * variance for variance, degrees in parts)))


def detectable_of(parts, level: float = 0.95, power: float = 0.8) -> float:
    """The smallest true difference the ``level`` interval of ``parts`` (see ``half_width_of``) would
    exclude 0 for with probability ``power``: √(Σ (t at (1 + level) / 2 + t at ``power``)² · variance);
    for one part, the minimum detectable effect of a t test."""
    return float(np.sqrt(sum((student_t.ppf(0.5 + level / 2, degrees) + student_t.ppf(power, degrees)) ** 2
                             * variance for variance, degrees in parts)))


@dataclass(frozen=True)
class PairedDifference:
    """One paired comparison (see ``paired_difference``): ``difference``, the mean over seeds of
    (variant - reference) on the dev set as it is; ``per_seed``, that difference for each seed;
    ``components``, the variance components of the per-(seed, example) differences."""
    difference: float
    per_seed: np.ndarray
    components: VarianceComponents

    @property
    def n_seeds(self) -> int:
        return len(self.per_seed)

    @property
    def n_examples(self) -> int:
        return self.components.examples

    def standard_error(self, target: str = "new-examples") -> float:
        """The standard error of ``difference`` for ``target``: √ of the components' variance."""
        return float(np.sqrt(self.components.variance(target)))

    def interval(self, level: float = 0.95, target: str = "new-examples") -> tuple[float, float]:
        """The central ``level`` interval for the difference, for ``target``: difference ±
        ``VarianceComponents.half_width``."""
        half = self.components.half_width(level, target)
        return self.difference - half, self.difference + half

    def p_value(self, target: str = "new-examples") -> float:
        """Two-sided p-value for "no difference": the smallest p at which the (1 - p) interval excludes
        0 (for one part, the t test's p-value), so p < alpha exactly when the (1 - alpha) interval lies
        beside 0."""
        if not np.isfinite(self.components.variance(target)) or not np.isfinite(self.difference):
            return np.nan
        if self.components.variance(target) == 0:
            return 1.0 if self.difference == 0 else 0.0
        parts = self.components.parts(target)
        if len(parts) == 1:
            return float(2 * student_t.sf(abs(self.difference) / np.sqrt(parts[0][0]), parts[0][1]))

        def excess(p):
            return self.components.half_width(1 - p, target) - abs(self.difference)
        if excess(1e-15) <= 0:
            return 1e-15
        return float(brentq(excess, 1e-15, 1.0, xtol=1e-18, rtol=1e-10))

    def detectable(self, level: float = 0.95, power: float = 0.8, target: str = "new-examples") -> float:
        """The smallest true difference the ``level`` interval would exclude 0 for with probability
        ``power`` (``VarianceComponents.detectable``)."""
        return self.components.detectable(level, power, target)

    def scaled(self, factor: float) -> "PairedDifference":
        """The same comparison in other units (e.g. ×100 points)."""
        return PairedDifference(factor * self.difference, factor * self.per_seed, self.components.scaled(factor))


def paired_difference(metric: str, labels, variant, reference, chunk_elements: int = 2_000_000) -> PairedDifference:
    """The paired difference ``metric(variant) - metric(reference)``, averaged over seeds, with the
    variance components of its per-(seed, example) differences.

    ``labels``: (n,) the dev labels; ``variant``, ``reference``: (seeds, n) predictions, row s of both
    being the runs with the same seed. The dev set is shared by every run, so seeds and examples are
    crossed factors: d[s, i] = contribution of example i to the variant's metric at seed s minus the
    reference's (``example_contributions``; for accuracy, right minus right), and the interval
    combines the seed, example and interaction components of d once each (``VarianceComponents``).
    Labels of shape (seeds, n) mean each seed saw its own dev examples (nested): then the per-seed
    differences carry every source of variation and only their spread is used.
    """
    variant, reference = np.atleast_2d(variant), np.atleast_2d(reference)
    labels = np.asarray(labels)
    nested = labels.ndim == 2
    labels = labels if nested else np.broadcast_to(labels, variant.shape)
    if variant.shape != reference.shape or labels.shape != variant.shape:
        raise ValueError(f"variant {variant.shape} and reference {reference.shape} predictions must both "
                         f"be (seeds, n) for labels of shape (n,) or (seeds, n), got {labels.shape}")
    per_seed = np.array([score(metric, labels[s], variant[s]) - score(metric, labels[s], reference[s])
                         for s in range(len(variant))])
    differences = np.stack([example_contributions(metric, labels[s], variant[s], chunk_elements)
                            - example_contributions(metric, labels[s], reference[s], chunk_elements)
                            for s in range(len(variant))])
    return PairedDifference(float(per_seed.mean()), per_seed, VarianceComponents.of(differences, nested))


def difference_to_constant(metric: str, labels, variant, chunk_elements: int = 2_000_000) -> PairedDifference:
    """``paired_difference`` against the best constant prediction (``constant_score``: the majority class
    for accuracy, the better class for F1; a correlation counts as 0): "did it learn anything?" with
    its interval. The constant has no seed to vary, so it pairs with every seed; its per-example
    contributions are those of its predictions (0 for a correlation). Shapes as for ``paired_difference``."""
    variant, labels = np.atleast_2d(variant), np.asarray(labels)
    nested = labels.ndim == 2
    labels = labels if nested else np.broadcast_to(labels, variant.shape)

    def constant_contributions(labels_):
        if metric in LABEL_FREE_CONSTANT:
            return np.zeros(len(labels_))
        return example_contributions(metric, labels_, best_constant(metric, labels_), chunk_elements)

    per_seed = np.array([score(metric, labels[s], variant[s]) - constant_score(metric, labels[s])
                         for s in range(len(variant))])
    differences = np.stack([example_contributions(metric, labels[s], variant[s], chunk_elements)
                            - constant_contributions(labels[s]) for s in range(len(variant))])
    return PairedDifference(float(per_seed.mean()), per_seed, VarianceComponents.of(differences, nested))


def paired_bootstrap(metric: str, labels, variant, reference, n_boot: int = 4000, seed: int = 0,
                     chunk_elements: int = 2_000_000) -> PairedDifference:
    """``paired_difference`` under its old name, for callers written before it. The interval no longer
    comes from resampling: ``n_boot`` and ``seed`` are accepted and not used."""
    return paired_difference(metric, labels, variant, reference, chunk_elements)


def t_interval(estimate: float, standard_error: float, degrees: float, level: float = 0.95) -> tuple[float, float]:
    """The central ``level`` t interval: estimate ± the t quantile at (1 + level) / 2 with ``degrees``
    degrees of freedom × ``standard_error``."""
    half = float(student_t.ppf(0.5 + level / 2, degrees)) * standard_error
    return estimate - half, estimate + half


def mean_interval_half_width(values, level: float = 0.95) -> float:
    """Half the width of the t interval for the mean of ``values`` (t quantile, n - 1 degrees of
    freedom, x sample std / sqrt(n)); NaN with fewer than two values."""
    values = np.asarray(values, float)
    values = values[np.isfinite(values)]
    if len(values) < 2:
        return float("nan")
    error = float(np.std(values, ddof=1)) / np.sqrt(len(values))
    return t_interval(0.0, error, len(values) - 1, level)[1]


# ------------------------------------------------------------------------- did not fit, did not generalise
def constant_score(metric: str, labels=None) -> float:
    """The best score a constant prediction reaches on these labels: the majority class's accuracy,
    the F1 of always predicting class 1 (or 0, whichever is higher), 0 for the correlations (Matthews
    is 0 for a constant, Pearson and Spearman are undefined and counted as 0). ``labels`` may be None
    for the correlations."""
    if metric in LABEL_FREE_CONSTANT:
        return 0.0
    if labels is None or len(labels) == 0:
        raise ValueError(f"the constant predictor's {metric} depends on the labels: pass them")
    labels = np.asarray(labels)
    return score(metric, labels, best_constant(metric, labels))


def best_constant(metric: str, labels) -> np.ndarray:
    """The constant prediction (one label value for every example) that scores best on ``labels``: the
    majority class for accuracy, the better class for F1."""
    labels = np.asarray(labels)
    value = max(np.unique(labels), key=lambda candidate: score(metric, labels, np.full_like(labels, candidate)))
    return np.full_like(labels, value)


def did_not_fit(final_train_loss=np.nan, constant_train_loss=np.nan,
                tolerance: float = FIT_LOSS_TOLERANCE) -> np.ndarray:
    """Whether each run did not fit its training data: 1.0 (it did not), 0.0 (it did) or NaN (a loss
    is missing). A run did not fit when its final training loss is not at least ``tolerance`` (2 %)
    below the constant predictor's loss: final ≥ (1 - tolerance) · constant. Arguments broadcast."""
    final, constant = np.asarray(final_train_loss, float), np.asarray(constant_train_loss, float)
    known = ~np.isnan(final) & ~np.isnan(constant)
    return np.where(known, (final >= (1 - tolerance) * constant).astype(float), np.nan)


def did_not_generalise(score_=np.nan, constant_score_=np.nan) -> np.ndarray:
    """Whether each run did not generalise: 1.0 (its score on the evaluated split is no better than the
    best constant prediction's: score ≤ constant + 1e-9, a NaN score counting as the constant's, e.g.
    the Pearson correlation of a constant prediction), 0.0 (better) or NaN (the constant's score is
    unknown). Arguments broadcast."""
    value, floor = np.asarray(score_, float), np.asarray(constant_score_, float)
    known = ~np.isnan(floor)
    return np.where(known, (np.isnan(value) | (value <= floor + 1e-9)).astype(float), np.nan)


def clopper_pearson(successes: int, trials: int, level: float = 0.95) -> tuple[float, float]:
    """The exact (Clopper–Pearson) ``level`` interval for a binomial proportion (NaNs for 0 trials)."""
    if trials == 0:
        return np.nan, np.nan
    if not 0 <= successes <= trials:
        raise ValueError(f"successes must lie in 0..{trials}, got {successes}")
    interval = binomtest(int(successes), int(trials)).proportion_ci(confidence_level=level, method="exact")
    return float(interval.low), float(interval.high)
