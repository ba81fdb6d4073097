"""The report of ``step_time.py``: ratios with 95 % bootstrap intervals, the A/A rows, each adapter's
overhead above the frozen floor, the targets, and the markdown and CSV files.

Every ratio is computed from the rounds (a round times every contender once, minutes apart at most):
the point value is the median of the per-round ratios, and its interval comes from resampling the
rounds with replacement. A ratio reads "faster" or "slower" only when its interval excludes 1.
Imports no torch: it works on plain lists of seconds.
"""
from __future__ import annotations

import csv
import math
import random
import statistics
from pathlib import Path
from typing import NamedTuple

import variants

FLOOR_TARGET = 1.15          # every variant vs the frozen floor, on the wide stack
MERGED_TARGET = 1.02         # merged inference vs the plain model
MEMORY_TARGET = 1.0          # peak memory ours/PEFT
QUANTIZED_BITS_TARGET = 4.2  # bits per base-weight parameter of a quantized variant
QUANTIZED_TIME_TARGET = 1.3  # a quantized variant's step time against ours of the variant it quantizes
RESAMPLES = 2000
LEVEL = 0.95
#: below this many rounds an interval from resampling them means nothing: no verdict is drawn
MIN_ROUNDS = 5


class Ratio(NamedTuple):
    value: float
    low: float
    high: float
    rounds: int

    def reads(self) -> str:
        """'faster' or 'slower' only when the interval excludes 1."""
        if self.rounds < MIN_ROUNDS:
            return f"no verdict ({self.rounds} rounds < {MIN_ROUNDS})"
        if self.high < 1:
            return "faster"
        if self.low > 1:
            return "slower"
        return "same within noise"


def bootstrap_interval(statistic, rounds: int, *, resamples: int = RESAMPLES, level: float = LEVEL,
                       seed: int = 0) -> tuple[float, float]:
    """The percentile interval of ``statistic(indices)`` over ``resamples`` resamplings of the rounds."""
    rng = random.Random(seed)
    values = sorted(statistic([rng.randrange(rounds) for _ in range(rounds)]) for _ in range(resamples))
    tail = (1 - level) / 2
    return values[int(tail * (resamples - 1))], values[math.ceil((1 - tail) * (resamples - 1))]


def paired_ratio(a: list[float], b: list[float], **kwargs) -> Ratio | None:
    """a / b as the median of the per-round ratios, with its bootstrap interval; None without data."""
    if not a or not b:
        return None
    ratios = [x / y for x, y in zip(a, b)]
    low, high = bootstrap_interval(lambda picks: statistics.median(ratios[i] for i in picks), len(ratios), **kwargs)
    return Ratio(statistics.median(ratios), low, high, len(ratios))


def overhead(variant: list[float], peft: list[float], floor: list[float], **kwargs) -> Ratio | None:
    """(variant − floor) / (peft − floor): medians of the per-round differences, so that each difference
    pairs timings of one round. None where PEFT's median difference is not above zero (nothing to
    compare with); a resample where it is not counts as infinite."""
    if not variant or not peft or not floor:
        return None
    ours = [v - f for v, f in zip(variant, floor)]
    theirs = [p - f for p, f in zip(peft, floor)]

    def statistic(picks):
        numerator, denominator = statistics.median(ours[i] for i in picks), statistics.median(theirs[i] for i in picks)
        return numerator / denominator if denominator > 0 else math.inf

    value = statistic(range(len(ours)))
    if math.isinf(value):
        return None
    low, high = bootstrap_interval(statistic, len(ours), **kwargs)
    return Ratio(value, low, high, len(ours))


def judge(ratio: Ratio | None, target: float | None) -> str:
    """'met' when the whole interval is at or below the target, 'missed' when it is all above."""
    if ratio is None or target is None:
        return "–"
    if ratio.rounds < MIN_ROUNDS:
        return ratio.reads()
    if ratio.high <= target:
        return "met"
    if ratio.low > target:
        return "missed"
    return "undecided (the interval spans the target)"


def fmt(value, digits=2, suffix="") -> str:
    if value is None:
        return "–"
    return "∞" if math.isinf(value) else f"{value:.{digits}f}{suffix}"


def fmt_ratio(ratio: Ratio | None, digits=2) -> str:
    if ratio is None:
        return "–"
    return f"{fmt(ratio.value, digits)}× [{fmt(ratio.low, digits)}, {fmt(ratio.high, digits)}]"


def megabytes(m, kind: str = "peak_bytes"):
    value = None if m is None else getattr(m, kind)
    return None if value is None else value / 2**20


def ratio_columns(name: str, ratio: Ratio | None) -> dict:
    return {name: ratio and ratio.value, f"{name}_low": ratio and ratio.low, f"{name}_high": ratio and ratio.high}


