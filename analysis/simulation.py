"""Planted crossed designs: two variants run with the same seeds on the same examples, with seed
effects, example effects and a seed × example interaction of known size, to check by simulation that
``stats.paired_difference``'s interval covers what it claims to and is no wider than it needs to be.

    python -m analysis.simulation                 # the coverage study docs/statistics.md quotes
    python -m analysis.simulation --replications 500

Run s of a variant gets example i right when a latent score is above 0 (a probit model):

    variant's shift + shared difficulty[i] + variant's own example effect[i] + seed effect[variant, s]
    + luck[variant, s, i],  the luck of both variants correlated by ``shared_luck`` at the same (s, i)

so the per-(seed, example) difference of the two variants has all three components: seeds (the two
seed effects), examples (the two own example effects) and interaction (the luck). The accuracy
difference's true value is known exactly: for new examples it is Φ(shift_V / s) - Φ(shift_R / s) with
s² = 1 + every variance in the latent score; for a fixed dev set, the mean over its examples of the same
with the example's effects held. Other metrics (Matthews) are checked against the mean of their
estimates over the simulations (what the interval is about at this number of examples).
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, replace

import numpy as np
from scipy.stats import norm

from . import stats
from .tables import format_number


@dataclass(frozen=True)
class Design:
    """One planted design (latent probit scale; see the module docstring)."""
    name: str
    seeds: int = 5
    examples: int = 300
    shift: float = 0.15                # the variant's latent advantage over the reference
    seed_spread: float = 0.05         # sd of each variant's per-seed shift
    example_spread: float = 0.3       # sd of each variant's own per-example effect
    difficulty_spread: float = 1.0    # sd of the per-example difficulty both variants share
    shared_luck: float = 0.5          # correlation of the two variants' luck at the same (seed, example)
    reference_level: float = 0.8      # the reference's latent mean (0.8: about 70 % accuracy)

    def latent_spread(self) -> float:
        return float(np.sqrt(1 + self.difficulty_spread ** 2 + self.example_spread ** 2 + self.seed_spread ** 2))


#: the designs the tests and the coverage study plant: which component dominates the difference
DESIGNS = (
    Design("examples dominate", seed_spread=0.03, example_spread=0.5, shared_luck=0.7),
    Design("seeds dominate", seed_spread=0.15, example_spread=0.1, shared_luck=0.8),
    Design("strong interaction", seed_spread=0.03, example_spread=0.1, shared_luck=0.0),
    Design("all three", seed_spread=0.08, example_spread=0.3, shared_luck=0.3),
)


@dataclass(frozen=True)
class PlantedExamples:
    """The examples of one planted dev set: each one's shared difficulty and each variant's own effect."""
    difficulty: np.ndarray
    own: np.ndarray  # (2, n): variant, reference

    @classmethod
    def draw(cls, design: Design, rng: np.random.Generator) -> "PlantedExamples":
        n = design.examples
        return cls(rng.normal(0, design.difficulty_spread, n), rng.normal(0, design.example_spread, (2, n)))

    def means(self, design: Design) -> np.ndarray:
        """(2, n): each variant's latent mean on each example."""
        shifts = np.array([[design.reference_level + design.shift], [design.reference_level]])
        return shifts + self.difficulty[None, :] + self.own


def true_accuracy_difference(design: Design, examples: PlantedExamples | None = None) -> float:
    """The planted accuracy difference: on new examples (``examples`` None), or on these examples with
    only the seeds and the luck drawn anew."""
    if examples is None:
        spread = design.latent_spread()
        return float(norm.cdf((design.reference_level + design.shift) / spread)
                     - norm.cdf(design.reference_level / spread))
    right = norm.cdf(examples.means(design) / np.sqrt(1 + design.seed_spread ** 2))
    return float(right[0].mean() - right[1].mean())


def draw_study(design: Design, rng: np.random.Generator, examples: PlantedExamples | None = None):
    """(labels (n,), variant (seeds, n), reference (seeds, n)) predictions of one planted study, on
    ``examples`` (default: a new draw). Labels are balanced 0/1; a wrong prediction is the other class."""
    examples = examples or PlantedExamples.draw(design, rng)
    k, n = design.seeds, design.examples
    seed_effects = rng.normal(0, design.seed_spread, (2, k, 1))
    common = rng.normal(size=(k, n))
    luck = design.shared_luck * common + np.sqrt(1 - design.shared_luck ** 2) * rng.normal(size=(2, k, n))
    right = examples.means(design)[:, None, :] + seed_effects + luck > 0  # (2, seeds, n)
    labels = np.arange(n) % 2
    predictions = np.where(right, labels, 1 - labels)
    return labels, predictions[0], predictions[1]


