"""Registration: a claims file's tests recorded, with the time, so that anyone can check whether they
were fixed before the runs that test them.

    python -m analysis claims register results/second_edition/published_claims.yaml

appends one entry to ``claims_registration.yaml`` in every results folder the file's claims name
(creating the folder when no run exists yet): the claims file (its path relative to that folder), its
sha256, the time (UTC) and its claims as they stood (each with the file's margin and split filled in).
Commit that file with the claims file. From then on the claims command says, for each claim:

- ``registered``: when the claim, exactly as it stands now, was first registered ("no" when it never
  was, or was added or edited after its file's registration);
- ``runs_before_registration``: how many of the runs its verdicts rest on finished before that time,
  of how many ("0 of 50" is a test fixed in advance; "50 of 50" one registered after the fact);
- ``since_registration``: whether the file changed after its last registration, and how (claims added,
  tests edited, claims removed).

Registering a file again after a change appends a new entry; a claim keeps the time of the first entry
that holds it unchanged. A run's time is its record's ``timestamp`` (when it finished).
"""
from __future__ import annotations

import hashlib
import os
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import yaml

#: the file each results folder keeps its registrations in
REGISTRATION_FILE = "claims_registration.yaml"
HEADER = ("# Claims registered for the runs in this folder, one entry per registration:\n"
          "#   python -m analysis claims register CLAIMS.yaml\n"
          "# Written by that command; the claims command compares each claims file with its entries.\n")


def register(claims_path: str | os.PathLike, now: datetime | None = None) -> list[tuple[Path, str]]:
    """Register the claims file ``claims_path`` now (``now``: a UTC time, for tests): one entry in the
    registration file of every results folder its claims name. Returns (registration file, what was
    done) per folder; a folder whose last entry for this file has the same sha256 is left as it is."""
    from .published_claims import load_claims

    claims_path = Path(claims_path)
    claims, base = load_claims(claims_path)  # refuses a file the claims command would refuse
    digest = sha256(claims_path)
    stamp = _time_text(now or datetime.now(timezone.utc))
    done = []
    for folder in dict.fromkeys(base / claim["results"] for claim in claims):
        file = folder / REGISTRATION_FILE
        entries = read_entries(file)
        own = _entries_for(entries, file, claims_path)
        if own and own[-1]["sha256"] == digest:
            done.append((file, f"already registered on {own[-1]['registered_at']} (unchanged)"))
            continue
        entries.append({"claims_file": Path(os.path.relpath(claims_path.resolve(), folder.resolve())).as_posix(),
                        "sha256": digest, "registered_at": stamp, "claims": claims})
        folder.mkdir(parents=True, exist_ok=True)
        file.write_text(HEADER + yaml.safe_dump({"registrations": entries}, sort_keys=False, allow_unicode=True,
                                                 width=110), encoding="utf-8")
        done.append((file, f"registered at {stamp}" + (" (again: the file changed)" if own else "")))
    return done


def claim_status(claims_path: str | os.PathLike, claim: dict, runs_used: pd.DataFrame) -> dict:
    """The registration of one claim of ``claims_path`` (as ``load_claims`` completed it): the
    columns ``registered``, ``runs_used``, ``runs_before_registration`` and ``since_registration`` (see
    the module docstring). ``runs_used``: the runs its verdicts rest on (with their ``timestamp``)."""
    claims_path = Path(claims_path)
    file = claims_path.parent / claim["results"] / REGISTRATION_FILE
    own = _entries_for(read_entries(file), file, claims_path)
    status = {"registered": "no", "runs_used": len(runs_used), "runs_before_registration": "–",
              "since_registration": "never registered"}
    if not own:
        return status
    holding = [entry for entry in own if claim in entry["claims"]]
    named = any(claim["claim"] == other["claim"] for entry in own for other in entry["claims"])
    if holding:
        registered = pd.Timestamp(holding[0]["registered_at"])
        before = int((pd.to_datetime(runs_used["timestamp"], utc=True) < registered).sum())
        status.update(registered=f"{registered:%Y-%m-%d %H:%M} UTC",
                      runs_before_registration=f"{before} of {len(runs_used)}")
    else:
        status["registered"] = (f"no (test edited after {own[0]['registered_at']})" if named
                                else f"no (added after {own[0]['registered_at']})")
    status["since_registration"] = describe_change(own[-1]["claims"], _current_claims(claims_path),
                                                   own[-1]["sha256"] == sha256(claims_path))
    return status


def describe_change(registered: list[dict], current: list[dict], same_file: bool) -> str:
    """How a claims file changed after its registration: "unchanged", or the claims added, the tests
    edited and the claims removed (by name), or "edited (the claims are the same)"."""
    if same_file:
        return "unchanged"
    before = {claim["claim"]: claim for claim in registered}
    now = {claim["claim"]: claim for claim in current}
    parts = [f"{label}: {', '.join(repr(name) for name in names)}" for label, names in (
        ("claims added", [name for name in now if name not in before]),
        ("tests edited", [name for name in now if name in before and now[name] != before[name]]),
        ("claims removed", [name for name in before if name not in now])) if names]
    return "changed; " + "; ".join(parts) if parts else "edited (the claims are the same)"


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def read_entries(file: Path) -> list[dict]:
    """The registrations in ``file`` ([] when it does not exist); a ValueError naming a malformed one."""
    if not file.is_file():
        return []
    try:
        content = yaml.safe_load(file.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise ValueError(f"{file} is not valid YAML: {error}") from error
    entries = content.get("registrations") if isinstance(content, dict) else None
    keys = {"claims_file", "sha256", "registered_at", "claims"}
    if not isinstance(entries, list) or not all(isinstance(e, dict) and keys <= set(e) for e in entries):
        raise ValueError(f"{file} must hold a list under 'registrations:', each with {sorted(keys)}")
    return entries


def _entries_for(entries: list[dict], file: Path, claims_path: Path) -> list[dict]:
    """The entries of ``file`` that register ``claims_path``, oldest first."""
    target = claims_path.resolve()
    return [entry for entry in entries if (file.parent / entry["claims_file"]).resolve() == target]


def _current_claims(claims_path: Path) -> list[dict]:
    from .published_claims import load_claims

    return load_claims(claims_path)[0]


def _time_text(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
