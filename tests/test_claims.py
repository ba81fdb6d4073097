"""Claims: two launchers over one results folder train each configuration once; a claim whose owner is
gone (SIGKILL here, or silent for too long on another host) is taken over; every ending releases it;
a write that fails (full disk, read-only folder) leaves the folder as it was and names the file."""
import errno
import json
import multiprocessing
import os
import signal
import socket
import subprocess
import time
from collections import Counter
from types import SimpleNamespace

import numpy as np
import pytest

import analysis
from conftest import records
from conftest import short_config as config
from experiments import progress
from experiments.config import build
from experiments.records import locks as claims
from experiments.records import store as results
from experiments.run import runner
from variants import files

TRAININGS = "trainings.txt"  # one line per training, beside the results folder


def fake_training(counter, seconds=0.0, error=None):
    """Stands in for ``train_and_evaluate``: notes that a training happened, and how it ends."""
    def train(model, train_loader, eval_loaders, task, *args, **kwargs):
        with open(counter, "a") as handle:
            handle.write(f"{os.getpid()}\n")
        time.sleep(seconds)
        if error is not None:
            raise error
        outputs = {}  # a constant prediction for every example, in loader order, as the real loop gives
        for split, loader in eval_loaders.items():
            labels = np.concatenate([batch["labels"].numpy() for batch in loader])
            outputs[split] = (np.zeros((len(labels), task.num_labels), np.float32), labels)
        return SimpleNamespace(metrics={"accuracy": 0.5}, eval_loss=0.7, steps=1, train_seconds=seconds,
                               seconds_per_step=seconds, peak_memory_mb=1.0, device="cpu",
                               learning_curve=[{"step": i, "loss": 0.5} for i in range(200)],
                               final_train_loss=0.5, selection_metrics=None, outputs=outputs)
    return train


def trainings(tmp_path) -> int:
    path = tmp_path / TRAININGS
    return len(path.read_text().splitlines()) if path.exists() else 0


def leftover_claims(folder) -> list:
    return sorted(p.name for p in (folder / "runs").glob("*claim*")) if (folder / "runs").exists() else []


def snapshot(folder) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def plant_claim(folder, cfg, host, pid, age=0.0, text=None):
    path = claims.claim_path(folder, build(cfg).config_hash)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text if text is not None else json.dumps(
        {"token": "planted", "host": host, "pid": pid, "started": "2026-01-01T00:00:00+00:00"}))
    stamp = time.time() - age
    os.utime(path, (stamp, stamp))
    return path


def sweep_worker(folder, counter, seeds, start):
    """One launcher: the same sweep as the other, started at the same moment."""
    runner.train_and_evaluate = fake_training(counter, seconds=1.0)  # a forked process: ours alone
    start.wait()
    for seed in seeds:
        runner.run(config(folder, "variant=head", f"seed={seed}"), show_progress=False)


@pytest.mark.slow
def test_two_sweeps_started_together_train_each_configuration_once(tmp_path):
    folder, seeds = tmp_path / "results", [0, 1, 2, 3]
    fork = multiprocessing.get_context("fork")
    start = fork.Event()
    launchers = [fork.Process(target=sweep_worker, args=(folder, tmp_path / TRAININGS, seeds, start))
                 for _ in range(2)]
    for launcher in launchers:
        launcher.start()
    start.set()
    for launcher in launchers:
        launcher.join(timeout=240)
        assert launcher.exitcode == 0
    assert trainings(tmp_path) == len(seeds)  # four trainings for four configurations, not eight
    assert sorted(r["seed"] for r in records(folder)) == seeds and {r["status"] for r in records(folder)} == {"ok"}
    pids = Counter((tmp_path / TRAININGS).read_text().split())
    assert len(pids) == 2, f"both launchers should have trained some: {pids}"
    assert leftover_claims(folder) == []


def train_forever(model, *args, **kwargs):
    time.sleep(600)


def killed_worker(folder):
    runner.train_and_evaluate = train_forever
    runner.run(config(folder, "variant=head"), show_progress=False)


