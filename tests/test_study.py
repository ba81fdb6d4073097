"""python -m experiments.study: a study file checked key by key; the dry run's plan and cost; the second
edition's stages 2-3 replayed from its committed records (its run counts, its extensions and cap, its
tuned file); and a tiny study on the demo task end to end, killed and resumed, then rerun training nothing."""
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from conftest import REPO
from experiments import study as studies
from experiments import tune
from experiments.config import ConfigError

SECOND_EDITION = REPO / "results" / "second_edition" / "study.yaml"
TINY_OVERRIDES = ["train.max_steps=2", "train.batch_size=8", "train.max_length=32", "data.max_train_samples=32",
                  "data.max_eval_samples=32", "data.selection_fraction=0.02", "train.mixed_precision=no"]


def study_file(tmp_path, **changes) -> str:
    content = {"name": "tiny", "results_dir": str(tmp_path / "study"), "variants": ["lora", "head"],
               "tasks": ["demo"], "reference": "lora", "margin": 1.5, "overrides": TINY_OVERRIDES,
               "tuning": {"lr_factors": [1, 2], "seeds": [0], "extend": True, "max_extensions": 1},
               "final": {"seeds": [1, 2]}}
    for key, value in changes.items():
        if value is None:
            content.pop(key)
        else:
            content[key] = value
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(content))
    return str(path)


@pytest.mark.parametrize("changes, expected", [
    ({"variant": ["lora"]}, "unknown key 'variant' (did you mean 'variants'?)"),
    ({"variants": ["lora", "dorra"]}, "variants: 'dorra' is not one (did you mean 'dora'?)"),
    ({"tasks": ["sst3"]}, "tasks: 'sst3' is not one (did you mean 'sst2'?)"),
    ({"reference": "full"}, "reference='full' is not among the study's variants (lora, head)"),
    ({"margin": -1}, "margin=-1: must be a number > 0"),
    ({"tuning": {"lr_factors": [0, 1]}}, "tuning.lr_factors=[0, 1]: must be a non-empty list of numbers > 0"),
    ({"tuning": {"lr_factor": [1]}}, "unknown key 'tuning.lr_factor' (did you mean 'lr_factors'?)"),
    ({"final": {"seeds": []}}, "final.seeds=[]: must be a non-empty list of integers"),
    ({"overrides": ["train.lr=abc", "data.selection_fraction=0.1"]}, "train.lr='abc': must be a number > 0"),
    ({"overrides": ["train.epochs=2"]}, "overrides must hold data.selection_fraction"),
    ({"overrides": ["seed=3", "data.selection_fraction=0.1"]}, "'seed=3' is the study's to set"),
    ({"name": None}, "required key(s) name missing"),
])
def test_a_bad_study_file_is_named_in_one_line(tmp_path, changes, expected):
    with pytest.raises(ConfigError) as error:
        studies.load_study(study_file(tmp_path, **changes))
    assert expected in str(error.value) and "\n" not in str(error.value)


def test_the_command_refuses_a_run_setting_on_its_command_line(tmp_path, capsys):
    assert studies.main([study_file(tmp_path), "train.epochs=3"]) == 2
    assert "only Hydra's launcher settings" in capsys.readouterr().err


