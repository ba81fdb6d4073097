"""One rule set for every verdict: ``--compare``, the claims command, the planner and the report read
their verdicts off one interval per comparison, its family interval.

A family is one comparison table (``analysis.compare``): every configuration of a results folder
against one reference, on one split, for one target of inference. With m comparisons in it (those with
a paired difference), each comparison gets the t interval at level 1 - ALPHA / m (Bonferroni), and
every statement about it is read off that one interval [low, high], with the equivalence margin M:

    better (than the reference)   low > 0             worse              high < 0
    equivalent                    -M < low, high < M  non-inferior       low > -M
    non-superior                  high < M

``comparison_verdict`` names the strongest of these for ``--compare`` ("better, within the margin"
when the interval also lies below M, "worse, within the margin" when it also lies above -M);
``claim_verdict`` judges a claim's test from the same interval (confirmed, refuted, not resolved).
Because every statement comes from one interval, verdicts cannot contradict each other: equivalent
implies non-inferior, better excludes worse, and a claims row says what the ``--compare`` row says.

Why the family-wise error stays at ALPHA: whatever the true differences, a statement about a
comparison is wrong only if its interval misses the true difference. When the true difference is
above 0, the only statements that can be wrong bound it from above ("worse"; "equivalent",
"non-superior" or "within the margin" when it is at least M), and each needs the interval's upper end
below the truth: probability ALPHA / (2m) for all of them together. Below 0 the same holds for the lower
end; at exactly 0 only "better" or "worse" can be wrong, ALPHA / m together. Summed over the m
comparisons: at most ALPHA. (A step-down procedure such as Holm's does not keep this bound when a
comparison may yield several statements at once, so the family uses Bonferroni's level.)
"""
from __future__ import annotations

import numpy as np

#: the family-wise error rate every verdict is held to
ALPHA = 0.05
#: verdicts ``comparison_verdict`` gives, strongest first
COMPARISON_VERDICTS = ("better", "better, within the margin", "worse", "worse, within the margin",
                       "equivalent", "non-inferior", "non-superior", "not resolved")
#: how a claim compares its two configurations, and the verdicts ``claim_verdict`` gives
TESTS = ("better", "equivalent", "non-inferior")
CLAIM_VERDICTS = ("confirmed", "refuted", "not resolved")


def family_level(size: int, alpha: float = ALPHA) -> float:
    """The level of each interval in a family of ``size`` comparisons: 1 - alpha / size."""
    return 1 - alpha / max(int(size), 1)


def comparison_verdict(low: float, high: float, margin: float) -> str:
    """The strongest statement the family interval [low, high] makes (see the module docstring);
    "not resolved" when it makes none (or is missing)."""
    if low > 0:
        return "better, within the margin" if high < margin else "better"
    if high < 0:
        return "worse, within the margin" if low > -margin else "worse"
    if -margin < low and high < margin:
        return "equivalent"
    if low > -margin:
        return "non-inferior"
    if high < margin:
        return "non-superior"
    return "not resolved"


def claim_verdict(test: str, low: float, high: float, margin: float) -> str:
    """A claim's verdict on one comparison from its family interval [low, high]:

    - ``better``: confirmed when low > 0, refuted when high < 0 (``--compare`` says "worse");
    - ``equivalent``: confirmed when -margin < low and high < margin, refuted when the interval lies
      wholly beyond the margin (low > margin or high < -margin);
    - ``non-inferior``: confirmed when low > -margin, refuted when high < -margin;

    otherwise "not resolved"."""
    if test == "better":
        confirmed, refuted = low > 0, high < 0
    elif test == "equivalent":
        confirmed, refuted = -margin < low and high < margin, low > margin or high < -margin
    elif test == "non-inferior":
        confirmed, refuted = low > -margin, high < -margin
    else:
        raise ValueError(f"unknown test {test!r}; choose among {list(TESTS)}")
    if np.isnan(low) or np.isnan(high):
        return "not resolved"
    return "confirmed" if confirmed else "refuted" if refuted else "not resolved"
