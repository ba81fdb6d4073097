"""Every bad value, whatever its key or group, fails before anything runs: run.py exits with status 2 and
one line that names the key, the bad value and what is valid, no traceback, no record, in seconds. So do
malformed YAML files named by a key (a tuned file, a task file) and typos (with a "did you mean")."""
import time

import pytest
import yaml

import run
from conftest import CONF, composed, run_cli
from experiments.config import ConfigError, build
from experiments.config.schema import markdown

#: (overrides, what the one line must say): at least one bad value of every group and section
BAD_VALUES = [
    # the adapter's own keys, at the top
    (["rnak=16"], "unknown setting 'rnak' (did you mean 'rank'?); valid settings: alpha,"),
    (["rank=0"], "rank=0: must be an integer >= 1"),
    (["rank=abc"], "rank='abc': must be an integer >= 1"),
    (["alpha=-1"], "alpha=-1: must be a number > 0"),
    (["dropout=1.5"], "dropout=1.5: must be a number in [0, 1)"),
    (["seed=abc"], "seed='abc': must be an integer"),
    (["target_modules=[]"], "target_modules=[]: must be a list of layer names"),
    # groups and their choices
    (["variant=dorra"], "variant=dorra is not a valid variant (did you mean 'dora'?); valid choices: dora,"),
    (["task=sst3"], "task=sst3 is not a valid task (did you mean 'sst2'?)"),
    (["model=minilmm"], "model=minilmm is not a valid model"),
    (["experiment=glue_tabel"], "experiment=glue_tabel is not a valid experiment (did you mean 'glue_table'?)"),
    (["logger=wandbb"], "logger=wandbb is not a valid logger (did you mean 'wandb'?)"),
    # a variant's options, keys of its group
    (["variant.colour=red"], "variant.colour: variant 'lora' has no option 'colour'; its options: init, trainable_alpha"),
    (["variant.init=pisa"], "variant 'lora': unknown init 'pisa'; choose one of kaiming, gaussian, random, pissa"),
    (["variant.trainable_alpha=maybe"], "variant.trainable_alpha='maybe': must be true or false"),
    (["variant=vera", "variant.d_initial=0"], "variant 'vera': d_initial must be a finite non-zero number"),
    (["variant=vera", "variant.init=pissa"], "variant 'vera' has no option 'init'"),
    (["variant=qlora", "variant.block_size=3"], "variant 'qlora': block_size must be a positive even integer"),
    # train
    (["train.lr=abc"], "train.lr='abc': must be a number > 0"),
    (["train.lr=0"], "train.lr=0: must be a number > 0"),
    (["train.max_steps=-5"], "train.max_steps=-5: must be an integer >= 1 or null"),
    (["train.epochs=0"], "train.epochs=0: must be an integer >= 1"),
    (["train.warmup=-0.1"], "train.warmup=-0.1: must be a number >= 0"),
    (["train.device=tpu"], "train.device='tpu': must be one of auto, cpu, cuda"),
    (["train.head_lr=-1"], "train.head_lr=-1: must be a number > 0 or null"),
    (["train.grad_clip=-1"], "train.grad_clip=-1: must be a number > 0 or null"),
    (["train.max_length=0"], "train.max_length=0: must be an integer >= 2"),
    (["train.weight_decay=-0.5"], "train.weight_decay=-0.5: must be a number >= 0"),
    (["train.batch_size=0"], "train.batch_size=0: must be an integer >= 1"),
    (["train.eval_batch_size=0"], "train.eval_batch_size=0: must be an integer >= 1"),
    (["train.mixed_precision=fp8"], "train.mixed_precision='fp8': must be one of no, auto, bf16, fp16"),
    (["train.lr_factor=0"], "train.lr_factor=0: must be a number > 0"),
    (["train.log_every=0"], "train.log_every=0: must be an integer >= 1"),
    (["train.eval_each_epoch=sometimes"], "train.eval_each_epoch='sometimes': must be true or false"),
    (["train.tuned_variant=lora"], "train.tuned_variant='lora' needs train.tuned_file"),
    (["train.tuned_file=/no/such/tuned.yaml"], "train.tuned_file='/no/such/tuned.yaml': no such file"),
    (["train.lrr=1"], "unknown setting 'train.lrr' (did you mean 'lr'?); valid settings under train:"),
    # data
    (["data.max_train_samples=0"], "data.max_train_samples=0: must be an integer >= 1 or null"),
    (["data.max_eval_samples=-1"], "data.max_eval_samples=-1: must be an integer >= 1 or null"),
    (["data.selection_fraction=1.5"], "data.selection_fraction=1.5: must be a number in (0, 1) or null"),
    (["data.selection_seed=x"], "data.selection_seed='x': must be an integer"),
    (["task=mrpc", "data.glue_dir=/no/such/folder"], "data.glue_dir='/no/such/folder': not a folder"),
    # model, results, logger
    (["model.pooling=meen"], "model.pooling='meen': must be one of model, mean, trainable"),
    (["model.dtype=float8"], "model.dtype='float8': must be one of float32, bfloat16, float16"),
    (["model.source=web"], "model.source='web': must be one of minilm, smollm2, hub"),
    (["results.stale_claim_after=0"], "results.stale_claim_after=0: must be a number > 0"),
    (["results.skip_existing=maybe"], "results.skip_existing='maybe': must be true or false"),
    (["logger.name=tensorboard"], "logger.name='tensorboard': must be one of none, wandb"),
    # the task's keys
    (["task.num_labels=3"], "conf/task/demo.yaml): num_labels is 3 but label_names names 2"),
    (["task.metric=glue"], "metric='glue' is not a GLUE metric set"),
    (["task=mrpc", "task.local.format=xlsx"], "conf/task/mrpc.yaml: task.local.format='xlsx': must be one of tsv"),
    # a sweep: the bad value of one run stops the whole command
    (["-m", "train.lr=1e-3,abc"], "train.lr='abc': must be a number > 0"),
    (["-m", "variant=lora,vera", "variant.d_initial=0.5"], "variant 'lora' has no option 'd_initial'"),
]


