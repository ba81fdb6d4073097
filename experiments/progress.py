"""How much of a sweep is done: the runs a ``python run.py -m ...`` command would make, each marked done
(a successful record exists), running (a live claim: another launcher trains it now, see
``experiments.records.locks``) or missing, without loading data or a model.

    python -m experiments.progress experiment=glue_table
    python -m experiments.progress experiment=glue_table seed=0 task=mrpc,rte

Takes the same overrides as ``run.py -m``: the preset's sweep (``hydra.sweeper.params``) with the
command line's values in place of the preset's for the same key, as Hydra's basic sweeper does.
Runs that are the same configuration (a baseline in a rank sweep) count once.
"""
from __future__ import annotations

import shlex
import sys

from .config import ConfigError, planned_runs
from .config.command_line import check_overrides
from .records import locks, store


def states(overrides: list[str]) -> list[tuple[list[str], str, locks.Claim | None]]:
    """(overrides, state, claim) of each distinct run of the sweep: ``done`` (a successful record),
    ``running`` (no record yet, a live claim: the claim says who runs it) or ``missing``."""
    rows, seen = [], set()
    for point, config in planned_runs(["-m", *overrides], check_files=False):
        run_hash = config.config_hash
        if run_hash in seen:
            continue
        seen.add(run_hash)
        folder = config.results.dir
        if store.has_successful_record(folder, run_hash):
            rows.append((point, "done", None))
            continue
        claim = locks.live_claim(folder, run_hash, config.results.stale_claim_after)
        rows.append((point, "running" if claim else "missing", claim))
    return rows


def progress(overrides: list[str]) -> tuple[list[list[str]], list[list[str]]]:
    """(done, not done): the distinct runs of the sweep, as their overrides; ``states`` tells the
    running ones from the missing ones."""
    rows = states(overrides)
    return [p for p, state, _ in rows if state == "done"], [p for p, state, _ in rows if state != "done"]


def main(argv: list[str]) -> int:
    try:
        check_overrides(["-m", *argv])  # typos first, with their "did you mean"
        rows = states(argv)
    except ConfigError as error:  # a typo, a bad value, a final preset before its tuned file exists
        print(f"error: {error}", file=sys.stderr)
        return 2
    done, running, missing = ([row for row in rows if row[1] == state] for state in ("done", "running", "missing"))
    print(f"{len(done)} of {len(rows)} runs done, {len(running)} running, {len(missing)} missing")
    if running:
        print("running now (claimed by a live run):")
    for point, _, claim in running:
        print("  python run.py", " ".join(map(shlex.quote, point)), f"  # {claim.describe()}")
    if running and missing:
        print("missing:")
    for point, _, _ in missing:
        print("  python run.py", " ".join(map(shlex.quote, point)))
    if missing:
        print("(each needs the data too, e.g. data.glue_dir=../shared/glue; a sweep command runs them all and "
              "skips what is done)")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except BrokenPipeError:  # piped into head: the reader has what it wanted
        sys.stderr.close()
        sys.exit(0)
