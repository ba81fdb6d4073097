"""A task YAML is checked before anything heavy runs (the typed schema's TaskConfig for its keys and
types, experiments.config.Task for how they agree, both through run.py's check): unknown and missing
keys, types, labels against num_labels, metric and main_metric, splits against files, rename against
the task's columns, and the files' columns from their headers. Each mistake fails naming the file and
the key or column, before any model or data loads, and writes no record."""
import copy
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import CONF, GLUE_DIR, REPO, composed
from experiments.config import ConfigError, Task, build, check

TASK_DIR = CONF / "task"
SHIPPED = sorted(p.stem for p in TASK_DIR.glob("*.yaml"))


def shipped(name: str) -> dict:
    return yaml.safe_load((TASK_DIR / f"{name}.yaml").read_text())


def check_task(spec: dict, source: str = "task config") -> Task:
    """A task YAML as a run checks it: typed by the schema, then built into a Task."""
    config = build({**composed(), "task": spec}, task_source=source, check_files=False)
    return config.task_spec


# -- every shipped task is valid ------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_task_is_valid(name):
    check_task(shipped(name), f"conf/task/{name}.yaml")
    check([f"task={name}"])  # the check run.py makes


@pytest.mark.skipif(not GLUE_DIR.is_dir(), reason=f"no GLUE folder at {GLUE_DIR}")
@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_tasks_match_the_columns_of_the_glue_files(name):
    task = check_task(shipped(name))
    if task.generate or not (GLUE_DIR / task.local.get("folder", "")).is_dir():
        pytest.skip(f"{name}: not in {GLUE_DIR}")
    task.check_columns(GLUE_DIR)


def test_mnli_main_metric_carries_the_split_suffix():
    assert check_task(shipped("mnli")).metric_names == ["accuracy_matched", "accuracy_mismatched"]


# -- each mistake names the key ---------------------------------------------------------------------------

def edited(name: str, change) -> dict:
    task = copy.deepcopy(shipped(name))
    change(task)
    return task


def rename_key(section: dict, old: str, new: str) -> None:
    section[new] = section.pop(old)


MISTAKES = {
    "misspelt main_metric": ("rte", lambda t: rename_key(t, "main_metric", "main_metrc"),
                             ["unknown setting 'task.main_metrc'", "did you mean 'main_metric'",
                              "valid under task: name,"]),
    "xfiles at the top": ("rte", lambda t: t.update(xfiles=1), ["unknown setting 'task.xfiles'", "valid under task"]),
    "xfiles under local": ("rte", lambda t: t["local"].update(xfiles=1),
                           ["unknown setting 'task.local.xfiles'", "did you mean 'files'", "valid under task.local"]),
    "misspelt required key": ("rte", lambda t: rename_key(t, "text_fields", "text_field"),
                              ["unknown setting 'task.text_field'", "did you mean 'text_fields'"]),
    "missing required key": ("rte", lambda t: t.pop("text_fields"), ["task.text_fields is not set"]),
    "three names for two labels": ("rte", lambda t: t["label_names"].append("maybe"),
                                   ["num_labels is 2 but label_names names 3", "entailment, not_entailment, maybe"]),
    "text_fields a string": ("rte", lambda t: t.update(text_fields="sentence1"),
                             ["task.text_fields='sentence1': must be a list of 1 or 2 column names"]),
    "three text fields": ("rte", lambda t: t["text_fields"].append("sentence3"),
                          ["task.text_fields=", "must be a list of 1 or 2 column names"]),
    "num_labels not a number": ("rte", lambda t: t.update(num_labels="two"),
                                ["task.num_labels='two': must be an integer >= 1"]),
    "label_range on a classifier": ("rte", lambda t: t.update(label_range=[0, 1]),
                                    ["label_range is for a regression task", "num_labels is 2"]),
    "regression with a classification metric": ("stsb", lambda t: t.update(metric="sst2", main_metric="accuracy"),
                                                 ["metric 'sst2' is a classification metric", "num_labels is 1"]),
    "unknown metric": ("rte", lambda t: t.update(metric="glue"), ["metric='glue' is not a GLUE metric set",
                                                                  "valid: cola, sst2"]),
    "main_metric the metric does not return": ("sst2", lambda t: t.update(main_metric="f1"),
                                               ["main_metric 'f1' is not among what metric 'sst2' returns: accuracy"]),
    "split without a file": ("rte", lambda t: t["splits"].update(test="test"),
                             ["local.files has no file for split 'test'"]),
    "file for no split": ("rte", lambda t: rename_key(t["local"]["files"], "validation", "validaton"),
                          ["local.files has no file for split 'validation'", "did you mean 'validaton'"]),
    "no data at all": ("rte", lambda t: (t.pop("hub"), t.pop("local")), ["names no data"]),
    "unknown format": ("rte", lambda t: t["local"].update(format="xlsx"),
                       ["task.local.format='xlsx': must be one of tsv, csv, jsonl, parquet"]),
    "no header and no columns": ("rte", lambda t: t["local"].update(header=False), ["local.columns must name"]),
    "rename onto no field": ("mrpc", lambda t: t["local"]["rename"].update({"Quality": "lable"}),
                             ["turns the file's column 'Quality' into 'lable'", "did you mean 'label'"]),
    # the issue's example: text_fields names a column that rename turns into another name
    "text field renamed away": ("mrpc", lambda t: t.update(text_fields=["s_a", "missing_col"]) or
                                t["local"].update(rename={"s_a": "sentence1", "Quality": "label"}),
                                ["local.rename turns the file's column 's_a' into 'sentence1'",
                                 "text_fields: s_a, missing_col"]),
    "label field also a text field": ("rte", lambda t: t.update(label_field="sentence1"),
                                      ["text_fields and label_field must be different columns"]),
}


