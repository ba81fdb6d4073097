"""Statistics for comparing two variants on the same dev examples: plain numpy (and scipy's beta
distribution), no pandas.

* ``score(metric, labels, predictions, weights)``: the GLUE main metrics (accuracy, F1, Matthews
  correlation, Pearson, Spearman) of one run, on the dev set as it is (``weights=None``) or on many
  bootstrap resamples at once (``weights``: a (B, n) matrix of how often each example is drawn).
* ``paired_bootstrap``: the paired hierarchical bootstrap of a difference in a metric between two
  variants run with the same seeds on the same examples; its result gives the interval, the p-value
  and the TOST equivalence verdict, by the "t" method (default) or the plain "percentile" one.
* ``bootstrap_p_value``, ``percentile_interval``, ``holm``: the pieces.
* ``constant_score``, ``collapsed``, ``clopper_pearson``: collapse as its own endpoint.

Every metric is written in terms of weighted sums over examples, so a bootstrap replicate costs one
matrix product instead of a Python loop; with ``weights`` all ones the numbers are exactly the
ordinary (sklearn / scipy) ones.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import beta
from scipy.stats import t as student_t

#: the metrics ``score`` computes; a task's ``main_metric`` maps to one of them (``metric_of``)
METRICS = ("accuracy", "f1", "matthews_correlation", "pearson", "spearmanr")
#: metrics on a continuous score (regression tasks); the others take class indices
REGRESSION_METRICS = ("pearson", "spearmanr")
#: metrics whose constant-prediction value does not depend on the labels: correlation with a constant
#: is 0 (Matthews, as sklearn defines it) or undefined (Pearson, Spearman; counted as 0)
LABEL_FREE_CONSTANT = ("matthews_correlation", "pearson", "spearmanr")
#: a run is collapsed when its final training loss is not at least this share below the constant
#: predictor's loss
COLLAPSE_LOSS_TOLERANCE = 0.02


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


# -------------------------------------------------------------------------------------------- bootstrap
def resample_counts(rng: np.random.Generator, n: int, replicates: int) -> np.ndarray:
    """(replicates, n) integer counts: how often each of n items is drawn in n draws with replacement."""
    drawn = rng.integers(0, n, size=(replicates, n)) + n * np.arange(replicates)[:, None]
    return np.bincount(drawn.ravel(), minlength=replicates * n).reshape(replicates, n)


INTERVAL_METHODS = ("t", "percentile")


@dataclass(frozen=True)
class PairedBootstrap:
    """The paired hierarchical bootstrap of one comparison (see ``paired_bootstrap``).

    ``difference``: mean over seeds of (variant - reference) on the dev set as it is;
    ``per_seed``: that difference for each seed; ``replicates``: the statistic on each hierarchical
    resample (seeds and examples drawn); ``example_replicates``: on each example resample with the
    seeds kept as they are.
    """
    difference: float
    per_seed: np.ndarray
    replicates: np.ndarray
    example_replicates: np.ndarray

    @property
    def n_seeds(self) -> int:
        return len(self.per_seed)

    def t_parts(self) -> tuple[float, float]:
        """(standard error, degrees of freedom) of the "t" method: seed part var(per_seed) / seeds
        (ddof 1; 0 with one seed), example part the variance of ``example_replicates``, added, with
        Welch–Satterthwaite's degrees of freedom (seeds - 1) · (1 + example part / seed part)²."""
        seed_part = float(np.var(self.per_seed, ddof=1)) / self.n_seeds if self.n_seeds > 1 else 0.0
        example_part = float(np.var(self.example_replicates, ddof=1)) if len(self.example_replicates) > 1 else 0.0
        degrees = np.inf if seed_part == 0 else (self.n_seeds - 1) * (1 + example_part / seed_part) ** 2
        return float(np.sqrt(seed_part + example_part)), float(degrees)

    def interval(self, level: float = 0.95, method: str = "t") -> tuple[float, float]:
        """The central ``level`` interval for the difference: "t" (default) is the difference ±
        t quantile x standard error of ``t_parts``; "percentile" the percentile interval of the
        hierarchical ``replicates``."""
        if _method(method) == "percentile":
            return percentile_interval(self.replicates, level)
        return t_interval(self.difference, *self.t_parts(), level)

    def p_value(self, method: str = "t") -> float:
        """Two-sided p-value for "no difference": "t": 2 · P(T_df > |difference| / standard error);
        "percentile": ``bootstrap_p_value(replicates)``."""
        if _method(method) == "percentile":
            return bootstrap_p_value(self.replicates)
        error, degrees = self.t_parts()
        if error == 0:
            return 1.0 if self.difference == 0 else 0.0
        return float(2 * student_t.sf(abs(self.difference) / error, degrees))

    def detectable(self, level: float = 0.95, power: float = 0.8, method: str = "t") -> float:
        """The smallest true difference this comparison would call non-zero (two-sided, at ``level``)
        with probability ``power``: (quantile at (1 + level) / 2 + quantile at ``power``) × standard
        error, the minimum detectable effect of a t-test. "t": the standard error and degrees of freedom
        of ``t_parts``; "percentile": the standard deviation of the hierarchical ``replicates`` and normal
        quantiles. Unadjusted for multiple comparisons (Holm asks for more)."""
        if _method(method) == "percentile":
            error, degrees = float(np.std(self.replicates, ddof=1)), np.inf
        else:
            error, degrees = self.t_parts()
        return float((student_t.ppf(0.5 + level / 2, degrees) + student_t.ppf(power, degrees)) * error)

    def equivalent(self, margin: float, alpha: float = 0.05, method: str = "t") -> bool:
        """TOST: both one-sided tests (difference > -margin, difference < +margin) reject at ``alpha``,
        i.e. the (1 - 2·alpha) interval (90 % by default) lies strictly inside ±margin (same units as
        the difference)."""
        low, high = self.interval(1 - 2 * alpha, method)
        return bool(-margin < low and high < margin)

    def scaled(self, factor: float) -> "PairedBootstrap":
        """The same comparison in other units (e.g. ×100 points)."""
        return PairedBootstrap(factor * self.difference, factor * self.per_seed, factor * self.replicates,
                               factor * self.example_replicates)