class Setting:
    """The measurements of one setting, found by (mode, impl, variant, copy)."""

    def __init__(self, measurements: list):
        self.measurements = measurements
        self.by_key = {m.contender.key: m for m in measurements}

    def times(self, mode, impl, variant="", copy=0) -> list[float]:
        m = self.by_key.get((mode, impl, variant, copy))
        return m.times if m else []

    def find(self, mode, impl, variant="", copy=0):
        return self.by_key.get((mode, impl, variant, copy))

    def ratios(self, m) -> dict[str, Ratio | None]:
        """Every ratio of one contender against its references."""
        c = m.contender
        floor = self.times("train", "floor")
        peft = self.times("train", "peft", c.variant) if c.impl in ("ours", "peft") and c.mode == "train" else []
        return {"ratio_vs_peft": paired_ratio(m.times, peft) if c.impl == "ours" else None,
                "overhead_vs_peft": overhead(m.times, peft, floor) if c.impl == "ours" else None,
                "ratio_vs_floor": paired_ratio(m.times, floor) if c.mode == "train" and c.impl != "floor" else None,
                "ratio_vs_base": (paired_ratio(m.times, self.times("infer", "base"))
                                  if c.mode == "infer" and c.impl != "base" else None),
                "ratio_vs_first_copy": (paired_ratio(m.times, self.times(c.mode, c.impl, c.variant))
                                        if c.copy else None)}


def contender_table(s: Setting) -> list[str]:
    lines = ["| contender | step ms (median) | min–max ms | peak MB | RSS MB | trainable params |",
             "|---|---:|---:|---:|---:|---:|"]
    for m in s.measurements:
        ms = [t * 1000 for t in m.times]
        trainable = f"{m.trainable:,}" if m.contender.mode == "train" else "–"
        lines.append(f"| {m.contender.label} | {fmt(statistics.median(ms) if ms else None, 1)} | "
                     f"{fmt(min(ms) if ms else None, 0)}–{fmt(max(ms) if ms else None, 0)} | "
                     f"{fmt(megabytes(m), 0)} | {fmt(megabytes(m, 'rss_bytes'), 0)} | {trainable} |")
    return lines


def aa_table(s: Setting) -> list[str]:
    """The same set-up timed twice: how far apart identical contenders come out (the noise floor)."""
    rows = [(m, s.ratios(m)["ratio_vs_first_copy"]) for m in s.measurements if m.contender.copy]
    if not rows:
        return []
    lines = ["| A/A: the same contender timed twice | second / first [95 % interval] | reads |", "|---|---:|---|"]
    for m, ratio in rows:
        first = s.find(m.contender.mode, m.contender.impl, m.contender.variant).contender.label
        lines.append(f"| {first} | {fmt_ratio(ratio)} | {ratio.reads() if ratio else '–'} |")
    return lines + ["", "The A/A rows are the noise floor: two identical contenders come out this far apart "
                    "here, so a ratio whose interval is no narrower says nothing beyond it.", ""]


def variant_table(s: Setting, setting: str, recipes: list) -> list[str]:
    lines = ["| variant | ours/PEFT time [95 %] | reads | overhead above the floor, ours/PEFT's [95 %] | target | "
             "| ours/floor time [95 %] | target | | ours/PEFT peak memory | target | | floor/PEFT time [95 %] |",
             "|---|---:|---|---:|---:|---|---:|---:|---|---:|---:|---|---:|"]
    floor_target = FLOOR_TARGET if setting == "wide" else None
    for r in recipes:
        ours, peft = s.find("train", "ours", r.variant), s.find("train", "peft", r.variant)
        if ours is None:
            continue
        ratios = s.ratios(ours)
        vs_peft, cost, vs_floor = ratios["ratio_vs_peft"], ratios["overhead_vs_peft"], ratios["ratio_vs_floor"]
        target = variants.lookup(r.variant).step_overhead_goal if peft else None  # declared on the class
        memory = megabytes(ours) / megabytes(peft) if megabytes(ours) and megabytes(peft) else None
        memory_verdict = "–" if memory is None else ("met" if memory <= MEMORY_TARGET else "missed")
        if memory_verdict == "missed":  # say by how much: a few KB of cached tensors is not a few MB
            memory_verdict += f" (+{(megabytes(ours) - megabytes(peft)) * 1024:,.0f} KB)"
        floor_vs_peft = paired_ratio(s.times("train", "floor"), peft.times) if peft else None
        lines.append(
            f"| {r.variant} | {fmt_ratio(vs_peft)} | {vs_peft.reads() if vs_peft else 'no PEFT counterpart'} | "
            f"{fmt_ratio(cost)} | {'≤ %.2f' % target if target else '–'} | {judge(cost, target)} | "
            f"{fmt_ratio(vs_floor)} | {'≤ %.2f×' % floor_target if floor_target else '(wide only)'} | "
            f"{judge(vs_floor, floor_target) if floor_target else ''} | {fmt(memory, 3, '×')} | "
            f"≤ {MEMORY_TARGET:.2f}× | {memory_verdict} | {fmt_ratio(floor_vs_peft)} |")
    return lines + ["", "overhead = (ours − floor) / (PEFT's − floor), from the medians of the per-round differences: "
                    "the part of the step an adapter implementation controls (1 = as costly as PEFT's, 0 = free). "
                    "floor/PEFT is the best ours/PEFT any adapter could reach. A target is met when the whole "
                    "interval is at or below it.", ""]


