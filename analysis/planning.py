"""What a study can resolve, said before the compute is spent:

    python -m analysis plan FOLDER --compare REFERENCE --margin M [--difference D] [--target this-dev-set]

From the runs already in a folder (a pilot or a finished study), per task and configuration against
the reference (the rows of ``analysis.compare``'s table, read from the records and their predictions
only): the variance components of the paired difference (``stats.VarianceComponents``: seed, example,
seed × example) and from them, at the level the verdicts use (the family interval of a table of m
rows, 1 - 0.05 / m; m is the pilot table's size unless ``family_size`` says otherwise):

- the seeds needed for 80 % power to detect a true difference of ``difference`` points (default: the
  margin), on as many dev examples as now;
- the seeds needed to show equivalence within ±margin with 80 % power when the true difference is 0;
- when no number of seeds can get there, a plain statement of that: for "new examples" the dev set's
  own sampling, σ²(example) / examples, is a floor that seeds do not lower; and how many evaluation
  examples would be needed (at the pilot's number of seeds, or at more seeds when those alone are too
  few).

Each projection puts the estimated components into the design asked about (``VarianceComponents.at``)
and computes what that study's interval would detect (``VarianceComponents.detectable``), exactly as
its interval would be computed. The components are estimates: from a pilot of 3-5 seeds the seed
component is uncertain by a factor of 2 or more, so read a needed number of seeds as a rough size.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from . import stats, verdicts
from .comparison import compare, grouping_columns
from .plots import config_label
from .tables import format_number

#: the largest number of seeds (and of examples) the planner looks at
MAX_SEEDS = 1000
MAX_EXAMPLES = 10**8


def plan(df: pd.DataFrame, predictions: pd.DataFrame | None, reference: str | dict, margin: float = 1.5,
         difference: float | None = None, split: str = "validation", target: str = "new-examples",
         power: float = 0.8, family_size: int | None = None, by=None,
         design: tuple[int, int] | None = None) -> pd.DataFrame:
    """One row per row of ``compare(df, predictions, reference, split, margin, by, target)`` that has a
    paired difference: the components, what the pilot design detects now, and what a study would need
    (see the module docstring; rows with fewer than 2 paired seeds are left out: one seed cannot tell
    the seed component from the interaction). Columns: the grouping values, ``task``, ``reference``, ``n_seeds``,
    ``n_examples``, ``difference``, ``share_seed``, ``share_example``, ``share_interaction``,
    ``detectable_now``, ``floor`` (the detectable difference with unlimited seeds; 0 for "this dev
    set"), ``seeds_detect`` and ``seeds_equivalence`` (NaN when no number of seeds up to MAX_SEEDS
    suffices), and where seeds alone do not suffice ``examples_detect`` / ``examples_equivalence``
    (the evaluation examples needed, with ``seeds_with_examples_detect`` / ``..._equivalence`` seeds);
    ``statement`` says it in words; with ``design`` = (seeds, examples) (a planned study, e.g. a larger
    evaluation set), ``detectable_at_design``: what that study would resolve, from the same components
    (the examples assumed to vary as the pilot's do). The table's ``attrs`` hold the
    family size, its level, the difference, the margin, the power and the target."""
    difference = margin if difference is None else difference
    if not difference > 0 or not margin > 0:
        raise ValueError(f"the difference ({difference!r}) and the margin ({margin!r}) must be positive points")
    if not 0.5 <= power < 1:
        raise ValueError(f"power must lie in [0.5, 1), got {power!r}")
    table = compare(df, predictions, reference, split=split, margin=margin, by=by, target=target)
    table = table[np.isfinite(table["standard_error"]) & (table["n_seeds"] >= 2)]
    if table.empty:
        raise ValueError("no row with a paired difference over at least 2 seeds to plan from (the runs need "
                         "prediction sidecars)")
    size = family_size or table.attrs["family_size"]
    level = verdicts.family_level(size)
    goals = {"detect": (difference, power), "equivalence": (margin, (1 + power) / 2)}
    keys = grouping_columns(table)
    rows = []
    for _, row in table.iterrows():
        components = row["paired"].components
        planned = {key: row[key] for key in keys}
        planned.update(task=row["task"], configuration=config_label(row, keys), reference=row["reference"],
                       n_seeds=row["n_seeds"], n_examples=row["n_examples"], difference=row["difference"],
                       share_seed=row["share_seed"], share_example=row["share_example"],
                       share_interaction=row["share_interaction"],
                       detectable_now=_needs(components, components.seeds, components.examples, target, level, power),
                       floor=_floor(components, target, level, power))
        unreached = {}
        for goal, (size_points, goal_power) in goals.items():
            seeds = _seeds_needed(components, size_points, target, level, goal_power)
            planned[f"seeds_{goal}"] = seeds
            if np.isnan(seeds):
                with_seeds, examples = _examples_needed(components, size_points, target, level, goal_power)
                planned[f"examples_{goal}"], planned[f"seeds_with_examples_{goal}"] = examples, with_seeds
                unreached[goal] = (_floor(components, target, level, goal_power), examples, with_seeds)
        planned["statement"] = _statement(unreached, difference, margin, int(row["n_examples"]))
        if design:
            planned["detectable_at_design"] = _needs(components, design[0], design[1], target, level, power)
        rows.append(planned)
    result = pd.DataFrame(rows)
    for goal in goals:
        for column in (f"examples_{goal}", f"seeds_with_examples_{goal}"):
            if column not in result:
                result[column] = np.nan
    result.attrs.update(family_size=size, family_level=level, difference=difference, margin=margin, power=power,
                        target=target, split=split, reference=reference, design=design)
    return result


def _needs(components, seeds, examples, target, level, power) -> float:
    """The smallest true difference a study of ``seeds`` × ``examples`` would resolve with ``power``."""
    return components.at(seeds, examples).detectable(level, power, target)


def _floor(components, target, level, power) -> float:
    """What unlimited seeds would resolve: for "new examples" the example part σ²(example) / examples
    alone (examples - 1 degrees of freedom); for "this dev set" 0."""
    if target == "this-dev-set":
        return 0.0
    return stats.detectable_of([(components.example / components.examples, components.examples - 1)], level, power)


def _seeds_needed(components, size_points, target, level, power) -> float:
    """The fewest seeds (2..MAX_SEEDS) whose study resolves ``size_points`` with ``power``; NaN if none."""
    def resolves(seeds):
        return _needs(components, seeds, components.examples, target, level, power) <= size_points

    return float(_fewest(1, MAX_SEEDS, resolves)) if resolves(MAX_SEEDS) else np.nan


def _examples_needed(components, size_points, target, level, power) -> tuple[float, float]:
    """(seeds, examples): the fewest evaluation examples that resolve ``size_points`` at the pilot's
    number of seeds, or, when those seeds alone are too few, at the fewest of 2×, 4×, ... as many
    for which some number of examples (up to MAX_EXAMPLES) does; (NaN, NaN) if none."""
    seeds = components.seeds
    while seeds <= MAX_SEEDS:
        def resolves(examples):
            return _needs(components, seeds, examples, target, level, power) <= size_points

        if resolves(MAX_EXAMPLES):
            return float(seeds), float(_fewest(components.examples, MAX_EXAMPLES, resolves))
        seeds *= 2
    return np.nan, np.nan


def _fewest(low: int, high: int, resolves) -> int:
    """The smallest count in (low, high] for which ``resolves`` (true at ``high``, taken as false at
    ``low``, and true for every count above one where it is true) holds: bisection."""
    while high - low > 1:
        middle = (low + high) // 2
        if resolves(middle):
            high = middle
        else:
            low = middle
    return high


def _statement(unreached: dict, difference: float, margin: float, examples_now: int) -> str:
    """One plain sentence for the goals no number of seeds reaches (``unreached``: goal -> (what
    unlimited seeds leave, examples needed, at how many seeds)); "" when seeds reach both."""
    if not unreached:
        return ""
    names = {"detect": f"detect {difference:g}", "equivalence": f"show ±{margin:g}"}
    goals = list(unreached)
    floors = " and ".join(format_number(unreached[goal][0], 2) for goal in goals)
    sentence = (f"Seeds alone cannot {' or '.join(names[goal] for goal in goals)}: the dev set's own sampling "
                f"leaves {floors} however many seeds are run")
    if any(np.isnan(unreached[goal][1]) for goal in goals):
        return sentence + "."
    needs = " and ".join(f"{int(unreached[goal][1]):,}" for goal in goals)
    at = " and ".join(dict.fromkeys(f"{int(unreached[goal][2])}" for goal in goals))
    return f"{sentence}; {needs} evaluation examples would (now {examples_now:,}), at {at} seeds."


def format_plan(table: pd.DataFrame) -> pd.DataFrame:
    """``plan``'s table for reading."""
    attrs = table.attrs
    rows = []
    for _, row in table.iterrows():
        rows.append({
            "task": row["task"], "configuration": row["configuration"], "vs": row["reference"],
            "seeds": int(row["n_seeds"]), "examples": int(row["n_examples"]), "Δ ×100": f"{row['difference']:+.1f}",
            "seed / example / interaction %": " / ".join(
                f"{100 * row[f'share_{name}']:.0f}" for name in ("seed", "example", "interaction"))
            if np.isfinite(row["share_seed"]) else "–",
            "detectable now": format_number(row["detectable_now"], 1),
            "detectable with unlimited seeds": format_number(row["floor"], 1),
            f"seeds to detect {attrs['difference']:g}": _count(row["seeds_detect"]),
            f"seeds for ±{attrs['margin']:g}": _count(row["seeds_equivalence"]),
            **({f"detectable at {attrs['design'][0]} seeds × {attrs['design'][1]:,} examples":
                format_number(row["detectable_at_design"], 1)} if attrs.get("design") else {}),
            "statement": row["statement"]})
    return pd.DataFrame(rows)


def _count(value) -> str:
    return "none" if np.isnan(value) else f"{int(value)}"


def plan_description(table: pd.DataFrame) -> str:
    """One sentence that says what the plan assumes."""
    attrs = table.attrs
    return (f"target of inference: {stats.TARGET_NAMES[attrs['target']]}; on {attrs['split']}; verdicts at the "
            f"family level of {attrs['family_size']} comparisons ({format_number(100 * attrs['family_level'], 2)} %, "
            f"Bonferroni); power {100 * attrs['power']:g} %; to detect: a true difference of "
            f"{attrs['difference']:g} points; equivalence: within ±{attrs['margin']:g} when the true difference "
            f"is 0; \"none\": no number of seeds up to {MAX_SEEDS} suffices")