def start_a_run_that_trains_forever(folder):
    """A forked run of variant=head that never finishes training; returns once it holds its claim."""
    victim = multiprocessing.get_context("fork").Process(target=killed_worker, args=(folder,))
    victim.start()
    deadline = time.time() + 120
    while not leftover_claims(folder) and time.time() < deadline and victim.is_alive():
        time.sleep(0.1)
    return victim


@pytest.mark.slow
def test_a_claim_left_by_a_sigkilled_run_is_taken_over_on_rerun(tmp_path, monkeypatch):
    folder = tmp_path / "results"
    victim = start_a_run_that_trains_forever(folder)
    os.kill(victim.pid, signal.SIGKILL)
    victim.join()
    left = claims.read_claim(next((folder / "runs").glob("*.claim")))
    assert (left.host, left.pid) == (socket.gethostname(), victim.pid)  # it died holding its claim

    monkeypatch.setattr(runner, "train_and_evaluate", fake_training(tmp_path / TRAININGS))
    record = runner.run(config(folder, "variant=head"), show_progress=False)  # default timeout: 300 s
    assert record["status"] == "ok" and trainings(tmp_path) == 1
    assert leftover_claims(folder) == []


@pytest.mark.slow
@pytest.mark.parametrize("age, taken_over", [(31.0, True), (1.0, False)])
def test_a_claim_from_another_host_is_taken_over_only_after_its_timeout(age, taken_over, tmp_path, monkeypatch):
    folder = tmp_path / "results"
    cfg = config(folder, "variant=head", "results.stale_claim_after=30")
    planted = plant_claim(folder, cfg, host="gpu-node-7.elsewhere", pid=4242, age=age)
    monkeypatch.setattr(runner, "train_and_evaluate", fake_training(tmp_path / TRAININGS))
    record = runner.run(cfg, show_progress=False)
    if taken_over:
        assert record["status"] == "ok" and trainings(tmp_path) == 1
        assert leftover_claims(folder) == []
    else:
        assert record["skipped"] and record["status"] == "claimed" and trainings(tmp_path) == 0
        assert "gpu-node-7.elsewhere (pid 4242)" in record["claimed_by"] and str(planted) in record["claimed_by"]
        assert planted.exists() and json.loads(planted.read_text())["token"] == "planted"  # not touched
        assert records(folder) == []


@pytest.mark.slow
def test_a_live_claim_on_this_host_is_skipped_and_the_sweep_goes_on(tmp_path, monkeypatch, caplog):
    folder = tmp_path / "results"
    busy, free = config(folder, "variant=head", "seed=0"), config(folder, "variant=head", "seed=1")
    plant_claim(folder, busy, host=socket.gethostname(), pid=os.getpid())  # a live process: this one
    monkeypatch.setattr(runner, "train_and_evaluate", fake_training(tmp_path / TRAININGS))
    with caplog.at_level("INFO", logger="experiments.run.runner"):
        skipped = runner.run(busy, show_progress=False)
        ran = runner.run(free, show_progress=False)
    assert skipped["status"] == "claimed" and ran["status"] == "ok" and trainings(tmp_path) == 1
    said = [r.getMessage() for r in caplog.records if "claimed by" in r.getMessage()]
    assert len(said) == 1 and f"pid {os.getpid()}" in said[0]


@pytest.mark.slow
@pytest.mark.parametrize("ending", [RuntimeError("boom"), KeyboardInterrupt()])
def test_every_ending_releases_the_claim_and_a_failed_run_can_be_rerun(ending, tmp_path, monkeypatch):
    folder = tmp_path / "results"
    monkeypatch.setattr(runner, "train_and_evaluate", fake_training(tmp_path / TRAININGS, error=ending))
    if isinstance(ending, KeyboardInterrupt):  # Ctrl-C: not recorded, goes up to the launcher
        with pytest.raises(KeyboardInterrupt):
            runner.run(config(folder, "variant=head"), show_progress=False)
        assert records(folder) == []
    else:
        assert runner.run(config(folder, "variant=head"), show_progress=False)["status"] == "failed"
    assert leftover_claims(folder) == []
    monkeypatch.setattr(runner, "train_and_evaluate", fake_training(tmp_path / TRAININGS))
    assert runner.run(config(folder, "variant=head"), show_progress=False)["status"] == "ok"
    assert trainings(tmp_path) == 2 and leftover_claims(folder) == []