def inference_table(s: Setting) -> list[str]:
    merged = [m for m in s.measurements if m.contender.mode == "infer" and m.contender.impl == "ours"]
    if not merged or not s.find("infer", "base"):
        return []
    lines = ["| merged inference | merged/plain time [95 %] | reads | target | |", "|---|---:|---|---:|---|"]
    for m in merged:
        ratio = s.ratios(m)["ratio_vs_base"]
        lines.append(f"| {m.contender.variant} | {fmt_ratio(ratio, 3)} | {ratio.reads() if ratio else '–'} | "
                     f"≤ {MERGED_TARGET:.2f}× | {judge(ratio, MERGED_TARGET)} |")
    return lines + [""]


def quantized_table(s: Setting) -> list[str]:
    """Storage, time and memory of each variant whose base weights our side stores quantized."""
    lines = []
    time_target = QUANTIZED_TIME_TARGET
    for ours in s.measurements:
        c = ours.contender
        if c.mode != "train" or c.impl != "ours" or c.copy or not ours.storage:
            continue
        reference_name = variants.lookup(c.variant).quantizes
        reference = s.find("train", "ours", reference_name) if reference_name else None
        bits, stored = ours.storage.get("bits_per_parameter"), ours.storage
        peft = s.find("train", "peft", c.variant)
        vs_reference = paired_ratio(ours.times, reference.times) if reference else None
        memory = megabytes(ours) / megabytes(reference) if reference and megabytes(reference) else None
        lines += [f"| {c.variant} | value | target | |", "|---|---:|---:|---|",
                  f"| bits per base-weight parameter, ours | {fmt(bits, 3)} | ≤ {QUANTIZED_BITS_TARGET} | "
                  f"{'met' if bits <= QUANTIZED_BITS_TARGET else 'missed'} |"]
        if peft and peft.storage:
            lines.append(f"| bits per base-weight parameter, PEFT+bitsandbytes | "
                         f"{fmt(peft.storage['bits_per_parameter'], 3)} | | |")
        lines += [f"| quantized base weights: bytes held / fp32 bytes | {stored['stored_bytes'] / 2**20:.2f} MB / "
                  f"{stored['fp32_bytes'] / 2**20:.2f} MB = {stored['stored_bytes'] / stored['fp32_bytes']:.3f} | | |",
                  f"| step time, {c.variant} / {reference_name} (ours) [95 %] | {fmt_ratio(vs_reference)} | "
                  f"≤ {time_target}× | {judge(vs_reference, time_target)} |",
                  f"| peak memory, {c.variant} / {reference_name} (ours) | {fmt(memory, 2, '×')} | < 1.00× | "
                  f"{'–' if memory is None else ('met' if memory < 1 else 'missed')} |", ""]
    return lines


def analyse(results: dict[str, list], recipes: list) -> tuple[list[str], list[dict]]:
    """Markdown lines and one CSV row per contender, for ``results``: setting -> Measurements."""
    lines, rows = [], []
    for setting, measurements in results.items():
        s = Setting(measurements)
        lines += [f"### {setting}", "", *contender_table(s), "", *aa_table(s), *variant_table(s, setting, recipes),
                  *inference_table(s), *quantized_table(s)]
        for m in measurements:
            c = m.contender
            row = {"setting": setting, "contender": c.label, "mode": c.mode, "impl": c.impl, "variant": c.variant,
                   "copy": c.copy, "rounds": len(m.times),
                   "median_ms": statistics.median(m.times) * 1000 if m.times else None,
                   "min_ms": min(m.times) * 1000 if m.times else None,
                   "max_ms": max(m.times) * 1000 if m.times else None,
                   "times_ms": " ".join(f"{t * 1000:.2f}" for t in m.times),
                   "peak_mb": megabytes(m), "rss_mb": megabytes(m, "rss_bytes"), "trainable_params": m.trainable}
            for name, ratio in s.ratios(m).items():
                row.update(ratio_columns(name, ratio))
            row["bits_per_parameter"] = m.storage.get("bits_per_parameter")
            rows.append(row)
    return lines, rows


def write(out: Path, markdown: list[str], rows: list[dict]) -> tuple[Path, Path]:
    """``<out>/step_time.md`` and ``<out>/step_time.csv``, each written whole or not at all."""
    out.mkdir(parents=True, exist_ok=True)
    md, table = out / "step_time.md", out / "step_time.csv"
    partial_md, partial_csv = md.with_suffix(".md.partial"), table.with_suffix(".csv.partial")
    partial_md.write_text("\n".join(markdown) + "\n")
    with open(partial_csv, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    partial_md.replace(md)
    partial_csv.replace(table)
    return md, table