@pytest.mark.slow
@pytest.mark.parametrize("mistake", list(MISTAKES))
def test_each_mistake_fails_naming_the_key(mistake):
    name, change, expected = MISTAKES[mistake]
    with pytest.raises(ConfigError) as error:
        check_task(edited(name, change), f"conf/task/{name}.yaml")
    message = str(error.value)
    assert f"conf/task/{name}.yaml" in message
    for text in expected:
        assert text in message, message


# -- columns, from the headers only -----------------------------------------------------------------------

def reviews_task(tmp_path: Path, kind: str, columns: list[str]) -> Task:
    """A custom task whose file has ``columns`` (its own names), renamed onto text/aspect/label."""
    path = tmp_path / f"reviews.{kind}"
    rows = [dict(zip(columns, ["great", "food", "good"]))]
    if kind == "csv":
        path.write_text(",".join(columns) + "\ngreat,food,good\nragged row\n")  # a bad row: not read
    elif kind == "tsv":
        path.write_text("\t".join(columns) + "\ngreat\tfood\tgood\n")
    elif kind == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "not json\n")  # not read either
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
    return check_task({"name": "reviews", "text_fields": ["text", "aspect"], "label_field": "label", "num_labels": 2,
                       "label_names": ["bad", "good"], "metric": "sst2", "main_metric": "accuracy",
                       "local": {"files": {"train": path.name, "validation": path.name},
                                 "rename": {"review_text": "text", "verdict": "label"}}})


@pytest.mark.parametrize("kind", ["csv", "tsv", "jsonl", "parquet"])
def test_columns_are_read_from_the_header_only(tmp_path, kind):
    task = reviews_task(tmp_path, kind, ["review_text", "aspect", "verdict"])
    task.check_columns(tmp_path)  # the bad rows after the header are left to the full read


@pytest.mark.parametrize("kind", ["csv", "tsv", "jsonl", "parquet"])
def test_a_missing_column_is_named_in_the_files_and_the_tasks_names(tmp_path, kind):
    task = reviews_task(tmp_path, kind, ["review", "aspect", "verdict"])
    with pytest.raises(ConfigError) as error:
        task.check_columns(tmp_path)
    message = str(error.value)
    assert f"reviews.{kind} lacks column(s) review_text (the task's 'text' after local.rename)" in message
    assert "in the file's own names, task 'reviews' expects columns ['review_text', 'aspect', 'verdict'], " \
           "found ['review', 'aspect', 'verdict']" in message
    assert "in the task's names (after local.rename), it needs ['text', 'aspect', 'label'], " \
           "found ['review', 'aspect', 'label']" in message


# -- the command line: task.* overrides, every task of a sweep ----------------------------------------

@pytest.mark.slow
def test_task_overrides_are_checked_with_the_task():
    check(["task=mrpc", "task.main_metric=f1"])  # MRPC's metric returns f1
    with pytest.raises(ConfigError, match=r"conf/task/sst2\.yaml\): main_metric 'f1' is not among"):
        check(["task=sst2", "task.main_metric=f1"])
    with pytest.raises(ConfigError, match=r"task 'rte'.*main_metric 'f1'.*in the run .*task=rte"):  # one run of the sweep
        check(["-m", "experiment=glue_table", "task.main_metric=f1"])
    with pytest.raises(ConfigError, match=r"unknown setting 'task.main_metrc' \(did you mean 'main_metric'\?\)"):
        check(["task=mrpc", "+task.main_metrc=f1"])
    with pytest.raises(ConfigError, match="task.metric is not set"):
        check(["task=mrpc", "~task.metric"])
    with pytest.raises(ConfigError, match="turns the file's column 'Quality' into 'lable'"):
        check(["task=mrpc", "task.local.rename={Quality:lable}"])  # merged into the YAML's rename, as Hydra does


def test_progress_refuses_a_bad_task_override(capsys):
    from experiments import progress

    assert progress.main(["task.main_metric=f1"]) == 2
    assert "main_metric 'f1'" in capsys.readouterr().err


def test_the_runner_checks_the_task_before_writing_anything(tmp_path):
    from experiments.run import runner

    with pytest.raises(ConfigError, match="num_labels is 3 but label_names names 2"):
        runner.run(composed(f"results.dir={tmp_path}", "task.num_labels=3"), show_progress=False)
    assert not any(tmp_path.iterdir())