@pytest.mark.slow
def test_the_heartbeat_keeps_a_long_run_claimed(tmp_path):
    with claims.hold(tmp_path, "abc", stale_after=2.0) as claim:
        time.sleep(4.0)  # two timeouts: only the heartbeat keeps it fresh
        other = claims.acquire(tmp_path, "abc", stale_after=2.0)
        assert claim.ours and not other.ours and other.token == claim.token
    assert not claims.claim_path(tmp_path, "abc").exists()


def test_a_run_whose_claim_was_taken_over_says_so_and_leaves_the_new_claim_alone(tmp_path, caplog):
    with caplog.at_level("WARNING", logger="experiments.records.locks"):
        with claims.hold(tmp_path, "abc", stale_after=0.5) as claim:
            claim.path.write_text(json.dumps({"token": "theirs", "host": "node-9", "pid": 9}))
            time.sleep(0.5)
    assert "no longer this run's" in caplog.text and "node-9 (pid 9)" in caplog.text
    assert json.loads(claim.path.read_text())["token"] == "theirs"


def test_a_stale_claim_is_replaced_once_when_two_launchers_find_it(tmp_path):
    path = claims.claim_path(tmp_path, "abc")
    path.parent.mkdir()
    path.write_text(json.dumps({"token": "old", "host": "gone", "pid": 1}))
    os.utime(path, (0, 0))
    stale = claims.read_claim(path)
    first = claims.acquire(tmp_path, "abc", stale_after=60)
    claims._remove_stale(stale)  # a second launcher that read the same stale claim before the first won
    assert first.ours and claims.read_claim(path).token == first.token  # the new claim is back in place
    assert claims.acquire(tmp_path, "abc", stale_after=60).token == first.token
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]


@pytest.mark.slow
def test_progress_shows_running_apart_from_done_and_missing(tmp_path, capsys):
    sweep = ["variant=head", "seed=0,1,2,3", f"results.dir={tmp_path}", "results.stale_claim_after=60"]
    cfgs = [cfg for _, cfg in progress.planned_runs(["-m", *sweep])]
    results.write_record(tmp_path, {"config_hash": cfgs[0].config_hash, "status": "ok"})
    plant_claim(tmp_path, cfgs[0], host="node-1", pid=11)  # done, with a claim left over: done
    plant_claim(tmp_path, cfgs[1], host="node-2", pid=22)
    plant_claim(tmp_path, cfgs[2], host=None, pid=None, text="")  # being written, or garbage: live while young
    plant_claim(tmp_path, cfgs[3], host="node-4", pid=44, age=120)  # silent for two minutes: stale
    assert [state for _, state, _ in progress.states(sweep)] == ["done", "running", "running", "missing"]
    assert progress.main(sweep) == 0
    out = capsys.readouterr().out
    assert out.startswith("1 of 4 runs done, 2 running, 1 missing")
    assert "node-2 (pid 22)" in out and "unreadable claim" in out and "node-4" not in out
    assert len(analysis.load_results(tmp_path)) == 1  # claims are not records


def enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


class FillsUpHalfway:
    """A file handle on a disk that fills up after the first bytes of what is written."""

    def __init__(self, handle):
        self.handle = handle

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.close()

    def write(self, data):
        self.handle.write(data[:20])
        enospc()


def disk_full_in_a_record(real_fdopen):
    """``os.fdopen`` as seen by the atomic writer: records' temporary files fill the disk halfway."""
    def fdopen(fd, *args, **kwargs):
        handle = real_fdopen(fd, *args, **kwargs)
        name = os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))
        is_record = ".json." in name and name.endswith(".tmp")
        return FillsUpHalfway(handle) if is_record else handle
    return fdopen