@pytest.mark.slow
def test_the_second_edition_replayed_from_its_records(tmp_path, capsys):
    """The dry run of stages 2-3 of the second edition: 120 grid runs, the 43 extensions its README lists
    (the tune rule at the edges, at most four per cell, HiRA on RTE stopped by the cap), 200 final runs,
    all done; the replayed choice is the committed tuned file, byte for byte."""
    assert studies.main([str(SECOND_EDITION), "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "tuning: 163 runs (120 grid, 43 from 43 extension(s), 0 confirmation); 163 done, 0 to run" in printed
    assert "rte/hira: the winner (6.25e-05) is still the lowest rate of its grid after 4 extensions" in printed
    assert "final: 200 done, 0 to run" in printed
    study = studies.load_study(SECOND_EDITION)
    ledger, cells = studies.Ledger(study), studies.tuning_cells(study)
    while studies.decide(study, cells, ledger, lambda line: None)[1]:
        pass
    rows = studies.chosen_rows(study, cells, ledger)
    written = tune.write_tuned_file(rows, study.folder / "tuning", tmp_path / "tuned.yaml")
    assert written.read_bytes() == (study.folder / "tuning" / "tuned.yaml").read_bytes()


@pytest.mark.slow
def test_a_dry_run_of_a_new_study_plans_and_prices_it(tmp_path, capsys):
    assert studies.main([study_file(tmp_path), "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "Stage 1, tuning: 4 grid runs (2 factors x 1 seed(s) per cell), extensions up to 1 per cell" in printed
    assert "0 done, 4 to run" in printed and "Stage 2, final: 4 runs after tuning" in printed
    assert "run-hours" in printed and "from the second edition's records" in printed
    assert not (tmp_path / "study").exists()  # a dry run writes nothing


def test_the_cost_scales_with_the_study_epochs(tmp_path):
    """The second edition trained 5 epochs: a study of 20 costs four times as much per run."""
    costs = {}
    for epochs in (5, 20):
        study = studies.load_study(study_file(tmp_path, tasks=["mrpc"], overrides=["data.selection_fraction=0.1", f"train.epochs={epochs}"]))
        costs[epochs] = studies.seconds_per_run(study)[0][("mrpc", "lora")]
    assert costs[20] == pytest.approx(4 * costs[5])
    assert studies.study_epochs(studies.load_study(study_file(tmp_path, overrides=["data.selection_fraction=0.1"]))) == 3  # the default


@pytest.mark.slow
def test_a_tiny_study_end_to_end_killed_resumed_and_rerun(tmp_path):
    """Two variants, one task, factors 1 and 2 (so every winner is at an edge and gets one extension),
    two final seeds. Killed once its first record exists, resumed, then rerun: the rerun trains nothing."""
    path = study_file(tmp_path)
    command = [sys.executable, "-m", "experiments.study", path]
    started = time.perf_counter()
    first = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    runs = tmp_path / "study" / "tuning" / "runs"
    while not list(runs.glob("*.json")) and first.poll() is None and time.perf_counter() - started < 300:
        time.sleep(0.5)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    resumed = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    decisions = (tmp_path / "study" / "decisions.md").read_text()
    assert decisions.count("extension 1 adds factor") == 2  # each cell's winner was at an edge of [1, 2]
    tuning_records = list(runs.glob("*.json"))
    final_records = list((tmp_path / "study" / "final" / "runs").glob("*.json"))
    assert len(tuning_records) == 6 and len(final_records) == 4  # 2 cells x (2 + 1 extension); 2 x 2 seeds
    assert (tmp_path / "study" / "tuning" / "tuned.yaml").is_file() and (tmp_path / "study" / "report.html").is_file()
    assert "Stage 3, verdicts against lora" in resumed.stdout and "| demo |" in resumed.stdout
    stamps = {p.name: p.stat().st_mtime_ns for p in [*tuning_records, *final_records]}
    again = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "$ python run.py" not in again.stdout  # nothing launched
    assert {p.name: p.stat().st_mtime_ns for p in [*tuning_records, *final_records]} == stamps


@pytest.mark.parametrize("below", [18, 10])
def test_the_default_tuning_grid_extends_down_to_a_rate_18_or_10_times_below_the_default(below):
    """Published tuned rates (arXiv 2602.04998): OLoRA's and LoRA-GA's best about 18x below LoRA's, PiSSA's
    about 10x: a cell whose selection score peaks there is extended down until the peak is inside its grid."""
    study = studies.Study(name="grid", results_dir="unused", variants=["peft"], tasks=["demo"], reference="lora")
    default_lr, best = 2e-3, 2e-3 / below

    class Ledger:  # a selection score that peaks at ``best`` and falls off on a log scale
        def record(self, point):
            lr = default_lr * point.factor
            return {"task": point.task, "variant": point.variant, "lr": lr, "head_lr": None, "seed": point.seed,
                    "selection_score": 1 - abs(math.log(lr / best))}

    cells, log = studies.tuning_cells(study), []
    while studies.decide(study, cells, Ledger(), log.append)[1]:
        pass
    assert min(cells[0].factors) <= 1 / below and not cells[0].capped
    chosen = next(r for r in tune.choose([Ledger().record(p) for p in cells[0].points()]) if r["chosen"])
    assert abs(math.log2(chosen["lr"] / best)) <= 0.5 and chosen["edge"] is None
