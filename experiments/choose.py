"""A study-wide choice made on the selection split: which value of one setting (e.g. ``pooling``) every
later stage of a study uses, and whether a shorter epoch budget would have done as well.

    python -m experiments.choose results/second_edition/head --setting pooling \\
        --prefer model,mean,trainable --within 1.0 --shorter-epochs 3 --out results/second_edition/head/choice.yaml

The rule, fixed before the runs (results/second_edition/README.md, stage 1):
- in each (task, variant) cell, a value's score is the MEDIAN selection score over its seeds, in points
  (x100); a run that did not fit or did not generalise counts with the score it got;
- a value's overall score is the MEAN of its cell scores; every value must have been run in every cell;
- the highest overall score wins, except that, of the values within ``--within`` points of it, the one
  listed first in ``--prefer`` wins (list the values that change the model least first);
- epochs: for the chosen value, the gain of each cell's median selection score from the end of epoch
  ``--shorter-epochs`` to the end of the run; if no cell gains more than ``--within`` points, the shorter
  budget is enough, otherwise the records' own budget is kept.
Dev scores are never looked at. Reads the JSON records only (no torch).
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import yaml

from experiments.tune import FIXED, cells_of, read_records

#: record fields that must agree within one (task, variant) cell, besides those of the tuning rule
SAME_IN_A_CELL = FIXED + ("lr", "head_lr")


def selection_at_epoch(record: dict, epoch: float) -> float | None:
    """The selection score the run had at the end of ``epoch`` (its learning curve), or None."""
    for point in record.get("learning_curve") or []:
        if point.get("selection") is not None and abs(point["epoch"] - epoch) < 1e-6:
            return float(point["selection"])
    return None


def _cells(records: list[dict], setting: str) -> dict[tuple, dict]:
    """{(task, variant): {value: [records]}} of the records with a selection score."""
    scored = [record for record in records if record.get("selection_score") is not None]
    lacking = [record for record in scored if setting not in record]
    if lacking:
        raise ValueError(f"the records have no field {setting!r}; fields: {', '.join(sorted(lacking[0]))}")
    same = tuple(f for f in SAME_IN_A_CELL if f != setting)
    cells: dict[tuple, dict] = {}
    for key, cell in cells_of(scored, same, f"{setting} and the seed").items():
        for record in cell:
            cells.setdefault(key, {}).setdefault(record.get(setting), []).append(record)
    return cells


def choose(cells: dict[tuple, dict], setting: str, prefer: list, within: float) -> dict:
    """From ``_cells(records, setting)``: {cells: {(task, variant): {value: median points}}, overall:
    {value: mean points}, chosen: value, best: value with the highest overall score, runs: {value: count}}."""
    if not cells:
        raise ValueError("no successful records with a selection_score (run the stage with "
                         "data.selection_fraction set)")
    values = sorted({value for per_value in cells.values() for value in per_value}, key=str)
    unknown = [value for value in values if value not in prefer]
    if unknown:
        raise ValueError(f"--prefer does not list {', '.join(map(str, unknown))}; the records have "
                         f"{', '.join(map(str, values))}")
    scores = {}
    for key, per_value in sorted(cells.items()):
        missing = [str(value) for value in values if value not in per_value]
        if missing:
            raise ValueError(f"{key[1]} on {key[0]} has no run with {setting} = {', '.join(missing)}: every "
                             "value must be run in every cell")
        scores[key] = {value: 100 * statistics.median(r["selection_score"] for r in per_value[value])
                       for value in values}
    overall = {value: statistics.fmean(cell[value] for cell in scores.values()) for value in values}
    best = max(values, key=lambda value: overall[value])
    close = [value for value in values if overall[value] >= overall[best] - within]
    chosen = min(close, key=prefer.index)
    runs = {value: sum(len(per_value[value]) for per_value in cells.values()) for value in values}
    return {"cells": scores, "overall": overall, "chosen": chosen, "best": best, "runs": runs}


def epoch_gains(cells: dict[tuple, dict], setting: str, value, shorter: float) -> dict[tuple, dict]:
    """{(task, variant): {at_shorter, at_end, gain, epochs}} in points, medians over seeds, for ``value``."""
    gains = {}
    for key, per_value in sorted(cells.items()):
        runs = per_value.get(value, [])
        early = [selection_at_epoch(record, shorter) for record in runs]
        if not runs or any(score is None for score in early):
            raise ValueError(f"{key[1]} on {key[0]}: a run with {setting} = {value} has no selection score at "
                             f"epoch {shorter:g} in its learning curve")
        at_shorter = 100 * statistics.median(early)
        at_end = 100 * statistics.median(record["selection_score"] for record in runs)
        gains[key] = {"at_shorter": at_shorter, "at_end": at_end, "gain": at_end - at_shorter,
                      "epochs": runs[0].get("epochs")}
    return gains


def markdown(choice: dict, setting: str) -> str:
    values = list(choice["overall"])
    lines = [f"| task | variant | {' | '.join(f'{setting} = {v}' for v in values)} |",
             "|---|---|" + "---:|" * len(values)]
    for (task, variant), cell in choice["cells"].items():
        lines.append(f"| {task} | {variant} | {' | '.join(f'{cell[v]:.2f}' for v in values)} |")
    overall, runs = choice["overall"], choice["runs"]
    lines.append(f"| **mean** | | {' | '.join(f'**{overall[v]:.2f}**' for v in values)} |")
    lines.append(f"| runs | | {' | '.join(str(runs[v]) for v in values)} |")
    return "\n".join(lines)


def epochs_markdown(gains: dict, shorter: float) -> str:
    lines = [f"| task | variant | selection at epoch {shorter:g} | at the end | gain |", "|---|---|---:|---:|---:|"]
    for (task, variant), row in gains.items():
        lines.append(f"| {task} | {variant} | {row['at_shorter']:.2f} | {row['at_end']:.2f} | {row['gain']:+.2f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.choose", description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", help="the stage's results folder (e.g. results/second_edition/head)")
    parser.add_argument("--setting", required=True, help="the record field to choose a value of (e.g. pooling)")
    parser.add_argument("--prefer", required=True,
                        help="every value, comma-separated, the one that changes the model least first")
    parser.add_argument("--within", type=float, default=1.0,
                        help="points (x100) within which the preferred value wins, and the largest epoch gain "
                             "that still allows the shorter budget (default 1.0)")
    parser.add_argument("--shorter-epochs", type=float, default=None,
                        help="also check whether this epoch budget would have done as well")
    parser.add_argument("--out", help="YAML file to write the choice to")
    args = parser.parse_args(argv)
    prefer = [value.strip() for value in args.prefer.split(",") if value.strip()]
    try:
        cells = _cells(read_records(args.folder), args.setting)
        choice = choose(cells, args.setting, prefer, args.within)
        gains = (epoch_gains(cells, args.setting, choice["chosen"], args.shorter_epochs)
                 if args.shorter_epochs else None)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"Median selection score over seeds (points) per cell, by {args.setting}:\n")
    print(markdown(choice, args.setting))
    chosen, best = choice["chosen"], choice["best"]
    reason = ("the highest mean" if chosen == best else
              f"within {args.within:g} points of the highest ({best}, {choice['overall'][best]:.2f}) and "
              "listed before it in --prefer")
    print(f"\nchosen: {args.setting} = {chosen} ({choice['overall'][chosen]:.2f}: {reason})")
    result = {args.setting: chosen}
    if gains is not None:
        print(f"\nFor {args.setting} = {chosen}, median selection score over seeds:\n")
        print(epochs_markdown(gains, args.shorter_epochs))
        budgets = {row["epochs"] for row in gains.values()}
        largest = max(row["gain"] for row in gains.values())
        enough = largest <= args.within
        epochs = args.shorter_epochs if enough else (budgets.pop() if len(budgets) == 1 else None)
        if epochs is not None and float(epochs).is_integer():
            epochs = int(epochs)
        print(f"\nepochs: {epochs} (the largest gain after epoch {args.shorter_epochs:g} is {largest:+.2f} points, "
              f"{'at most' if enough else 'more than'} {args.within:g})")
        result["epochs"] = epochs
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        command = " ".join(["python -m experiments.choose", *(argv if argv is not None else sys.argv[1:])])
        out.write_text(f"# Written by {command}\n" + yaml.safe_dump(result, sort_keys=True))
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
