"""Every study preset in conf/experiment/ composes, and every value its sweep names is a valid setting,
so a preset cannot rot between the sessions that run it (each run is hours of CPU); and
``experiments.progress`` counts a sweep's runs, done and missing, from their config hashes."""
from pathlib import Path

import pytest
import yaml

import variants

from conftest import CONF
from conftest import composed as compose_with
from experiments import progress
from experiments.config import build, check
from experiments.config.command_line import sweep
from experiments.records import store

PRESETS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))


def sweep_of(preset: str) -> dict[str, list[str]]:
    return sweep([f"experiment={preset}"])


def composed(overrides: list[str]) -> dict:
    return compose_with(*overrides)


def test_there_are_presets():
    assert {"glue_table", "glue_table_sst2", "rank_sweep", "target_sweep"} <= set(PRESETS)


def stand_in_tuned_file(folder: Path, preset: str) -> list[str]:
    """For a preset that reads a tuned-settings file (not written until its tuning stage has run): an
    override naming a stand-in that sets lr 1e-3 for every task and variant."""
    if not composed([f"experiment={preset}"])["train"].get("tuned_file"):
        return []
    tasks = [p.stem for p in (CONF / "task").glob("*.yaml")]
    variant_names = [p.stem for p in (CONF / "variant").glob("*.yaml")]
    path = folder / "tuned.yaml"
    path.write_text(yaml.safe_dump({t: {v: {"lr": 1e-3, "head_lr": None} for v in variant_names} for t in tasks}))
    return [f"train.tuned_file={path}"]


@pytest.mark.slow
@pytest.mark.parametrize("preset", PRESETS)
def test_each_value_of_a_preset_sweep_is_a_valid_run(preset, tmp_path):
    sweep = sweep_of(preset)
    assert sweep, f"{preset} sweeps nothing"
    first = {key: values[0] for key, values in sweep.items()}
    extra = stand_in_tuned_file(tmp_path, preset)
    for key, values in sweep.items():
        for value in values:
            overrides = [f"{k}={value if k == key else v}" for k, v in first.items()]  # experiment= too
            check(overrides + extra)  # the check run.py makes before Hydra starts
            build(composed(overrides + extra))  # and the one the run makes


@pytest.mark.slow
def test_the_sst2_preset_is_the_main_table_on_a_stated_subset():
    main, sst2 = sweep_of("glue_table"), sweep_of("glue_table_sst2")
    assert sst2["task"] == ["sst2"] and sst2["variant"] == main["variant"] and sst2["seed"] == main["seed"]
    cfg, table = composed(["experiment=glue_table_sst2"]), composed(["experiment=glue_table"])
    assert cfg["data"]["max_train_samples"] == 8000
    assert cfg["train"] == table["train"] and cfg["results"] == table["results"]


SECOND_EDITION_TUNING = ["second_edition_tuning", "second_edition_tuning_sst2", "second_edition_tuning_rte"]


@pytest.mark.parametrize("preset", SECOND_EDITION_TUNING)
def test_second_edition_tuning_uses_the_head_and_epochs_stage_one_chose(preset):
    choice = yaml.safe_load((CONF.parent / "results/second_edition/head/choice.yaml").read_text())
    cfg, head = composed([f"experiment={preset}"]), composed(["experiment=second_edition_head"])
    assert cfg["model"]["pooling"] == choice["pooling"] and cfg["train"]["epochs"] == choice["epochs"]
    assert cfg["data"]["selection_fraction"] == head["data"]["selection_fraction"]
    assert cfg["data"]["selection_seed"] == head["data"]["selection_seed"]
    assert cfg["results"]["dir"] == "results/second_edition/tuning"


@pytest.mark.slow
def test_second_edition_tuning_gives_every_variant_the_same_grid():
    main, sst2, rte = (sweep_of(p) for p in SECOND_EDITION_TUNING)
    native = [name for name in variants.available() if not issubclass(variants.lookup(name), variants.ModelTuner)]
    assert sorted(main["variant"]) == sorted(native)  # every variant implemented here (not the PEFT bridge)
    assert sst2["variant"] == main["variant"] and sst2["train.lr_factor"] == main["train.lr_factor"]
    assert rte["variant"] == main["variant"] and rte["train.lr_factor"] == main["train.lr_factor"]
    assert (sst2["task"], rte["task"]) == (["sst2"], ["rte"]) and "sst2" not in main["task"]
    assert composed(["experiment=second_edition_tuning_sst2"])["data"]["max_train_samples"] == 8000


@pytest.mark.slow
@pytest.mark.parametrize("tuning, final", [("second_edition_tuning", "second_edition_final"),
                                           ("second_edition_tuning_sst2", "second_edition_final_sst2"),
                                           ("second_edition_tuning_rte", "second_edition_final_rte")])
