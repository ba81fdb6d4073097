"""One-off migration of the committed records to the typed configuration (issue 38).

Records written before the typed schema store their config with the variant's options under
``variant.options`` and hash options the way each variant's YAML happened to spell them: HiRA's and
VeRA's YAML repeated their defaults, so their hashes covered defaults. Now every option sits beside
the variant's name, and a config hash covers only the options that differ from their defaults
(``Variant.distinct_options``). This script rewrites each record's ``config`` in the new layout (built
with ``experiments.config.build``, so it is exactly what a new run would record), gives a record
without one its ``precision`` field, and where the hash changes (HiRA and VeRA) renames the record
and its predictions file to the new hash. Nothing else changes. Idempotent.

    python -m experiments.records.migrate_typed_config results
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from variants.files import write_atomically

from ..config import build
from ..config.precision import RECORDED
from . import store


def new_layout(config: dict) -> dict:
    config = json.loads(json.dumps(config))
    variant = config["variant"]
    if "options" in variant:
        config["variant"] = {"name": variant["name"], **variant["options"]}
    return config


def migrate(path: Path) -> str:
    """Migrate one record; returns what happened ("unchanged", "rewritten" or "renamed")."""
    record = json.loads(path.read_text())
    config = build(new_layout(record["config"]), check_files=False)
    updated = dict(record)
    updated["config"] = config.as_dict()
    updated.setdefault("precision", RECORDED[config.train.mixed_precision])
    new_hash = config.config_hash
    if new_hash == record["config_hash"]:
        if updated == record:
            return "unchanged"
        write_atomically(path, json.dumps(updated, indent=1, default=str))
        return "rewritten"
    folder = path.parent.parent
    updated["config_hash"] = new_hash
    target = store.record_path(folder, new_hash)
    if target.exists():
        raise SystemExit(f"{path}: its new name {target} is taken")
    if record.get("predictions_file"):
        old = path.parent / record["predictions_file"]
        updated["predictions_file"] = store.predictions_path(folder, new_hash).name
        old.rename(store.predictions_path(folder, new_hash))
    write_atomically(target, json.dumps(updated, indent=1, default=str))
    path.unlink()
    return "renamed"


def main(argv: list[str]) -> int:
    root = Path(argv[0]) if argv else Path("results")
    counts: dict[str, int] = {}
    for path in sorted(root.glob("**/runs/*.json")):
        outcome = migrate(path)
        counts[outcome] = counts.get(outcome, 0) + 1
    print(", ".join(f"{n} {what}" for what, n in sorted(counts.items())) or "no records")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
