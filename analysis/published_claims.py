"""Published claims, tested on a study's records: "confirmed", "refuted" or "not resolved at this power".

    python -m analysis claims results/second_edition/published_claims.yaml [--target this-dev-set]
    python -m analysis claims register results/second_edition/published_claims.yaml

The claims file (YAML) names each claim, its source, which results folder tests it (relative to the
file), the two configurations it compares and how::

    margin: 1.5                 # points ×100: "≈" means within ±margin
    split: validation           # scored on dev (default)
    claims:
      - claim: LoRA matches full fine-tuning
        source: Hu et al. 2021
        results: final
        variant: lora             # a variant name, or column values, e.g. {variant: rslora, rank: 256}
        reference: full           # the same, or constant: the majority class ("learns the task")
        test: equivalent          # equivalent | better | non-inferior
        tasks: [mrpc, cola]       # optional: judge it on these tasks only (default: every task)

Each claim is judged per task on the rows of ``analysis.compare``'s table that compare its two
configurations: the table of every configuration in the claim's results folder against the claim's
reference, on the claim's split, for the target of inference chosen (``--target``: "new examples", the
default, or "this dev set"). That is the table ``python -m analysis FOLDER --compare REFERENCE`` prints
(for a reference given by column values, ``analysis.compare(..., reference={...})``): the same family,
the same family interval (level 1 - 0.05 / m over its m rows) and one rule set, ``analysis.verdicts``.
A task's verdict is ``verdicts.claim_verdict`` of that row's family interval:

- ``better`` (variant > reference): confirmed when the interval lies above 0, refuted when it lies
  below 0 (the row ``--compare`` calls "worse");
- ``equivalent`` (variant ≈ reference): confirmed when the interval lies inside ±margin, refuted when it
  lies wholly beyond it;
- ``non-inferior`` (variant ≥ reference - margin): confirmed when the interval lies above -margin,
  refuted when it lies below -margin.

So a claims row cannot contradict its ``--compare`` row: what ``--compare`` calls equivalent is
non-inferior here too. A claim is confirmed when it is confirmed on every task it was tested on,
refuted when it is refuted on at least one, and otherwise "not resolved at this power"; every
statement of the family holds its family-wise error at 5 %, so these claim verdicts do too.
``detectable`` is the largest over its tasks of the smallest true difference its family interval would
find with 80 % power.

Registration (``analysis.registration``): ``claims register`` records the file's sha256, the time and
its claims in each results folder it names; from then on the claims command says for each claim
whether it is registered, how many of the runs it uses were made before that (all of them: registered
after the fact), and whether the file changed since (claims added, tests edited, claims removed).

The claims file may also list published dev scores of other checkpoints, to judge the recipe by its
baseline (``published_scores_table``)::

    published_scores:
      results: final
      variant: full             # whose scores stand beside the published ones
      checkpoints:
        - model: DistilBERT
          source: Sanh et al. 2019
          scores: {mrpc: 87.5, cola: 51.3}    # ×100, as published
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from . import registration, stats, verdicts
from .comparison import CONSTANT, compare, format_p_value, grouping_columns, load_predictions, rows_matching
from .plots import config_label
from .tables import default_grouping, format_number, load_results, ok_runs, ordered_tasks

#: how a claim compares its two configurations
TESTS = verdicts.TESTS
#: the keys a claim may hold, and those it must
CLAIM_KEYS = ("claim", "source", "results", "variant", "reference", "test", "margin", "split", "tasks")
REQUIRED_KEYS = ("claim", "source", "results", "variant", "reference", "test")
#: the keys of a claims file's ``published_scores`` section, and of each of its checkpoints
PUBLISHED_KEYS = ("results", "variant", "checkpoints")
CHECKPOINT_KEYS = ("model", "source", "scores")


def load_claims(path: str | os.PathLike) -> tuple[list[dict], Path]:
    """The claims of a claims file, each completed with the file's margin and split; and the folder
    that their ``results`` are relative to. Raises ValueError naming what is wrong."""
    path = Path(path)
    content = _read_yaml(path)
    if not isinstance(content, dict) or not isinstance(content.get("claims"), list) or not content["claims"]:
        raise ValueError(f"{path} must hold a non-empty list under 'claims:'")
    defaults = {"margin": float(content.get("margin", 1.5)), "split": content.get("split", "validation")}
    claims = []
    for number, claim in enumerate(content["claims"], 1):
        where = f"{path}, claim {number}"
        if not isinstance(claim, dict):
            raise ValueError(f"{where}: a claim is a mapping of {list(CLAIM_KEYS)}, got {claim!r}")
        unknown = sorted(set(claim) - set(CLAIM_KEYS))
        missing = [key for key in REQUIRED_KEYS if key not in claim]
        if unknown or missing:
            raise ValueError(f"{where}: unknown key(s) {unknown}, missing key(s) {missing}; "
                             f"a claim holds {list(CLAIM_KEYS)} ({list(REQUIRED_KEYS)} required)")
        if claim["test"] not in TESTS:
            raise ValueError(f"{where}: unknown test {claim['test']!r}; choose among {list(TESTS)}")
        tasks = claim.get("tasks")
        if tasks is not None and (not isinstance(tasks, list) or not tasks
                                  or not all(isinstance(task, str) for task in tasks)):
            raise ValueError(f"{where}: tasks must be a list of task names (default: every task), got {tasks!r}")
        for key in ("variant", "reference"):
            if not isinstance(claim[key], (str, dict)) or not claim[key]:
                raise ValueError(f"{where}: {key} must be a variant name or a mapping of column values, "
                                 f"got {claim[key]!r}")
        claims.append({**defaults, **claim})
    return claims, path.parent


def _read_yaml(path: Path):
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ValueError(f"{path} is not valid YAML: {error}") from error


def check_claims(path: str | os.PathLike, target: str = "new-examples") -> pd.DataFrame:
    """One row per (claim, task, compared configuration): the paired difference and the verdict.

    Columns: ``claim``, ``source``, ``test``, ``margin``, ``task``, ``configuration``, ``vs``,
    ``n_seeds``, ``difference``, ``ci_low``, ``ci_high`` (95 %, for reading), ``family_size``,
    ``family_level``, ``family_low``, ``family_high`` (the interval the verdict reads), ``p_value``
    (two-sided, no difference), ``p_adjusted`` (Bonferroni over the family), ``detectable``,
    ``params_ratio`` (median trainable parameters of the reference over the variant's), ``verdict``,
    ``note``, and the claim's registration (``registration.claim_status``): ``registered``,
    ``runs_used``, ``runs_before_registration``, ``since_registration``."""
    target = stats.target_of(target)
    claims, base = load_claims(path)
    loaded, families, rows = {}, {}, []
    for claim in claims:
        folder = base / claim["results"]
        if folder not in loaded:
            df = load_results(folder) if folder.is_dir() else pd.DataFrame({"status": []})
            loaded[folder] = (df, load_predictions(df) if not ok_runs(df).empty else None)
        df, predictions = loaded[folder]
        if predictions is None:  # a stage not run yet (or a misspelt folder: the note names it)
            claim_rows = [{**_row(claim), "verdict": "not tested", "note": f"no successful records under {folder}"}]
            runs = pd.DataFrame({"task": [], "timestamp": []})
        else:
            runs = ok_runs(df)
            family = _family(claim, claims, base, runs, predictions, target, families)
            claim_rows = _claim_rows(claim, family, runs)
        status = registration.claim_status(path, claim, _runs_used(claim, runs, claim_rows))
        rows += [{**row, **status} for row in claim_rows]
    table = pd.DataFrame(rows)
    table.attrs["target"] = target
    return table


def _family(claim, claims, base, runs, predictions, target, families) -> pd.DataFrame:
    """The ``compare`` table a claim's rows come from: every configuration of its results folder against
    its reference, on its split, for ``target``; one per (folder, reference, split), shared by the
    claims that name it (their named settings label its rows)."""
    def key(of):
        return base / of["results"], _spec_key(of["reference"]), of["split"]

    if key(claim) not in families:
        for spec in (claim["variant"], claim["reference"]):
            if spec != CONSTANT and not _matches(runs, spec).any():
                name = "variant" if spec is claim["variant"] else "reference"
                raise ValueError(f"claim {claim['claim']!r}: no successful run matches its {name} {spec!r}")
        sharing = [other for other in claims if key(other) == key(claim)]
        named = [name for other in sharing for spec in (other["variant"], other["reference"])
                 if isinstance(spec, dict) for name in spec]
        by = list(dict.fromkeys([*default_grouping(runs), *named]))
        families[key(claim)] = compare(runs, predictions, reference=claim["reference"], split=claim["split"],
                                margin=claim["margin"], by=by, target=target)
    return families[key(claim)]


def _spec_key(spec) -> str:
    return spec if isinstance(spec, str) else repr(sorted(spec.items()))


def _claim_rows(claim, family, runs) -> list[dict]:
    table = family[_matches(family, claim["variant"])]
    if claim.get("tasks"):  # the claim is about these tasks; the family stays the folder's whole table
        table = table[table["task"].isin(claim["tasks"])]
    variant_mask, reference_mask = _matches(runs, claim["variant"]), _matches(runs, claim["reference"])
    keys = grouping_columns(family)
    rows = []
    for _, row in table.iterrows():
        on_task = runs["task"] == row["task"]
        params = [runs.loc[mask & on_task, "trainable_params"].median() for mask in (reference_mask, variant_mask)]
        params[0] = np.nan if claim["reference"] == CONSTANT else params[0]
        tested = np.isfinite(row["difference"])
        rows.append({**_row(claim), "task": row["task"], "configuration": config_label(row, keys),
                     "vs": row["reference"], "n_seeds": row["n_seeds"], "difference": row["difference"],
                     "ci_low": row["ci_low"], "ci_high": row["ci_high"], "family_size": family.attrs["family_size"],
                     "family_level": family.attrs["family_level"], "family_low": row["family_low"],
                     "family_high": row["family_high"], "p_value": row["p_value"], "p_adjusted": row["p_adjusted"],
                     "detectable": row["detectable"],
                     "params_ratio": params[0] / params[1] if params[1] else np.nan,
                     "verdict": verdicts.claim_verdict(claim["test"], row["family_low"], row["family_high"],
                                                       claim["margin"]) if tested else "not tested",
                     "note": row["note"]})
    if not rows and claim.get("tasks"):  # its tasks not run yet
        return [{**_row(claim), "verdict": "not tested",
                 "note": f"no comparison on {', '.join(claim['tasks'])} in {claim['results']} yet"}]
    if not rows:
        raise ValueError(f"claim {claim['claim']!r}: nothing to compare (no task holds both "
                         f"{claim['variant']!r} and {claim['reference']!r})")
    return rows


def _runs_used(claim, runs, claim_rows) -> pd.DataFrame:
    """The ok runs a claim's verdicts rest on: its two configurations' runs on the tasks it was tested on."""
    tested = {row["task"] for row in claim_rows if row["verdict"] != "not tested"}
    if runs.empty or not tested:
        return runs.iloc[:0]
    mask = (_matches(runs, claim["variant"]) | _matches(runs, claim["reference"])) & runs["task"].isin(tested)
    return runs[mask]


def _row(claim) -> dict:
    """A claims-table row with the claim's own columns filled and its numbers missing."""
    spec = claim["variant"]
    return {"claim": claim["claim"], "source": claim["source"], "test": claim["test"], "margin": claim["margin"],
            "task": "–", "configuration": spec if isinstance(spec, str) else config_label(spec, list(spec)),
            "vs": claim["reference"] if isinstance(claim["reference"], str)
            else config_label(claim["reference"], list(claim["reference"])),
            "n_seeds": 0, "difference": np.nan, "ci_low": np.nan, "ci_high": np.nan, "family_size": 0,
            "family_level": np.nan, "family_low": np.nan, "family_high": np.nan, "p_value": np.nan,
            "p_adjusted": np.nan, "detectable": np.nan, "params_ratio": np.nan, "verdict": None, "note": ""}


def summarize_claims(table: pd.DataFrame) -> pd.DataFrame:
    """One row per claim: its overall verdict, how its tasks went, the largest detectable difference,
    and its registration (when the table holds it)."""
    rows = []
    for claim, rows_of_claim in table.groupby("claim", sort=False):
        verdicts_ = rows_of_claim["verdict"]
        tested = verdicts_[verdicts_ != "not tested"]
        refuted = rows_of_claim.loc[verdicts_ == "refuted", "task"].tolist()
        if tested.empty:
            overall = "not tested"
        elif refuted:
            overall = "refuted"
        elif (tested == "confirmed").all():
            overall = "confirmed"
        else:
            overall = "not resolved at this power"
        counts = ", ".join(f"{(verdicts_ == v).sum()} {v}" for v in ("confirmed", "refuted", "not resolved",
                                                                      "not tested") if (verdicts_ == v).any())
        first = rows_of_claim.iloc[0]
        symbol = {"better": ">", "equivalent": "≈", "non-inferior": "≥"}[first["test"]]
        row = {"claim": claim, "source": first["source"],
               "tested as": f"{first['configuration']} {symbol} {first['vs']}"
                            + ("" if first["test"] == "better" else f" (margin ±{first['margin']:g})"),
               "verdict": overall, "tasks": counts, "refuted on": ", ".join(refuted) or "–",
               "detectable (80 % power)": format_number(rows_of_claim["detectable"].max(), 1),
               "params ratio": format_number(rows_of_claim["params_ratio"].median(), 1)}
        if "registered" in first:
            row.update({"registered": first["registered"],
                        "runs made before registration": first["runs_before_registration"],
                        "since registration": first["since_registration"]})
        rows.append(row)
    return pd.DataFrame(rows)


def format_claims(table: pd.DataFrame) -> pd.DataFrame:
    """``check_claims``'s table for reading: one line per (claim, task)."""
    rows = []
    for _, row in table.iterrows():
        tested = np.isfinite(row["difference"])
        rows.append({"claim": row["claim"], "task": row["task"],
                     "compared": f"{row['configuration']} vs {row['vs']}", "seeds": int(row["n_seeds"]),
                     "Δ ×100 [95 % CI]": "–" if not tested else
                     f"{row['difference']:+.1f} [{row['ci_low']:+.1f}, {row['ci_high']:+.1f}]",
                     "family CI (level, of m)": "–" if not tested else
                     f"[{row['family_low']:+.1f}, {row['family_high']:+.1f}] "
                     f"({format_number(100 * row['family_level'], 2)} %, of {row['family_size']})",
                     "p (adj.)": format_p_value(row["p_adjusted"]),
                     "detectable": format_number(row["detectable"], 1), "verdict": row["verdict"],
                     "note": row["note"] if isinstance(row["note"], str) else ""})
    return pd.DataFrame(rows)


def _matches(frame: pd.DataFrame, spec) -> pd.Series:
    """Rows of ``frame`` that a claim's variant or reference names: a variant name, or column values."""
    if spec == CONSTANT:  # compared with, never a run
        return pd.Series(False, index=frame.index)
    spec = {"variant": spec} if isinstance(spec, str) else spec
    for key in spec:
        if key not in frame:
            raise ValueError(f"unknown column {key!r} in {spec}; choose among {sorted(frame.columns)}")
    return rows_matching(frame, spec)


def published_scores_table(path: str | os.PathLike) -> pd.DataFrame | None:
    """A claims file's ``published_scores``: per task, our variant's dev score (main metric ×100, mean ±
    half its 95 % t interval over seeds, and the task's other recorded metrics), and beside it each
    published checkpoint's score and our mean minus it. None when the file lists no published scores.
    Raises ValueError naming what is wrong."""
    path = Path(path)
    content = _read_yaml(path)
    section = content.get("published_scores") if isinstance(content, dict) else None
    if section is None:  # (a file that is no mapping at all: load_claims says so)
        return None
    where = f"{path}, published_scores"
    if not isinstance(section, dict) or sorted(section) != sorted(PUBLISHED_KEYS):
        raise ValueError(f"{where}: must hold exactly {list(PUBLISHED_KEYS)}, got {section!r}")
    checkpoints = section["checkpoints"]
    if not isinstance(checkpoints, list) or not checkpoints or not all(
            isinstance(c, dict) and sorted(c) == sorted(CHECKPOINT_KEYS) and isinstance(c["scores"], dict)
            and all(isinstance(score, (int, float)) for score in c["scores"].values()) for c in checkpoints):
        raise ValueError(f"{where}: checkpoints must be a list of {list(CHECKPOINT_KEYS)} with scores "
                         f"a mapping of task to a number, got {checkpoints!r}")
    folder = path.parent / section["results"]
    runs = ok_runs(load_results(folder)) if folder.is_dir() else pd.DataFrame()
    ours = runs[runs["variant"] == section["variant"]] if not runs.empty else runs
    if ours.empty:
        raise ValueError(f"{where}: no successful {section['variant']!r} run under {folder}")
    published = {task for checkpoint in checkpoints for task in checkpoint["scores"]}
    rows = []
    for task in ordered_tasks(set(ours["task"]) | published):
        on_task = ours[ours["task"] == task]
        scores = 100 * on_task["main_score"].to_numpy(float)
        mean = float(np.mean(scores)) if len(scores) else np.nan
        row = {"task": task, "metric": ", ".join(sorted(set(on_task["main_metric"].astype(str)))) or "–",
               "seeds": len(scores),
               f"{section['variant']} (ours, mean ± 95 % CI)":
                   "–" if not len(scores) else
                   f"{mean:.1f} ± {format_number(stats.mean_interval_half_width(scores), 1)}",
               "other metrics (ours, mean)": _other_metrics(on_task)}
        for checkpoint in checkpoints:
            value = checkpoint["scores"].get(task)
            value = np.nan if value is None else float(value)
            row[checkpoint["model"]] = format_number(value, 1)
            row[f"ours - {checkpoint['model']}"] = "–" if np.isnan(value) or np.isnan(mean) else f"{mean - value:+.1f}"
        rows.append(row)
    return pd.DataFrame(rows)


def _other_metrics(runs: pd.DataFrame) -> str:
    """The mean ×100 of every metric ``runs`` recorded besides their main one, e.g. 'f1 86.6'."""
    main_metrics = set(runs["main_metric"].astype(str))
    others = [column for column in sorted(runs) if column.startswith("metric.") and runs[column].notna().any()
              and column.removeprefix("metric.") not in main_metrics]
    return ", ".join(f"{column.removeprefix('metric.')} {100 * runs[column].mean():.1f}" for column in others) or "–"
