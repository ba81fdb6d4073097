"""The report of ``step_time.py``: ratios with 95 % bootstrap intervals, the A/A rows, each adapter's
overhead above the frozen floor, each step's share of the machine's multiply rate, where a step's
time goes by kind of op, bf16 against fp32, the targets, and the markdown and CSV files.

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
#: the share of the multiply rate (the probe's) a step reaches, by (setting, precision, variant)
SHARE_TARGETS = {("minilm", "bf16", "lora"): 0.60}
#: in these precisions ours must be no slower than PEFT's for every variant PEFT has (ours/PEFT ≤ 1)
NO_SLOWER_THAN_PEFT = ("bf16",)
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


def judge(ratio: Ratio | None, target: float | None, at_least: bool = False) -> str:
    """'met' when the whole interval is at or below the target (``at_least``: at or above it),
    'missed' when it is all on the other side."""
    if ratio is None or target is None:
        return "–"
    if ratio.rounds < MIN_ROUNDS:
        return ratio.reads()
    if (ratio.low >= target) if at_least else (ratio.high <= target):
        return "met"
    if (ratio.high < target) if at_least else (ratio.low > target):
        return "missed"
    return "undecided (the interval spans the target)"


def scaled(ratio: Ratio | None, factor: float) -> Ratio | None:
    return ratio and Ratio(ratio.value * factor, ratio.low * factor, ratio.high * factor, ratio.rounds)


def share_of_peak(m, probe) -> Ratio | None:
    """(counted FLOPs of a step / its time) / (the probe's FLOPs / the probe's time), round by round:
    the median over the rounds of FLOPs_step × t_probe / (FLOPs_probe × t_step), with its interval."""
    if probe is None or not m.step_flops or not probe.step_flops:
        return None
    return scaled(paired_ratio(probe.times, m.times), m.step_flops / probe.step_flops)


def rate(m) -> float | None:
    """Counted FLOPs per second of the median step, in GFLOP/s."""
    return m.step_flops / statistics.median(m.times) / 1e9 if m.step_flops and m.times else None


# -- where a step's time goes ---------------------------------------------------------------------

#: the kinds of op a profiled step's time is split into, in the order of the columns
OP_KINDS = ("matmul", "casts & copies", "layer norm", "attention & softmax", "elementwise & other ops",
            "optimizer", "autograd & Python")
MATMUL_OPS = {"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::addbmm", "aten::matmul",
              "aten::linear", "bitsandbytes::gemm_4bit"}
CAST_OPS = {"aten::copy_", "aten::_to_copy", "aten::to", "aten::contiguous", "aten::clone", "aten::cat",
            "aten::_copy_from", "aten::_copy_from_and_resize"}


def op_kind(name: str) -> str:
    """The kind of a profiled op, by its name (the optimizer's ops are told apart by where they run)."""
    if name in MATMUL_OPS:
        return "matmul"
    if name in CAST_OPS:
        return "casts & copies"
    if "layer_norm" in name:
        return "layer norm"
    if "softmax" in name or "attention" in name:
        return "attention & softmax"
    if name.startswith(("aten::", "bitsandbytes::")):
        return "elementwise & other ops"
    return "autograd & Python"  # autograd nodes, the engine, Python autograd functions: their own time


def time_by_kind(profile: dict) -> dict[str, float]:
    """Seconds of a profiled step (``harness.op_self_seconds``) by kind of op; the step's time that no
    op accounts for (Python between the ops) counts as autograd & Python, so the kinds add up to it."""
    seconds = dict.fromkeys(OP_KINDS, 0.0)
    for name, spent in profile["op_seconds"].items():
        seconds[op_kind(name)] += spent
    seconds["optimizer"] += profile["optimizer_seconds"]
    seconds["autograd & Python"] += max(0.0, profile["wall_seconds"] - sum(seconds.values()))
    return seconds


def largest_ops(profile: dict, kinds=("casts & copies", "layer norm", "attention & softmax",
                                      "elementwise & other ops"), count: int = 3) -> list[tuple[str, float]]:
    """The ``count`` ops of ``kinds`` with the most time, as (name, share of the step)."""
    chosen = [(name, spent) for name, spent in profile["op_seconds"].items() if op_kind(name) in kinds]
    total = max(profile["wall_seconds"], sum(time_by_kind(profile).values()))
    return [(name.removeprefix("aten::"), spent / total) for name, spent in sorted(chosen, key=lambda x: -x[1])[:count]]


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
    """The measurements of one setting in one precision, found by (mode, impl, variant, copy)."""

    def __init__(self, measurements: list, name: str = "", precision: str = "fp32"):
        self.measurements, self.name, self.precision = measurements, name, precision
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


def fmt_gflop(flops: int | None) -> str:
    """GFLOP with one decimal, or three significant digits below 1 (the tiny sizes of --smoke)."""
    if not flops:
        return "–"
    return f"{flops / 1e9:.1f}" if flops >= 1e9 else f"{flops / 1e9:.3g}"


def fmt_share(ratio: Ratio | None) -> str:
    if ratio is None:
        return "–"
    return f"{100 * ratio.value:.0f} % [{100 * ratio.low:.0f}, {100 * ratio.high:.0f}]"


def probe_line(s: Setting) -> list[str]:
    probe = s.find("probe", "gemm")
    if probe is None or not probe.times:
        return []
    return [f"Multiply rate, {s.precision}: {fmt(rate(probe), 1)} GFLOP/s (the probe: the forward, input-gradient "
            "and weight-gradient GEMMs of each distinct linear-layer shape at the step's batch × tokens, alone; "
            f"median of {len(probe.times)} rounds). Share of peak = (counted FLOPs of a step / its time) / that "
            "rate, round by round.", ""]


def contender_table(s: Setting) -> list[str]:
    lines = ["| contender | step ms (median) | min–max ms | peak MB | RSS MB | trainable params | GFLOP/step "
             "| share of peak [95 %] |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    probe = s.find("probe", "gemm")
    for m in s.measurements:
        if m.contender.mode == "probe":
            continue
        ms = [t * 1000 for t in m.times]
        train = m.contender.mode == "train"
        trainable = f"{m.trainable:,}" if train else "–"
        gflop = fmt_gflop(m.step_flops) if train else "–"
        lines.append(f"| {m.contender.label} | {fmt(statistics.median(ms) if ms else None, 1)} | "
                     f"{fmt(min(ms) if ms else None, 0)}–{fmt(max(ms) if ms else None, 0)} | "
                     f"{fmt(megabytes(m), 0)} | {fmt(megabytes(m, 'rss_bytes'), 0)} | {trainable} | {gflop} | "
                     f"{fmt_share(share_of_peak(m, probe)) if train else '–'} |")
    return lines


def breakdown_table(s: Setting) -> list[str]:
    """Where the time of one profiled step goes, by kind of op, for each training contender."""
    profiled = [m for m in s.measurements if m.profile and not m.contender.copy]
    if not profiled:
        return []
    lines = ["| one profiled step | ms | " + " | ".join(OP_KINDS) + " | largest outside matmuls |",
             "|---|---:|" + "---:|" * len(OP_KINDS) + "---|"]
    for m in profiled:
        seconds = time_by_kind(m.profile)
        total = sum(seconds.values())
        largest = ", ".join(f"{name} {100 * share:.0f} %" for name, share in largest_ops(m.profile))
        lines.append(f"| {m.contender.label} | {1000 * total:.1f} | "
                     + " | ".join(f"{100 * seconds[kind] / total:.0f} %" for kind in OP_KINDS) + f" | {largest} |")
    return lines + ["", "Shares of one step run under torch.profiler (its overhead included): each op's self time "
                    "(its own, not its children's) by kind of op; the optimizer is everything inside its step and "
                    "zero_grad; autograd & Python is the autograd engine's and Python autograd functions' own "
                    "time plus the step's time outside every op.", ""]


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


def goals_table(s: Setting, recipes: list) -> list[str]:
    """This precision's goals: a variant's share of the multiply rate, ours no slower than PEFT's."""
    rows = []
    for r in recipes:
        target = SHARE_TARGETS.get((s.name, s.precision, r.variant))
        ours = s.find("train", "ours", r.variant)
        if target and ours:
            share = share_of_peak(ours, s.find("probe", "gemm"))
            rows.append(f"| {r.variant} ours: share of the {s.precision} multiply rate [95 %] | {fmt_share(share)} | "
                        f"≥ {100 * target:.0f} % | {judge(share, target, at_least=True)} |")
    if s.precision in NO_SLOWER_THAN_PEFT:
        for r in recipes:
            ours = s.find("train", "ours", r.variant)
            ratio = s.ratios(ours)["ratio_vs_peft"] if ours else None
            if ratio:
                rows.append(f"| {r.variant}: ours/PEFT time in {s.precision} [95 %] | {fmt_ratio(ratio)} | ≤ 1.00× | "
                            f"{judge(ratio, 1.0)} |")
    if not rows:
        return []
    return [f"| goal ({s.precision}) | value | target | |", "|---|---:|---:|---|", *rows, ""]


def precision_table(by_precision: dict[str, Setting]) -> list[str]:
    """Each training contender in every precision against itself in fp32."""
    fp32 = by_precision.get("fp32")
    others = [s for name, s in by_precision.items() if name != "fp32"]
    if fp32 is None or not others:
        return []
    lines = ["| contender | precision | step ms (median) | against fp32: time [95 %] | reads | peak memory |",
             "|---|---|---:|---:|---|---:|"]
    for s in others:
        for m in s.measurements:
            first = fp32.find(*m.contender.key)
            if m.contender.mode != "train" or first is None:
                continue
            ratio = paired_ratio(m.times, first.times)
            memory = megabytes(m) / megabytes(first) if megabytes(m) and megabytes(first) else None
            lines.append(f"| {m.contender.name_in_precision} | {s.precision} | "
                         f"{fmt(statistics.median(m.times) * 1000 if m.times else None, 1)} | {fmt_ratio(ratio)} | "
                         f"{ratio.reads() if ratio else '–'} | {fmt(memory, 2, '×')} |")
    return lines + [""]


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


def by_precision(setting: str, measurements: list) -> dict[str, Setting]:
    """The measurements of one setting split by precision, in the order they came."""
    names = list(dict.fromkeys(m.contender.precision for m in measurements))
    return {name: Setting([m for m in measurements if m.contender.precision == name], setting, name)
            for name in names}


def heading(setting: str, precision: str) -> str:
    if precision == "fp32":
        return f"### {setting}"
    return f"### {setting}, {precision} (autocast around the forward pass; frozen base weights in {precision})"


def analyse(results: dict[str, list], recipes: list) -> tuple[list[str], list[dict]]:
    """Markdown lines and one CSV row per contender, for ``results``: setting -> Measurements."""
    lines, rows = [], []
    for setting, measurements in results.items():
        sections = by_precision(setting, measurements)
        for name, s in sections.items():
            lines += [heading(setting, name), "", *probe_line(s), *contender_table(s), "", *aa_table(s),
                      *variant_table(s, setting, recipes), *goals_table(s, recipes), *inference_table(s),
                      *quantized_table(s), *breakdown_table(s)]
        comparison = precision_table(sections)
        if comparison:
            lines += [f"### {setting}: each precision against fp32", "", *comparison]
        for s in sections.values():
            rows += [csv_row(setting, s, sections.get("fp32"), m) for m in s.measurements]
    return lines, rows


def csv_row(setting: str, s: Setting, fp32: Setting | None, m) -> dict:
    c = m.contender
    row = {"setting": setting, "precision": c.precision, "contender": c.label, "mode": c.mode, "impl": c.impl,
           "variant": c.variant, "copy": c.copy, "rounds": len(m.times),
           "median_ms": statistics.median(m.times) * 1000 if m.times else None,
           "min_ms": min(m.times) * 1000 if m.times else None,
           "max_ms": max(m.times) * 1000 if m.times else None,
           "times_ms": " ".join(f"{t * 1000:.2f}" for t in m.times),
           "peak_mb": megabytes(m), "rss_mb": megabytes(m, "rss_bytes"), "trainable_params": m.trainable}
    for name, ratio in s.ratios(m).items():
        row.update(ratio_columns(name, ratio))
    first = fp32.find(*c.key) if fp32 is not None and c.precision != "fp32" else None
    row.update(ratio_columns("ratio_vs_fp32", paired_ratio(m.times, first.times) if first else None))
    row["bits_per_parameter"] = m.storage.get("bits_per_parameter")
    row.update({"forward_gflop": m.forward_flops and m.forward_flops / 1e9,
                "step_gflop": m.step_flops and m.step_flops / 1e9, "gflop_per_second": rate(m)})
    train = c.mode == "train"
    row.update(ratio_columns("share_of_peak", share_of_peak(m, s.find("probe", "gemm")) if train else None))
    seconds = time_by_kind(m.profile) if m.profile else {}
    total = sum(seconds.values())
    row["profiled_ms"] = 1000 * total if seconds else None
    row.update({f"time_share_{kind.replace(' & ', '_').replace(' ', '_')}": seconds[kind] / total if seconds else None
                for kind in OP_KINDS})
    return row


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
