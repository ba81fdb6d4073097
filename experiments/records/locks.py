"""Locks (claims): a run says in the results folder that it is training a configuration, so that a second launcher
over the same folder (a relaunched sweep, a colleague's sweep, another job of the same array) skips that
configuration instead of training it twice.

A claim is the file ``<results dir>/runs/<config hash>.claim`` (not ``.json``: readers of records never
see it). It is made with an exclusive create (``O_CREAT | O_EXCL``), so of two launchers only one gets it,
and holds the owner's host, pid, pid namespace, start time and a random token. While the run lives, a
background thread refreshes the file's modification time (the heartbeat) every tenth of ``stale_after``.
The claim is removed when the run ends in any way that lets Python clean up (success, failed record,
exception, Ctrl-C, and SIGTERM, which a held claim turns into Ctrl-C: a scheduler's time limit or a
``kill`` then frees the configuration at once, even for launchers on other hosts).

A claim is stale, and the next launcher takes it over, when its process is gone (same host and pid
namespace, pid no longer running: SIGKILL) or when it has not been refreshed for ``stale_after`` seconds
(an owner on another host that died, or lost the folder). Taking over renames the stale file to a unique
hidden name first, so that of two launchers that found the same stale claim only one replaces it.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from . import store

log = logging.getLogger(__name__)

CLAIM_SUFFIX = ".claim"
#: seconds without a heartbeat after which a claim from another host counts as abandoned
DEFAULT_STALE_AFTER = 300.0


def claim_path(results_dir, run_hash: str) -> Path:
    return Path(results_dir) / store.RUNS_FOLDER / f"{run_hash}{CLAIM_SUFFIX}"


def pid_namespace() -> str | None:
    """Which pid numbering this process lives in: pids on one host name but in two containers differ."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


def process_is_running(pid: int) -> bool:
    """Whether ``pid`` is a live process here (a zombie, killed but not yet reaped, is not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"


@dataclass
class Claim:
    """What a claim file says about the run that holds it; ``ours`` when this process made it."""
    path: Path
    token: str | None = None
    host: str | None = None
    pid: int | None = None
    pid_namespace: str | None = None
    started: str | None = None
    stale_after: float | None = None
    refreshed: float | None = None  # the file's modification time: the last heartbeat
    ours: bool = False
    raw: bytes = field(default=b"", repr=False)
    inode: int | None = field(default=None, repr=False)

    def describe(self) -> str:
        """One line: who holds it, since when, how fresh, where."""
        if self.host is None:
            owner = "an unreadable claim"
        else:
            owner = f"a run on {self.host} (pid {self.pid}) since {self.started}"
        beat = f", last heartbeat {time.time() - self.refreshed:.0f} s ago" if self.refreshed else ""
        return f"{owner}{beat} ({self.path})"

    def stale_reason(self, stale_after: float) -> str | None:
        """Why this claim is abandoned, or None while its owner may still be running."""
        limit = max(stale_after, self.stale_after or 0)  # the owner heartbeats at its own rate
        if (self.host == socket.gethostname() and self.pid_namespace == pid_namespace()
                and self.pid is not None and not process_is_running(self.pid)):
            return f"its process {self.pid} is gone"
        if self.refreshed is not None and time.time() - self.refreshed > limit:
            return f"no heartbeat for {time.time() - self.refreshed:.0f} s (more than {limit:g} s)"
        return None


def read_claim(path) -> Claim | None:
    """The claim at ``path``, or None when there is none. A claim still being written, or garbage, comes
    back with no owner: it is live until it is ``stale_after`` old."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            raw, info = handle.read(), os.fstat(handle.fileno())
    except FileNotFoundError:
        return None
    claim = Claim(path, refreshed=info.st_mtime, raw=raw, inode=info.st_ino)
    try:
        fields = json.loads(raw)
        claim.token, claim.host, claim.pid = fields["token"], fields["host"], int(fields["pid"])
        claim.pid_namespace, claim.started = fields.get("pid_namespace"), fields.get("started")
        claim.stale_after = float(fields.get("stale_after") or 0)
    except (ValueError, KeyError, TypeError):
        pass
    return claim


def live_claim(results_dir, run_hash: str, stale_after: float = DEFAULT_STALE_AFTER) -> Claim | None:
    """The claim on ``run_hash`` when a live run holds it (what ``experiments.progress`` shows as running)."""
    claim = read_claim(claim_path(results_dir, run_hash))
    return claim if claim is not None and claim.stale_reason(stale_after) is None else None


def _cannot(what: str, path, error: OSError) -> OSError:
    return OSError(error.errno, f"could not {what} {path}: {error.strerror or error}")


