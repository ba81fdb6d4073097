"""How much of a sweep is done: the runs a ``python run.py -m ...`` command would make, each marked done
(a successful record exists), running (a live claim: another launcher trains it now, see
``experiments.claims``) or missing, without loading data or a model.

    python -m experiments.progress experiment=glue_table
    python -m experiments.progress experiment=glue_table seed=0 task=mrpc,rte

Takes the same overrides as ``run.py -m``: the preset's sweep (``hydra.sweeper.params``) with the
command line's values in place of the preset's for the same key, as Hydra's basic sweeper does.
Runs that are the same configuration (a baseline in a rank sweep) count once.
"""
from __future__ import annotations

import itertools
import shlex
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from . import claims, results
from .checks import normalized
from .overrides import CONF_DIR, OverrideError, check


def _values(override) -> list[str]:
    """A parsed override's values: ``a,b`` and ``[a,b],[c]`` as Hydra reads them, else the one value."""
    if override.is_sweep_override():
        return list(override.sweep_string_iterator())
    return [override.get_value_element_as_str()]


def sweep(overrides: list[str], conf_dir: Path = CONF_DIR) -> dict[str, list[str]]:
    """Each swept key and its values: the preset's ``hydra.sweeper.params``, then the command line."""
    parser = OverridesParser.create()
    parsed = [(override, parser.parse_override(override)) for override in overrides]
    fixed = [override for override, p in parsed if not p.is_sweep_override()]
    with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
        cfg = compose("config", overrides=fixed, return_hydra_config=True)
    # the command line first, so that a missing run reads like its command
    keys = {override.split("=", 1)[0]: _values(p) for override, p in parsed}
    for key, value in (cfg.hydra.sweeper.params or {}).items():
        keys.setdefault(key, _values(parser.parse_override(f"{key}={value}")))
    return keys


def planned_runs(overrides: list[str], conf_dir: Path = CONF_DIR) -> list[tuple[list[str], dict]]:
    """(overrides, resolved and normalized config) of every run the sweep makes, in the sweep's order."""
    keys = sweep(overrides, conf_dir)
    runs = []
    with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
        for values in itertools.product(*keys.values()):
            point = [f"{key}={value}" for key, value in zip(keys, values)]
            cfg = OmegaConf.to_container(compose("config", overrides=point), resolve=True)
            runs.append((point, normalized(cfg)))
    return runs


def states(overrides: list[str], conf_dir: Path = CONF_DIR) -> list[tuple[list[str], str, claims.Claim | None]]:
    """(overrides, state, claim) of each distinct run of the sweep: ``done`` (a successful record),
    ``running`` (no record yet, a live claim: the claim says who runs it) or ``missing``."""
    rows, seen = [], set()
    for point, cfg in planned_runs(overrides, conf_dir):
        run_hash = results.config_hash(cfg)
        if run_hash in seen:
            continue
        seen.add(run_hash)
        folder = cfg["results"]["dir"]
        if results.has_successful_record(folder, run_hash):
            rows.append((point, "done", None))
            continue
        claim = claims.live_claim(folder, run_hash, claims.seconds(cfg["results"].get("stale_claim_after")))
        rows.append((point, "running" if claim else "missing", claim))
    return rows


def progress(overrides: list[str], conf_dir: Path = CONF_DIR) -> tuple[list[list[str]], list[list[str]]]:
    """(done, not done): the distinct runs of the sweep, as their overrides; ``states`` tells the
    running ones from the missing ones."""
    rows = states(overrides, conf_dir)
    return [p for p, state, _ in rows if state == "done"], [p for p, state, _ in rows if state != "done"]


def main(argv: list[str]) -> int:
    try:
        check(argv)
    except OverrideError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        rows = states(argv)
    except (ValueError, FileNotFoundError) as error:  # e.g. a final preset before its tuned file exists
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