def first_line(error_text: str) -> str:
    lines = [line for line in error_text.splitlines() if line.strip()]
    assert len(lines) == 1, error_text
    return lines[0]


@pytest.mark.parametrize("overrides, expected", BAD_VALUES, ids=lambda v: " ".join(v) if isinstance(v, list) else "")
def test_a_bad_value_fails_at_once_with_one_line_naming_it(overrides, expected, tmp_path, capsys):
    start = time.perf_counter()
    with pytest.raises(SystemExit) as stop:
        run.main([*overrides, f"results.dir={tmp_path}", f"hydra.run.dir={tmp_path}/hydra"])
    seconds = time.perf_counter() - start
    assert stop.value.code == 2
    line = first_line(capsys.readouterr().err)
    assert line.startswith("error: ") and expected in line, line
    assert "Traceback" not in line
    assert not any(tmp_path.iterdir()), "a record, a claim or a Hydra folder was written"
    assert seconds < 5, f"took {seconds:.1f} s"


def test_there_are_at_least_thirty_and_they_cover_every_section():
    keys = {override.split("=", 1)[0].split(".")[0] for overrides, _ in BAD_VALUES for override in overrides}
    assert len(BAD_VALUES) >= 30
    assert {"rank", "alpha", "dropout", "seed", "target_modules", "variant", "task", "model", "experiment",
            "logger", "train", "data", "results"} <= keys


def test_a_malformed_tuned_file_names_the_file_and_the_line(tmp_path, capsys):
    tuned = tmp_path / "tuned.yaml"
    tuned.write_text("demo:\n  lora: {lr: 1e-3\n")
    with pytest.raises(SystemExit) as stop:
        run.main([f"train.tuned_file={tuned}", f"results.dir={tmp_path / 'results'}"])
    line = first_line(capsys.readouterr().err)
    assert stop.value.code == 2 and f"{tuned} is not valid YAML: line 3" in line, line
    tuned.write_text("demo: [1, 2]\n")  # valid YAML, not a tuned file
    with pytest.raises(SystemExit):
        run.main([f"train.tuned_file={tuned}"])
    assert "must map task -> variant" in first_line(capsys.readouterr().err)


def test_a_malformed_task_file_names_the_file_and_the_line(tmp_path, capsys):
    (tmp_path / "task").mkdir()
    broken = tmp_path / "task" / "broken.yaml"
    broken.write_text("name: broken\ntext_fields: [a\nlabel_field: label\n")
    with pytest.raises(SystemExit) as stop:
        run.main(["--config-dir", str(tmp_path), "task=broken"])
    line = first_line(capsys.readouterr().err)
    assert stop.value.code == 2 and f"{broken} is not valid YAML: line 3" in line and "at line 2" in line, line


# -- the real command line --------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("override, expected", [
    ("rnak=16", "did you mean 'rank'"),
    ("train.lr=abc", "train.lr='abc': must be a number > 0"),
    ("variant.init=pisa", "unknown init 'pisa'"),
    ("train.mixed_precision=fp8", "must be one of no, auto, bf16, fp16"),
])
def test_run_py_itself_exits_non_zero_with_the_line(override, expected, tmp_path):
    done, seconds = run_cli(override, f"results.dir={tmp_path}", f"hydra.run.dir={tmp_path}/hydra")
    assert done.returncode == 2
    line = first_line(done.stderr)
    assert expected in line and "Traceback" not in done.stderr
    assert not any(tmp_path.iterdir())
    assert seconds < 10, f"took {seconds:.1f} s"  # interpreter, torch and Hydra start; no model, no data


@pytest.mark.slow
def test_unknown_launcher_is_named(tmp_path):
    done, _ = run_cli("-m", "hydra/launcher=jobliib", f"hydra.sweep.dir={tmp_path}")
    assert done.returncode != 0
    assert "jobliib" in done.stderr and "joblib" in done.stderr


@pytest.mark.slow
def test_a_variant_option_from_the_command_line_reaches_the_run(tmp_path):
    """The README's PiSSA command: the option is a key of the variant's group, typed and recorded."""
    done, _ = run_cli("variant=lora", "variant.init=pissa", "--cfg", "job")
    assert done.returncode == 0, done.stderr
    assert yaml.safe_load(done.stdout)["variant"] == {"name": "lora", "init": "pissa", "trainable_alpha": False}


# -- the schema is the one place of the defaults ----------------------------------------------------------

def test_conf_holds_no_default_of_a_schema_key():
    """conf/config.yaml holds only the defaults list; a group file sets what its choice changes."""
    primary = yaml.safe_load((CONF / "config.yaml").read_text())
    assert set(primary) == {"defaults"}


def test_the_configuration_docs_are_the_schema_table(tmp_path):
    docs = (CONF.parent / "docs" / "configuration.md").read_text()
    assert markdown() in docs, "docs/configuration.md is stale: python -m experiments.config prints the table"


def test_a_composed_config_builds_and_names_its_options():
    config = build(composed("variant=vera"))
    assert config.options == {"d_initial": 0.1, "projection_seed": 0} and config.rank == 256
    with pytest.raises(ConfigError, match="variant is not set"):
        build({**composed(), "variant": {}})
