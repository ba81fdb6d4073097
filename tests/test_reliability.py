"""Sweeps survive being killed (SIGKILL) and parallel writers: no record is lost, partial or corrupt."""
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO, SHORT, records
from experiments.records import store as results


def write_many(folder, worker, count):
    for i in range(count):
        results.write_record(folder, {"config_hash": f"{worker:02d}{i:010d}", "status": "ok", "blob": "x" * 5000})
        results.write_record(folder, {"config_hash": "shared000000", "status": "ok", "writer": worker, "blob": "y" * 5000})


def test_parallel_writers_lose_nothing(tmp_path):
    workers = [multiprocessing.Process(target=write_many, args=(tmp_path, w, 40)) for w in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    files = sorted((tmp_path / "runs").iterdir())
    assert len(files) == 4 * 40 + 1  # no temporary file left behind either
    for path in files:
        assert json.loads(path.read_text())["status"] == "ok"


@pytest.mark.slow
def test_a_sweep_killed_with_sigkill_resumes_only_the_missing_runs(tmp_path):
    command = [sys.executable, "run.py", "-m", *SHORT, "train.max_steps=15", f"results.dir={tmp_path}",
               f"hydra.sweep.dir={tmp_path}/sweep", "variant=head,lora,rslora"]
    sweep = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    deadline = time.time() + 300
    while not list(tmp_path.glob("runs/*.json")) and time.time() < deadline and sweep.poll() is None:
        time.sleep(0.2)
    os.killpg(sweep.pid, signal.SIGKILL)  # in the middle of the second run
    sweep.wait()
    done_before = {r["config_hash"]: r["timestamp"] for r in records(tmp_path)}
    assert len(done_before) == 1, "the first run should have finished, and only it"

    again = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "already done" in again.stdout + again.stderr  # the basic launcher skipped the finished run
    rows = records(tmp_path)  # every file parses: nothing partial or corrupt
    assert sorted(r["variant"] for r in rows) == ["head", "lora", "rslora"]
    assert all(r["status"] == "ok" for r in rows)
    for run_hash, stamp in done_before.items():  # the finished run was not run again
        assert next(r for r in rows if r["config_hash"] == run_hash)["timestamp"] == stamp
