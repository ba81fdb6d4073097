"""Add the ``baseline`` field (true for a variant that adapts no layer) to run records written before
the runner recorded it. Nothing else in a record changes, so config hashes and skip-on-rerun stay as
they were; a record that already has the field is left alone. Idempotent.

    python -m experiments.add_baseline_field              # every results/*/runs/*.json of this repo
    python -m experiments.add_baseline_field path/to/results
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import variants
from variants.files import write_atomically

from .runner import REPO_ROOT


def with_baseline_field(record: dict) -> dict:
    """The record with ``baseline`` inserted right after ``variant`` (key order otherwise kept)."""
    is_baseline = variants.lookup(record["variant"]).is_baseline
    updated = {}
    for key, value in record.items():
        updated[key] = value
        if key == "variant":
            updated["baseline"] = is_baseline
    return updated


def migrate(root) -> int:
    """Rewrite every record under ``root`` that lacks the field; returns how many were changed."""
    changed = 0
    for path in sorted(Path(root).glob("**/runs/*.json")):
        record = json.loads(path.read_text())
        if "baseline" in record or "variant" not in record:
            continue
        write_atomically(path, json.dumps(with_baseline_field(record), indent=1, default=str))
        changed += 1
    return changed


if __name__ == "__main__":
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO_ROOT / "results"
    print(f"added 'baseline' to {migrate(folder)} record(s) under {folder}")