def _method(method: str) -> str:
    if method not in INTERVAL_METHODS:
        raise ValueError(f"unknown interval method {method!r}; choose one of {list(INTERVAL_METHODS)}")
    return method


def paired_bootstrap(metric: str, labels, variant, reference, n_boot: int = 4000, seed: int = 0,
                     chunk_elements: int = 2_000_000) -> PairedBootstrap:
    """Paired hierarchical bootstrap of ``metric(variant) - metric(reference)``, averaged over seeds.

    ``labels``: (n,) the dev labels; ``variant``, ``reference``: (seeds, n) predictions, row s of both
    being the runs with the same seed. Each replicate draws the n dev examples with replacement and,
    independently, the seeds with replacement; the same drawn examples score both variants and every
    seed (the dev set is shared by all runs, so example and seed are crossed factors, not nested), and
    a drawn seed brings both of its paired runs. Labels of shape (seeds, n) mean each seed saw its own
    dev examples (nested): then each seed's examples are drawn independently (still the same draw for
    both of its runs). The replicate's statistic is the mean over the drawn
    seeds of the per-seed difference on the drawn examples. The example draws are processed
    ``chunk_elements`` weights at a time, so memory stays bounded on large dev sets.
    """
    variant, reference = np.atleast_2d(variant), np.atleast_2d(reference)
    labels = np.asarray(labels)
    shared = labels.ndim == 1  # one dev set for every seed: the same example draws for all of them
    labels = np.broadcast_to(labels, variant.shape) if shared else labels
    if variant.shape != reference.shape or labels.shape != variant.shape:
        raise ValueError(f"variant {variant.shape} and reference {reference.shape} predictions must both "
                         f"be (seeds, n) for labels of shape (n,) or (seeds, n), got {labels.shape}")
    if n_boot < 2:
        raise ValueError(f"n_boot must be at least 2, got {n_boot}")
    seeds, n = variant.shape
    rng = np.random.default_rng(seed)
    per_seed = np.array([score(metric, labels[s], variant[s]) - score(metric, labels[s], reference[s])
                         for s in range(seeds)])
    resampled = np.empty((seeds, n_boot))  # difference of seed s on replicate b's examples
    step = max(1, chunk_elements // n)
    for start in range(0, n_boot, step):
        count = min(step, n_boot - start)
        weights = resample_counts(rng, n, count).astype(float)
        for s in range(seeds):
            if not shared and s > 0:
                weights = resample_counts(rng, n, count).astype(float)
            resampled[s, start:start + count] = (score(metric, labels[s], variant[s], weights)
                                                 - score(metric, labels[s], reference[s], weights))
    seed_counts = resample_counts(rng, seeds, n_boot)  # (n_boot, seeds)
    replicates = (seed_counts * resampled.T).sum(axis=1) / seeds
    return PairedBootstrap(float(per_seed.mean()), per_seed, replicates, resampled.mean(axis=0))


def percentile_interval(replicates, level: float = 0.95) -> tuple[float, float]:
    """The central ``level`` percentile interval of the bootstrap replicates (NaNs left out)."""
    values = np.asarray(replicates, dtype=float)
    values = values[~np.isnan(values)]
    if values.size == 0:
        return np.nan, np.nan
    tail = (1 - level) / 2
    low, high = np.quantile(values, [tail, 1 - tail])
    return float(low), float(high)


def bootstrap_p_value(replicates, null: float = 0.0) -> float:
    """Two-sided bootstrap p-value for "the difference is ``null``".

    p = min(1, 2 · min(1 + #{replicates ≤ null}, 1 + #{replicates ≥ null}) / (B + 1)): twice the
    smaller tail share of the replicates beyond the null value, with the usual +1 so that p is never
    0. It is (up to that +1) the smallest α at which the (1 - α) percentile interval excludes
    ``null``, so p < 0.05 goes with a 95 % interval that excludes 0. The smallest p possible is
    2 / (B + 1).
    """
    values = np.asarray(replicates, dtype=float)
    values = values[~np.isnan(values)]
    if values.size == 0:
        return np.nan
    below = 1 + np.count_nonzero(values <= null)
    above = 1 + np.count_nonzero(values >= null)
    return float(min(1.0, 2 * min(below, above) / (values.size + 1)))


def t_interval(estimate: float, standard_error: float, degrees: float, level: float = 0.95) -> tuple[float, float]:
    """The central ``level`` t interval: estimate ± the t quantile at (1 + level) / 2 with ``degrees``
    degrees of freedom × ``standard_error`` (e.g. ``PairedBootstrap.t_parts``, or the ``standard_error``
    and ``degrees_of_freedom`` columns of ``analysis.compare``, to get any level without resampling)."""
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


def holm(p_values) -> np.ndarray:
    """Holm's step-down adjustment: the i-th smallest of m p-values becomes
    max over j ≤ i of min(1, (m - j + 1) · p_(j)). NaNs stay NaN and do not count in m."""
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full(p.shape, np.nan)
    valid = np.flatnonzero(~np.isnan(p))
    order = valid[np.argsort(p[valid], kind="stable")]
    m = len(order)
    running = 0.0
    for i, index in enumerate(order):
        running = max(running, min(1.0, (m - i) * p[index]))
        adjusted[index] = running
    return adjusted


# --------------------------------------------------------------------------------------------- collapse
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
    return max(score(metric, labels, np.full_like(labels, value)) for value in np.unique(labels))


def collapsed(final_train_loss=np.nan, constant_train_loss=np.nan, dev_score=np.nan,
              constant_dev_score=np.nan, tolerance: float = COLLAPSE_LOSS_TOLERANCE) -> np.ndarray:
    """Whether each run collapsed: 1.0 (yes), 0.0 (no) or NaN (nothing to judge by).

    A run is collapsed when its final training loss is not at least ``tolerance`` (2 %) below the
    loss of the constant predictor (final ≥ (1 - tolerance) · constant), or when its dev score is no
    better than the constant predictor's (score ≤ constant + 1e-9; NaN scores, e.g. the Pearson
    correlation of a constant prediction, count as the constant's). Either sign is enough; a run with
    neither number known is NaN. Arguments broadcast (arrays of runs or single values).
    """
    final, constant = np.asarray(final_train_loss, float), np.asarray(constant_train_loss, float)
    score_, floor = np.asarray(dev_score, float), np.asarray(constant_dev_score, float)
    by_loss_known = ~np.isnan(final) & ~np.isnan(constant)
    by_loss = by_loss_known & (final >= (1 - tolerance) * constant)
    by_score_known = ~np.isnan(floor)
    by_score = by_score_known & (np.isnan(score_) | (score_ <= floor + 1e-9))
    result = (by_loss | by_score).astype(float)
    return np.where(by_loss_known | by_score_known, result, np.nan)


def clopper_pearson(successes: int, trials: int, level: float = 0.95) -> tuple[float, float]:
    """The exact (Clopper–Pearson) ``level`` interval for a binomial proportion (NaNs for 0 trials)."""
    if trials == 0:
        return np.nan, np.nan
    if not 0 <= successes <= trials:
        raise ValueError(f"successes must lie in 0..{trials}, got {successes}")
    tail = (1 - level) / 2
    low = 0.0 if successes == 0 else float(beta.ppf(tail, successes, trials - successes + 1))
    high = 1.0 if successes == trials else float(beta.ppf(1 - tail, successes + 1, trials - successes))
    return low, high