# -- through run.py: each mistake of the issue fails before training -------------------------------------

WATCH = """import atexit, runpy, sys
heavy = ("transformers", "datasets", "accelerate")
atexit.register(lambda: print("heavy imports:", [m for m in heavy if m in sys.modules], file=sys.stderr))
sys.argv = ["run.py", *sys.argv[1:]]
runpy.run_path("run.py", run_name="__main__")
"""


def run_py(*args):
    """run.py in a subprocess that reports, on exit, which heavy modules it had imported."""
    return subprocess.run([sys.executable, "-c", WATCH, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120)


def write_rte_files(folder: Path, columns: str) -> None:
    for name in ("train.csv", "dev.csv"):
        (folder / name).write_text(f"{columns}\na,b,entailment\n")


ISSUE_MISTAKES = {  # task YAML edit (a function of RTE's YAML) -> what the error must say
    "main_metrc": (lambda t: rename_key(t, "main_metric", "main_metrc"),
                   ["unknown setting 'task.main_metrc' (did you mean 'main_metric'?)"]),
    "xfiles": (lambda t: t.update(xfiles=1), ["unknown setting 'task.xfiles'"]),
    "num_labels vs label_names": (lambda t: t["label_names"].append("maybe"),
                                  ["num_labels is 2 but label_names names 3"]),
    "text_field": (lambda t: rename_key(t, "text_fields", "text_field"),
                   ["unknown setting 'task.text_field' (did you mean 'text_fields'?)"]),
    "column missing after rename": (
        lambda t: t.update(local={"files": {"train": "train.csv", "validation": "dev.csv"},
                                  "rename": {"s_a": "sentence1", "s_b": "sentence2"}}),
        ["train.csv lacks column(s) s_b (the task's 'sentence2' after local.rename)",
         "in the file's own names, task 'rte' expects columns ['s_a', 's_b', 'label'], found ['s_a', 'x', 'label']",
         "in the task's names (after local.rename), it needs ['sentence1', 'sentence2', 'label'], "
         "found ['sentence1', 'x', 'label']"]),
}


@pytest.mark.slow
@pytest.mark.parametrize("mistake", list(ISSUE_MISTAKES))
def test_run_py_stops_a_bad_task_yaml_before_training(mistake, tmp_path):
    change, expected = ISSUE_MISTAKES[mistake]
    (tmp_path / "conf" / "task").mkdir(parents=True)
    (tmp_path / "conf" / "task" / "mine.yaml").write_text(yaml.safe_dump(edited("rte", change)))
    write_rte_files(tmp_path, "s_a,x,label")
    done = run_py("--config-dir", str(tmp_path / "conf"), "task=mine", f"data.glue_dir={tmp_path}",
                  f"results.dir={tmp_path / 'results'}", f"hydra.run.dir={tmp_path / 'hydra'}")
    assert done.returncode != 0
    assert "mine.yaml" in done.stderr or mistake == "column missing after rename"
    for text in expected:
        assert text in done.stderr, done.stderr
    assert "heavy imports: []" in done.stderr  # no model, no data loading, no training
    assert not (tmp_path / "results").exists() and not (tmp_path / "hydra").exists()


@pytest.mark.slow
def test_run_py_stops_a_bad_task_override_before_training(tmp_path):
    done = run_py("task=sst2", "task.main_metric=f1", f"results.dir={tmp_path / 'results'}")
    assert done.returncode != 0
    assert "main_metric 'f1' is not among what metric 'sst2' returns: accuracy" in done.stderr, done.stderr
    assert "heavy imports: []" in done.stderr
    assert not (tmp_path / "results").exists()


@pytest.mark.slow
def test_a_good_task_in_another_config_dir_reaches_hydra(tmp_path):
    (tmp_path / "task").mkdir()
    (tmp_path / "task" / "mine.yaml").write_text(yaml.safe_dump(shipped("rte")))
    done = run_py("--config-dir", str(tmp_path), "task=mine", "--cfg", "job")
    assert done.returncode == 0, done.stderr
    assert "main_metric: accuracy" in done.stdout


# -- the docs --------------------------------------------------------------------------------------

def task_docs() -> str:
    return (REPO / "docs" / "adding-a-task.md").read_text()


def test_the_task_docs_list_every_key_of_the_schema_once():
    from dataclasses import fields

    from experiments.config.schema import HubSource, LocalSource, TaskConfig

    rows = re.findall(r"^\| `([a-z_.]+)`", task_docs(), flags=re.M)
    expected = ([f.name for f in fields(TaskConfig) if f.name not in ("hub", "local")]
                + [f"hub.{f.name}" for f in fields(HubSource)] + [f"local.{f.name}" for f in fields(LocalSource)])
    assert sorted(rows) == sorted(expected)


def test_the_task_docs_example_is_valid():
    example = task_docs().split("```yaml", 1)[1].split("```", 1)[0]
    check_task(yaml.safe_load(example), "docs/adding-a-task.md")