def test_second_edition_final_trains_as_it_was_tuned(tuning, final, tmp_path):
    """Only the rates (from the tuned file), the seeds and the folder differ between stage 2 and stage 3."""
    tuned = composed([f"experiment={tuning}"])
    table = composed([f"experiment={final}"] + stand_in_tuned_file(tmp_path, final))
    assert table["train"].pop("tuned_file") and tuned["train"].pop("tuned_file") is None
    assert table["train"] == tuned["train"] and table["model"] == tuned["model"] and table["data"] == tuned["data"]
    tuned_sweep, final_sweep = sweep_of(tuning), sweep_of(final)
    assert final_sweep["task"] == tuned_sweep["task"] and final_sweep["variant"] == tuned_sweep["variant"]
    assert final_sweep["train.lr_factor"] == ["1"] and "0" not in final_sweep["seed"] and len(final_sweep["seed"]) == 5


@pytest.mark.slow
def test_second_edition_rank_study_gives_lora_and_rslora_one_rate_across_ranks(tmp_path):
    """Stage 4: both variants at LoRA's tuned rate, trained as stage 2 trained, r from 4 to 256."""
    tuned = composed(["experiment=second_edition_tuning"])
    study = composed(["experiment=second_edition_rank"] + stand_in_tuned_file(tmp_path, "second_edition_rank"))
    assert study["train"].pop("tuned_file") and study["train"].pop("tuned_variant") == "lora"
    tuned["train"].pop("tuned_file"), tuned["train"].pop("tuned_variant")
    assert study["train"] == tuned["train"] and study["model"] == tuned["model"] and study["data"] == tuned["data"]
    sweep = sweep_of("second_edition_rank")
    assert sweep["variant"] == ["lora", "rslora"] and sweep["task"] == ["mrpc"] and study["alpha"] == 16
    assert [int(r) for r in sweep["rank"]] == [4, 16, 64, 256] and len(sweep["seed"]) == 3 and "0" not in sweep["seed"]
    assert study["results"]["dir"] == "results/second_edition/rank"


@pytest.mark.slow
def test_the_rank_check_at_rsloras_own_rate_differs_from_stage_four_only_in_the_rate():
    """The check added after stage 4: rsLoRA at r = 4 and 256 at the rate stage 2 chose for rsLoRA (no
    tuned_variant: the run's own), stage 4's seeds, training and data, in a folder of its own."""
    stage_four = composed(["experiment=second_edition_rank"])
    check = composed(["experiment=second_edition_rank_own_rate"])
    assert stage_four["train"].pop("tuned_variant") == "lora" and check["train"].pop("tuned_variant") is None
    assert check["train"] == stage_four["train"] and check["model"] == stage_four["model"]
    assert check["data"] == stage_four["data"] and check["alpha"] == stage_four["alpha"]
    sweep, stage_four_sweep = sweep_of("second_edition_rank_own_rate"), sweep_of("second_edition_rank")
    assert sweep["variant"] == ["rslora"] and [int(r) for r in sweep["rank"]] == [4, 256]
    assert sweep["seed"] == stage_four_sweep["seed"] and sweep["task"] == stage_four_sweep["task"]
    assert check["results"]["dir"] == "results/second_edition/rank_own_rate"


@pytest.mark.slow
def test_progress_counts_a_sweep_and_sees_what_is_done(tmp_path):
    sweep = ["experiment=rank_sweep", "variant=lora,head", "rank=4,8", f"results.dir={tmp_path}"]
    done, missing = progress.progress(sweep)
    assert done == [] and len(missing) == 3  # lora at two ranks; head ignores rank and counts once
    point, config = next((p, c) for p, c in progress.planned_runs(["-m", *sweep]) if "variant=lora" in p and "rank=8" in p)
    store.write_record(tmp_path, {"config_hash": config.config_hash, "status": "ok"})
    done, missing = progress.progress(sweep)
    assert done == [point] and len(missing) == 2


def test_progress_names_a_typo_with_the_choices(capsys):
    assert progress.main(["experiment=glue_tabel"]) == 2
    assert "did you mean 'glue_table'" in capsys.readouterr().err


def test_progress_of_a_final_preset_before_its_tuned_file_says_what_to_run(tmp_path, capsys):
    missing = tmp_path / "tuned.yaml"
    assert progress.main(["experiment=final_table", f"train.tuned_file={missing}"]) == 2
    error = capsys.readouterr().err
    assert str(missing) in error and "experiments.tune" in error and "Traceback" not in error


#: presets whose records are committed under results/: a change to the config (a new key, a new default)
#: that alters their config hashes would make skip-on-rerun and progress lose them
COMMITTED_STUDIES = ["glue_table", "glue_table_sst2", "rank_sweep", "alpha_sweep", "target_sweep", "second_edition_head"]


@pytest.mark.slow
@pytest.mark.parametrize("preset", COMMITTED_STUDIES)
def test_committed_studies_are_still_recognised_as_done(preset, monkeypatch):
    monkeypatch.chdir(CONF.parent)  # the presets' results.dir is relative to the repository
    done, missing = progress.progress([f"experiment={preset}"])
    assert done and not missing, f"{len(missing)} runs of {preset} no longer match a committed record"
