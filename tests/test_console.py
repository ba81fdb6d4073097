"""The console of ``python run.py``: no weight-loading report or library progress bars, one summary line;
in a parallel (joblib) sweep each run's output goes to its own log file and the console counts runs."""
import subprocess
import sys

import pytest

from conftest import REPO

pytestmark = pytest.mark.slow  # every test here starts run.py
SHORT = ["train.max_steps=2", "train.log_every=1", "train.batch_size=8", "train.max_length=32",
         "train.eval_each_epoch=false", "data.max_train_samples=32", "data.max_eval_samples=16"]
NOISE = ("LOAD REPORT", "Loading weights", "tokenizing", "Map", "MISSING")


def run(*arguments, multirun=False) -> str:
    command = [sys.executable, "run.py", *(["-m"] if multirun else []), *SHORT, *arguments]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout + done.stderr


def test_a_run_prints_one_summary_line_and_no_library_noise(tmp_path):
    console = run("variant=head", f"results.dir={tmp_path}", f"hydra.run.dir={tmp_path}/hydra")
    assert not [word for word in NOISE if word in console], console
    summaries = [line for line in console.splitlines() if "trainable parameters" in line]
    assert len(summaries) == 1 and "head on demo (fp32): accuracy = " in summaries[0], console
    assert str(tmp_path / "runs") in summaries[0] and " s training" in summaries[0]
    assert "step 2/2: train loss" in console  # log lines still come through


def test_a_parallel_sweep_logs_each_run_to_its_file_and_counts_runs(tmp_path):
    console = run("hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "variant=lora,head",
                  f"results.dir={tmp_path}", f"hydra.sweep.dir={tmp_path}/sweep", multirun=True)
    assert "[1/2 runs done]" in console and "[2/2 runs done]" in console, console
    assert "train loss" not in console and not [word for word in NOISE if word in console], console
    for job, variant in ((0, "lora"), (1, "head")):
        log = (tmp_path / "sweep" / str(job) / "run.log").read_text()
        assert "step 2/2: train loss" in log and f"{variant} on demo" in log
