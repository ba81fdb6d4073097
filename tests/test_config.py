"""Config mistakes fail fast (seconds, before any model is loaded) and name the valid choices."""
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def run_cli(*args, timeout=60):
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "run.py", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)
    return done, time.perf_counter() - start


@pytest.mark.parametrize("override, expected", [
    ("rnak=16", ["'rnak'", "did you mean 'rank'"]),
    ("variant=dorra", ["dorra", "did you mean 'dora'", "lora, qlora, rslora, vera"]),
    ("task=sst3", ["sst3", "sst2", "mrpc"]),
    ("model=minilmm", ["minilmm", "smollm2"]),
    ("train.lrr=0.1", ["train.lrr", "lr"]),
])
def test_typos_fail_in_seconds_with_the_valid_choices(override, expected):
    done, seconds = run_cli(override)
    assert done.returncode != 0
    for text in expected:
        assert text in done.stderr, done.stderr
    assert seconds < 5, f"took {seconds:.1f} s"


@pytest.mark.parametrize("override, expected", [
    ("rank=0", "rank must be an integer >= 1, got 0"),
    ("alpha=-1", "alpha must be a number > 0, got -1"),
    ("dropout=1.5", "dropout must be in [0, 1), got 1.5"),
    ("+variant.options.colour=red", "unknown option(s) colour for variant 'lora'"),
    ("train.lr=0", "train.lr must be > 0"),
    ("model.pooling=meen", "unknown model.pooling 'meen'; choose one of model, mean, trainable"),
])
def test_bad_values_fail_before_the_model_is_loaded(override, expected, tmp_path):
    done, seconds = run_cli(override, f"results.dir={tmp_path}", f"hydra.run.dir={tmp_path}/hydra")
    assert done.returncode != 0
    assert expected in done.stderr, done.stderr
    assert seconds < 10, f"took {seconds:.1f} s"  # interpreter + torch import, no model load
    assert not (tmp_path / "runs").exists()


def test_unknown_launcher_is_named(tmp_path):
    done, _ = run_cli("-m", "hydra/launcher=jobliib", f"hydra.sweep.dir={tmp_path}")
    assert done.returncode != 0
    assert "jobliib" in done.stderr and "joblib" in done.stderr
