"""The tuning stage's rule: from the records of a learning-rate sweep on the selection split, pick one
setting per (task, variant) and write it where a final preset reads it.

    python run.py -m experiment=tune_lr data.glue_dir=../shared/glue          # the sweep
    python -m experiments.tune results/tuning --out results/tuning/tuned.yaml  # the choice
    python run.py -m experiment=final_table data.glue_dir=../shared/glue       # reads tuned.yaml

The rule, per (task, variant): each setting (lr, head_lr) is scored by the MEDIAN selection score
(``selection_score``, the task's main metric on the held-out part of train) over its seeds; the best
median wins, except that the lowest learning rate whose median is within one standard error (the
winner's standard deviation over seeds / sqrt(seeds)) of the best is preferred. A winner at the lowest
or highest learning rate of its grid is flagged: the grid did not bracket an optimum. Dev scores are
never looked at. Reads the JSON records only (no torch).
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

import yaml

from variants.files import write_atomically

SETTING = ("lr", "head_lr")
#: record fields that must agree within one (task, variant), so that only the learning rate is chosen
FIXED = ("model", "pooling", "rank", "alpha", "target_modules", "dropout", "epochs", "max_steps", "batch_size",
         "max_length", "warmup", "weight_decay", "max_train_samples")


def read_records(folder) -> list[dict]:
    """Successful records with a selection score under ``folder`` (its ``runs/`` or any ``**/runs/``)."""
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"results folder {str(folder)!r} does not exist")
    files = sorted(root.glob("*.json")) if root.name == "runs" else sorted(root.glob("**/runs/*.json"))
    records = []
    for path in files:
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if record.get("status") == "ok":
            records.append(record)
    return records


def cells_of(records: list[dict], same: tuple, varies: str) -> dict[tuple, list[dict]]:
    """{(task, variant): [records]} of the records with a selection score; the fields ``same`` must agree
    within a cell (``varies`` names what may differ, for the error)."""
    cells: dict[tuple, list[dict]] = {}
    for record in records:
        if record.get("selection_score") is None:
            continue
        key = (record["task"], record["variant"])
        cell = cells.setdefault(key, [])
        if cell:
            differing = [f"{f} ({cell[0].get(f)!r} and {record.get(f)!r})" for f in same
                         if cell[0].get(f) != record.get(f)]
            if differing:
                raise ValueError(f"the records of {key[1]} on {key[0]} differ in {', '.join(differing)}: only "
                                 f"{varies} may vary; point the command at one stage's folder")
        cell.append(record)
    return cells


def _grouped(records: list[dict]) -> dict[tuple, dict[tuple, list[float]]]:
    groups: dict[tuple, dict[tuple, list[float]]] = {}
    for key, cell in cells_of(records, FIXED, "the learning rate and the seed").items():
        for record in cell:
            setting = tuple(record.get(f) for f in SETTING)
            groups.setdefault(key, {}).setdefault(setting, []).append(float(record["selection_score"]))
    return groups


def choose(records: list[dict]) -> list[dict]:
    """One row per (task, variant, setting): runs, median, se, chosen (bool), edge (None, 'lowest' or
    'highest': the chosen lr is at that end of its grid)."""
    rows = []
    for (task, variant), settings in sorted(_grouped(records).items()):
        table = []
        for (lr, head_lr), scores in sorted(settings.items(), key=lambda item: (item[0][0], item[0][1] or 0)):
            se = statistics.stdev(scores) / math.sqrt(len(scores)) if len(scores) > 1 else 0.0
            table.append({"task": task, "variant": variant, "lr": lr, "head_lr": head_lr, "runs": len(scores),
                          "median": statistics.median(scores), "se": se, "chosen": False, "edge": None})
        best = max(table, key=lambda row: row["median"])  # the first (lowest lr) of equal medians
        winner = next(row for row in table if row["median"] >= best["median"] - best["se"])
        winner["chosen"] = True
        rates = [row["lr"] for row in table]
        if winner["lr"] == max(rates):
            winner["edge"] = "highest"
        if winner["lr"] == min(rates):
            winner["edge"] = "lowest"
        rows += table
    return rows


def tuned_settings(rows: list[dict]) -> dict:
    """{task: {variant: {lr, head_lr, median_selection, runs, edge}}} of the chosen rows."""
    chosen: dict = {}
    for row in rows:
        if row["chosen"]:
            chosen.setdefault(row["task"], {})[row["variant"]] = {
                "lr": row["lr"], "head_lr": row["head_lr"], "median_selection": round(row["median"], 6),
                "runs": row["runs"], "edge": row["edge"]}
    return chosen


def markdown(rows: list[dict]) -> str:
    lines = ["| task | variant | lr | head_lr | runs | median selection | se | chosen |",
             "|---|---|---:|---:|---:|---:|---:|---|"]
    for row in rows:
        mark = ""
        if row["chosen"]:
            mark = "**chosen**" + (f", at the {row['edge']} lr of the grid" if row["edge"] else "")
        lines.append(f"| {row['task']} | {row['variant']} | {row['lr']:g} | "
                     f"{'' if row['head_lr'] is None else format(row['head_lr'], 'g')} | {row['runs']} | "
                     f"{100 * row['median']:.2f} | {100 * row['se']:.2f} | {mark} |")
    return "\n".join(lines)


def chosen_markdown(rows: list[dict]) -> str:
    """The chosen rows as one variant x task table, each cell "lr (median selection score x 100)", marked
    "edge" where the chosen lr is at an end of its grid: the compact form of what tuned_settings writes."""
    chosen = {(row["variant"], row["task"]): row for row in rows if row["chosen"]}
    tasks = sorted({task for _, task in chosen})
    lines = ["| variant | " + " | ".join(tasks) + " |", "|---|" + "---:|" * len(tasks)]
    for variant in sorted({variant for variant, _ in chosen}):
        cells = []
        for task in tasks:
            row = chosen.get((variant, task))
            cells.append("" if row is None else f"{row['lr']:g} ({100 * row['median']:.1f})"
                         + (", edge" if row["edge"] else ""))
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def warnings_for(rows: list[dict]) -> list[str]:
    notes = []
    for row in rows:
        if row["chosen"] and row["edge"]:
            notes.append(f"{row['variant']} on {row['task']}: the chosen lr {row['lr']:g} is the {row['edge']} of its "
                         "grid; the grid does not bracket an optimum, widen it")
    runs: dict = {}
    for row in rows:
        runs.setdefault(row["task"], {}).setdefault(row["variant"], 0)
        runs[row["task"]][row["variant"]] += row["runs"]
    for task, per_variant in runs.items():
        if len(set(per_variant.values())) > 1:
            notes.append(f"{task}: unequal tuning budgets (runs per variant: "
                         f"{', '.join(f'{v} {n}' for v, n in sorted(per_variant.items()))})")
    return notes


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.tune", description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", help="the tuning sweep's results folder (e.g. results/tuning)")
    parser.add_argument("--out", required=True, help="the YAML file to write (train.tuned_file of a final preset)")
    args = parser.parse_args(argv)
    try:
        records = read_records(args.folder)
        rows = choose(records)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if not rows:
        print(f"error: no successful records with a selection_score under {args.folder} (run the sweep with "
              "data.selection_fraction set, e.g. experiment=tune_lr)", file=sys.stderr)
        return 2
    print(markdown(rows))
    print("\nChosen lr (median selection score ×100) per variant and task:\n")
    print(chosen_markdown(rows))
    for note in warnings_for(rows):
        print(f"warning: {note}", file=sys.stderr)
    print(f"wrote {write_tuned_file(rows, args.folder, args.out)}")
    return 0


def write_tuned_file(rows: list[dict], folder, out) -> Path:
    """The chosen rows as the YAML file ``train.tuned_file`` reads (what this command writes)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    header = (f"# Written by python -m experiments.tune {folder}: per task and variant, the learning\n"
              "# rate(s) with the best median selection score (the lowest within one standard error).\n"
              "# Read by train.tuned_file.\n")
    # atomically: a final run starting now reads the old file or the new one, never half of one
    return write_atomically(out, header + yaml.safe_dump(tuned_settings(rows), sort_keys=True))


if __name__ == "__main__":
    sys.exit(main())