def _create(claim: Claim) -> bool:
    """Make the claim file if there is none; False when one exists. A failed write leaves no file."""
    payload = json.dumps({"token": claim.token, "host": claim.host, "pid": claim.pid,
                          "pid_namespace": claim.pid_namespace, "started": claim.started,
                          "stale_after": claim.stale_after}).encode()
    try:
        claim.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(claim.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except FileExistsError:
        return False
    except OSError as error:
        raise _cannot("claim the run: cannot create", claim.path, error) from error
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException as error:
        claim.path.unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise _cannot("claim the run: cannot write", claim.path, error) from error
        raise
    return True


def _remove_stale(stale: Claim) -> None:
    """Move the stale claim out of the way, unless another launcher replaced it first."""
    aside = stale.path.with_name(f".{stale.path.name}.{uuid.uuid4().hex[:8]}.stale")
    try:
        os.rename(stale.path, aside)
    except FileNotFoundError:  # another launcher moved it first
        return
    moved = read_claim(aside)
    if moved is not None and (moved.raw, moved.inode) != (stale.raw, stale.inode):
        # between reading and moving, another launcher took it over: its new claim goes back
        try:
            os.link(aside, stale.path)
        except FileExistsError:
            pass
        except OSError:  # no hard links on this filesystem
            os.replace(aside, stale.path)
    aside.unlink(missing_ok=True)


def acquire(results_dir, run_hash: str, stale_after: float = DEFAULT_STALE_AFTER) -> Claim:
    """Claim ``run_hash``: our new claim (``ours``), or the live claim of the run that holds it. A stale
    claim is taken over. Raises OSError naming the file when the claim cannot be written."""
    mine = Claim(claim_path(results_dir, run_hash), token=uuid.uuid4().hex, host=socket.gethostname(),
                 pid=os.getpid(), pid_namespace=pid_namespace(), started=store.now(),
                 stale_after=stale_after, ours=True)
    held = None
    for _ in range(5):
        if _create(mine):
            return mine
        held = read_claim(mine.path)
        if held is None:  # released in between: try again
            continue
        reason = held.stale_reason(stale_after)
        if reason is None:
            return held
        log.info("taking over the stale claim %s: %s", mine.path, reason)
        _remove_stale(held)
    return held or Claim(mine.path)  # others keep winning it: theirs


class _Heartbeat(threading.Thread):
    """Refreshes the claim's modification time until stopped; warns once if the claim is no longer ours."""

    def __init__(self, claim: Claim, every: float):
        super().__init__(name=f"claim-heartbeat-{claim.path.stem}", daemon=True)
        self.claim, self.every, self.stopped = claim, every, threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.every):
            try:
                current = read_claim(self.claim.path)
            except OSError:  # the folder is away for a moment: try again at the next beat
                continue
            if current is None or current.token != self.claim.token:
                log.warning("the claim %s is no longer this run's (%s); this run goes on, and another may "
                            "be training the same configuration", self.claim.path,
                            current.describe() if current else "it was removed")
                return
            with contextlib.suppress(OSError):
                os.utime(self.claim.path)


def release(claim: Claim) -> None:
    """Remove our claim (only if it is still ours). Never raises: a claim left behind goes stale."""
    try:
        current = read_claim(claim.path)
        if current is not None and current.token == claim.token:
            claim.path.unlink()
    except OSError as error:
        log.warning("could not remove the claim %s (%s); it goes stale once this process ends", claim.path, error)


def seconds(stale_after) -> float:
    """``results.stale_claim_after`` as seconds (None: the default); ValueError naming a bad value."""
    if stale_after is None:
        return DEFAULT_STALE_AFTER
    try:
        value = float(stale_after)
    except (TypeError, ValueError):
        value = 0.0
    if not value > 0:
        raise ValueError(f"results.stale_claim_after must be a number of seconds > 0, got {stale_after!r}")
    return value


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """While the block runs, SIGTERM raises KeyboardInterrupt (as Ctrl-C does), so ``finally`` blocks run.
    Only the main thread can set a signal handler; elsewhere SIGTERM keeps its default."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def hold(results_dir, run_hash: str, stale_after: float | None = None):
    """``with hold(dir, hash) as claim:`` the block runs with the claim held and heartbeating when
    ``claim.ours``; otherwise ``claim`` is the live claim of the run that has it, and nothing is held.
    SIGTERM counts as Ctrl-C from before the claim is made, so a signal that arrives right after it
    still releases it."""
    stale_after = seconds(stale_after)
    with _sigterm_as_interrupt():
        claim = None
        try:
            claim = acquire(results_dir, run_hash, stale_after)
            if not claim.ours:
                yield claim
                return
            heartbeat = _Heartbeat(claim, every=max(stale_after / 10, 0.05))
            heartbeat.start()
            try:
                yield claim
            finally:
                heartbeat.stopped.set()
                heartbeat.join()
        finally:
            if claim is not None and claim.ours:
                release(claim)