@dataclass(frozen=True)
class Coverage:
    """What the simulation found for one design, metric and target."""
    design: str
    seeds: int
    metric: str
    target: str
    level: float
    replications: int
    coverage: float
    median_width: float
    true_spread: float          # sd of the estimate over the simulations
    double_counted: float       # coverage of the interval that counts the interaction twice

    @property
    def width_ratio(self) -> float:
        """median width / the width a known standard error would give (2 · z · true spread)."""
        return self.median_width / (2 * norm.ppf(0.5 + self.level / 2) * self.true_spread)


def coverage(design: Design, replications: int, metric: str = "accuracy", target: str = "new-examples",
             level: float = 0.95, seed: int = 0) -> Coverage:
    """Run ``replications`` planted studies of ``design`` and check ``level`` intervals for ``target``:
    "new-examples" draws new examples each time, "this-dev-set" keeps one draw of examples. Also
    checks, for comparison, the interval this project used before (seed part var(per-seed)/seeds plus
    the example resampling variance of the seed mean, which counts the interaction twice: ``seed mean
    square + example mean square`` over seeds × examples, Satterthwaite-weighted)."""
    stats.target_of(target)
    rng = np.random.default_rng(seed)
    fixed = PlantedExamples.draw(design, rng) if target == "this-dev-set" else None
    estimates, intervals, old_intervals = [], [], []
    for _ in range(replications):
        result = stats.paired_difference(metric, *draw_study(design, rng, fixed))
        estimates.append(result.difference)
        intervals.append(result.interval(level, target))
        old_intervals.append(_double_counted_interval(result, level))
    estimates, intervals, old_intervals = np.array(estimates), np.array(intervals), np.array(old_intervals)
    if metric == "accuracy":
        truth = true_accuracy_difference(design, fixed)
    else:
        truth = float(estimates.mean())
    covered = (intervals[:, 0] <= truth) & (truth <= intervals[:, 1])
    old_covered = (old_intervals[:, 0] <= truth) & (truth <= old_intervals[:, 1])
    return Coverage(design.name, design.seeds, metric, target, level, replications, float(covered.mean()),
                    float(np.median(intervals[:, 1] - intervals[:, 0])), float(estimates.std(ddof=1)),
                    float(old_covered.mean()))


def _double_counted_interval(result: stats.PairedDifference, level: float) -> tuple[float, float]:
    """The interval this project's "t" method gave before (it adds the seed part and the example part
    without taking the interaction out of one of them), from the same mean squares."""
    c = result.components
    cells = c.seeds * c.examples
    seed_part, example_part = c.seed_mean_square / cells, c.example_mean_square / cells
    degrees = (c.seeds - 1) * (1 + example_part / seed_part) ** 2 if seed_part > 0 else np.inf
    return stats.t_interval(result.difference, np.sqrt(seed_part + example_part), degrees, level)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis.simulation", description=__doc__.split("\n\n")[0])
    parser.add_argument("--replications", type=int, default=4000, help="studies per case (default: 4000)")
    parser.add_argument("--examples", type=int, default=300, help="dev examples per study (default: 300)")
    arguments = parser.parse_args(argv)
    print(f"# Coverage of the paired interval on planted crossed designs ({arguments.replications} studies "
          f"per row, five times as many at the family level; {arguments.examples} examples; "
          f"python -m analysis.simulation)\n")
    print("| design | metric | target | seeds | level | coverage | median width / (2·z·true sd) "
          "| coverage, interaction counted twice |")
    print("| :--- | :--- | :--- | ---: | ---: | ---: | ---: | ---: |")
    family = 1 - 0.05 / 35  # a family interval of a 35-row --compare table: its tails need more studies
    cases = [(design, "accuracy", "new-examples", 0.95, 1) for design in DESIGNS]
    cases += [(design, "accuracy", "this-dev-set", 0.95, 1) for design in DESIGNS]
    cases += [(design, "matthews_correlation", "new-examples", 0.95, 1) for design in DESIGNS[2:]]
    cases += [(design, "accuracy", "new-examples", family, 5) for design in DESIGNS]
    cases += [(design, "accuracy", "this-dev-set", family, 5) for design in DESIGNS[::3]]
    for number, (design, metric, target, level, more) in enumerate(cases):
        for seeds in (3, 5, 10):
            planted = replace(design, seeds=seeds, examples=arguments.examples)
            result = coverage(planted, more * arguments.replications, metric, target, level,
                              seed=number * 100 + seeds)
            print(f"| {design.name} | {metric} | {target} | {seeds} | {format_number(100 * level, 2)} % | "
                  f"{100 * result.coverage:.{1 if more == 1 else 2}f} % | {result.width_ratio:.2f} | "
                  f"{100 * result.double_counted:.{1 if more == 1 else 2}f} % |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