def with_an_earlier_record(folder):
    results.write_record(folder, {"config_hash": "earlier00000", "status": "ok", "main_score": 0.8})
    return snapshot(folder)


@pytest.mark.slow
@pytest.mark.parametrize("where", ["record", "claim"])
def test_a_failing_write_leaves_the_folder_as_it_was_and_names_the_file(where, tmp_path, monkeypatch):
    folder = tmp_path / "results"
    before = with_an_earlier_record(folder)
    monkeypatch.setattr(runner, "train_and_evaluate", fake_training(tmp_path / TRAININGS))
    if where == "record":
        # the disk fills up in the middle of the record (only records' temporary files, not the claim's)
        monkeypatch.setattr(files.os, "fdopen", disk_full_in_a_record(os.fdopen))
    else:
        monkeypatch.setattr(claims.os, "fsync", enospc)  # the disk is full from the start
    cfg = config(folder, "variant=head")
    with pytest.raises(OSError) as raised:
        runner.run(cfg, show_progress=False)
    run_hash = build(cfg).config_hash
    named = results.record_path(folder, run_hash) if where == "record" else claims.claim_path(folder, run_hash)
    assert raised.value.errno == errno.ENOSPC and str(named) in str(raised.value)
    assert snapshot(folder) == before
    assert trainings(tmp_path) == (1 if where == "record" else 0)  # a full disk is seen before training


@pytest.fixture
def small_disk(tmp_path):
    """A 256 KiB tmpfs (needs root and mount; skipped where that is not allowed)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk, leave_bytes):
    """Fill the disk up, then free ``leave_bytes``."""
    with open(disk / "filler", "wb", buffering=0) as handle:
        try:
            while True:
                handle.write(b"\0" * 4096)
        except OSError as error:
            assert error.errno == errno.ENOSPC
    os.truncate(disk / "filler", max(0, os.path.getsize(disk / "filler") - leave_bytes))


@pytest.mark.slow
@pytest.mark.parametrize("room", ["none", "for the claim only", "read-only"])
def test_a_real_full_or_read_only_disk_leaves_it_as_it_was(room, small_disk, tmp_path, monkeypatch):
    folder = small_disk / "results"
    with_an_earlier_record(folder)
    if room == "read-only":
        subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    else:
            fill(small_disk, 0 if room == "none" else 8192)  # two pages: a claim fits, a record does not
    before = snapshot(small_disk)
    monkeypatch.setattr(runner, "train_and_evaluate", fake_training(tmp_path / TRAININGS))
    with pytest.raises(OSError) as raised:
        runner.run(config(folder, "variant=head"), show_progress=False)
    expected = {"none": errno.ENOSPC, "for the claim only": errno.ENOSPC, "read-only": errno.EROFS}[room]
    assert raised.value.errno == expected and str(folder / "runs") in str(raised.value)
    assert (".json" in str(raised.value)) == (room == "for the claim only")  # the record, or the claim
    assert snapshot(small_disk) == before


def test_records_and_claims_are_readable_by_whoever_shares_the_folder(tmp_path):
    """Two people on one results folder: a record only its writer can read would be trained again."""
    path = results.write_record(tmp_path, {"config_hash": "abc", "status": "ok"})
    with claims.hold(tmp_path, "def") as claim:
        claim_mode = claim.path.stat().st_mode & 0o777
    assert path.stat().st_mode & 0o777 == claim_mode == 0o666 & ~results.UMASK


def test_a_sigterm_ends_the_run_like_ctrl_c_and_releases_its_claim(tmp_path):
    folder = tmp_path / "results"
    victim = start_a_run_that_trains_forever(folder)
    assert leftover_claims(folder), "the run never claimed its configuration"
    os.kill(victim.pid, signal.SIGTERM)
    victim.join(timeout=60)
    assert victim.exitcode not in (0, None, -signal.SIGTERM)  # interrupted by Python, not killed by the signal
    assert leftover_claims(folder) == [] and records(folder) == []  # no claim, and no record: as Ctrl-C
