"""Task data: load a GLUE-style task (an ``experiments.config.Task``) and batch it.

    splits = load_splits(task, glue_dir="/work/shared/glue")       # DatasetDict: train, validation (...)
    train_loader, eval_loaders = make_loaders(splits, tokenizer, task, batch_size=32)

A task comes from the Hugging Face hub (``task.hub``) or from a folder of files (``task.local``, used
when ``glue_dir`` is given or every file path is absolute). Local files may be TSV (parsed like the
GLUE files: no quoting, UTF-8 with or without BOM), CSV, JSONL or parquet; ``rename`` maps their
columns onto the task's ``text_fields`` and ``label_field``. Every split comes out with the columns
``text_fields + ["label"]``: an int class index, or a float for regression (``num_labels: 1``).
"""
from __future__ import annotations

import csv
import json
import math
import os
import random
from pathlib import Path

import datasets
from torch.utils.data import DataLoader, Sampler

from ..config.task import TRAIN, Task

SELECTION = "selection"  # the split held out of train by data.selection_fraction
TEST = "test"  # the split held out of train by data.test_size, scored once at the end like dev


# -- reading files -----------------------------------------------------------------------------------

def _read_delimited(path: Path, delimiter: str, header: bool, columns, quoting) -> tuple[list[str], list[dict]]:
    with open(path, encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle, delimiter=delimiter, quoting=quoting)
        rows = list(reader)
    if header:
        if not rows:
            return list(columns or []), []
        names, rows = rows[0], rows[1:]
    else:
        if not columns:
            raise ValueError(f"{path}: header is false, so the task's local.columns must name the columns")
        names = list(columns)
    records = []
    for line, row in enumerate(rows, start=2 if header else 1):
        if not row:
            continue
        if len(row) != len(names):
            raise ValueError(f"{path} line {line} has {len(row)} fields, expected {len(names)} "
                             f"({', '.join(names)})")
        records.append(dict(zip(names, row)))
    return names, records


def _read_jsonl(path: Path) -> tuple[list[str], list[dict]]:
    names, records = {}, []
    with open(path, encoding="utf-8-sig") as handle:
        for line, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            try:
                record = json.loads(text)
            except ValueError as error:
                raise ValueError(f"{path} line {line} is not valid JSON: {error}") from None
            if not isinstance(record, dict):
                raise ValueError(f"{path} line {line} is not a JSON object")
            names.update(dict.fromkeys(record))
            records.append(record)
    return list(names), records


def _read_parquet(path: Path) -> tuple[list[str], list[dict]]:
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    return list(table.column_names), table.to_pylist()


def read_table(path: Path, task: Task) -> tuple[list[str], list[dict]]:
    """Column names and rows (dicts) of one of the task's files."""
    kind = task.file_format(path)
    header, columns = task.has_header, (task.local or {}).get("columns")
    if kind == "tsv":
        return _read_delimited(path, "\t", header, columns, csv.QUOTE_NONE)
    if kind == "csv":
        return _read_delimited(path, ",", header, columns, csv.QUOTE_MINIMAL)
    if kind == "jsonl":
        return _read_jsonl(path)
    return _read_parquet(path)


# -- building splits -----------------------------------------------------------------------------------

def _features(task: Task) -> datasets.Features:
    label = datasets.Value("float32") if task.is_regression else datasets.Value("int64")
    return datasets.Features({**{f: datasets.Value("string") for f in task.text_fields}, "label": label})


def _to_dataset(records: list[dict], names: list[str], task: Task, rename: dict, source: str) -> datasets.Dataset:
    """Keep the task's columns of ``records`` (after ``rename``), convert the labels, check everything."""
    if not names:
        raise ValueError(f"{source} is empty: task {task.name!r} needs at least one row in every split")
    problem = task.missing_columns(source, names, rename)
    if problem:
        raise ValueError(problem)
    if not records:
        raise ValueError(f"{source} is empty: task {task.name!r} needs at least one row in every split")
    raw = {rename.get(old, old): old for old in names}
    columns = {f: ["" if r.get(raw[f]) is None else str(r.get(raw[f])) for r in records] for f in task.text_fields}
    columns["label"] = task.read_labels([r.get(raw[task.label_field]) for r in records], source)
    return datasets.Dataset.from_dict(columns, features=_features(task))


def _local_dataset(task: Task, base: Path | None) -> datasets.DatasetDict:
    task.check_columns(base)  # every file's header first: a missing column fails before a large read
    result = {}
    for key, path in task.local_files(base).items():
        names, records = read_table(path, task)
        result[key] = _to_dataset(records, names, task, task.rename, str(path))
    return datasets.DatasetDict(result)


def _hub_dataset(task: Task) -> datasets.DatasetDict:
    hub = task.hub
    try:
        loaded = datasets.load_dataset(hub["path"], hub.get("name"))
    except Exception as error:  # offline, unknown name, ...: one clear line either way
        reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise FileNotFoundError(f"could not load task {task.name!r} from the Hugging Face hub "
                                f"({hub['path']}, {hub.get('name')}): {type(error).__name__}: {reason}; "
                                "offline, pass data.glue_dir=<folder with the GLUE TSV files>") from None
    result = {}
    for key, split in task.splits.items():
        if split not in loaded:
            raise ValueError(f"hub dataset {hub['path']}/{hub.get('name')} has no split {split!r} "
                             f"(it has {sorted(loaded)})")
        part = loaded[split]
        source = f"{hub['path']}/{hub.get('name')} split {split}"
        records = part.select_columns([c for c in part.column_names if c in task.wanted_columns]).to_list()
        result[key] = _to_dataset(records, part.column_names, task, {}, source)
    return datasets.DatasetDict(result)


def _subsample(dataset: datasets.Dataset, limit, seed: int) -> datasets.Dataset:
    if limit is None or int(limit) >= len(dataset):
        return dataset
    if int(limit) < 1:
        raise ValueError(f"max samples must be >= 1 or null, got {limit!r}")
    return dataset.shuffle(seed=seed).select(range(int(limit))).flatten_indices()


def load_splits(task: Task, glue_dir: str | None = None, max_train_samples=None, max_eval_samples=None,
                seed: int = 0, selection_fraction=None, selection_seed: int = 0, test_size=None,
                test_seed: int = 0) -> datasets.DatasetDict:
    """The task's train and evaluation splits (keys as in ``task.splits``: ``train``, ``validation``,
    and for MNLI ``validation_mismatched``), columns ``text_fields + ["label"]``.

    Read from ``glue_dir`` when given (or when the task's files are absolute paths), else from the hub.
    ``max_train_samples`` keeps a random subset (the same for the same ``seed``); ``max_eval_samples`` one
    that is the same for every seed.

    ``selection_fraction`` (e.g. 0.1) holds that share of the training set out as a ``selection``
    split (see ``selection_split``), drawn first, from the whole training set, with ``selection_seed``
    only: it is the same whatever ``seed`` and ``max_train_samples`` are; ``max_train_samples`` then
    subsamples what is left for training. ``max_eval_samples`` does not touch the selection split.

    ``test_size`` (e.g. 5000) holds that many rows of what the selection split leaves out as a ``test``
    split (stratified alike, drawn with ``test_seed`` only): a large evaluation set disjoint from every
    run's training rows and from the selection split, the same for every seed and variant."""
    task = Task.of(task)
    base = None
    if task.generate:
        from .demo_task import generate

        base = generate(task.generate)
    elif glue_dir is not None:
        base = Path(os.path.expanduser(str(glue_dir)))
        if not base.is_dir():
            raise FileNotFoundError(f"data.glue_dir {str(glue_dir)!r} does not exist (or is not a folder)")
        if not task.local:
            raise ValueError(f"task {task.name!r} has no local: section, so it cannot be read from "
                             f"data.glue_dir; leave data.glue_dir unset to load it from the hub")
    if task.uses_local_files(glue_dir):
        splits = _local_dataset(task, base)
    elif task.hub:
        splits = _hub_dataset(task)
    else:
        raise ValueError(f"task {task.name!r} names no hub: dataset and its local: files are relative; "
                         "pass data.glue_dir")
    held_out, test = None, None
    if selection_fraction is not None:
        kept, chosen = selection_split(splits[TRAIN], selection_fraction, selection_seed, task)
        splits[TRAIN], held_out = splits[TRAIN].select(kept), splits[TRAIN].select(chosen)
    if test_size is not None:
        if not 0 < int(test_size) < len(splits[TRAIN]):
            raise ValueError(f"data.test_size={test_size} must leave rows to train on: the training set holds "
                             f"{len(splits[TRAIN])} after the selection split")
        kept, chosen = stratified_split(splits[TRAIN], int(test_size) / len(splits[TRAIN]), f"test-{task.name}-{int(test_seed)}",
                                        task)
        splits[TRAIN], test = splits[TRAIN].select(kept), splits[TRAIN].select(chosen)
    # dev subsets are drawn with a fixed seed, not the training seed: every seed and variant is scored on
    # the same examples, so runs can be paired example by example
    splits = datasets.DatasetDict({
        key: _subsample(part, max_train_samples, seed) if key == TRAIN else _subsample(part, max_eval_samples, 0)
        for key, part in splits.items()})
    if held_out is not None:
        splits[SELECTION] = held_out
    if test is not None:
        splits[TEST] = test
    return splits


def selection_split(train: datasets.Dataset, fraction, seed: int, task: Task) -> tuple[list[int], list[int]]:
    """(rows kept for training, rows held out for selection), positions in ``train``, both ascending.

    Stratified: the same share of every class (regression: of every quantile bin of the score, ten bins
    or fewer on small data) is held out, at least one row of a stratum with two or more. The draw
    depends only on ``seed`` and the task's name, so every variant and training seed sees the same split."""
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction < 1:
        raise ValueError(f"data.selection_fraction must be a number in (0, 1) or null, got {fraction!r}")
    kept, chosen = stratified_split(train, fraction, f"selection-{task.name}-{int(seed)}", task)
    if not chosen or not kept:
        raise ValueError(f"data.selection_fraction={fraction} leaves {len(chosen)} of {len(train)} training rows "
                         "for selection: both parts need at least one row")
    return kept, chosen


def stratified_split(train: datasets.Dataset, fraction: float, draw: str, task: Task) -> tuple[list[int], list[int]]:
    """(rows kept, rows held out), positions in ``train``, both ascending: ``fraction`` of every class (of
    every score bin for regression), at least one row of a stratum with two or more, drawn by ``draw``."""
    labels = list(train["label"])
    if task.is_regression:
        bins = max(1, min(10, len(labels) // 20))
        order = sorted(range(len(labels)), key=lambda i: labels[i])
        strata = [0] * len(labels)
        for rank, index in enumerate(order):
            strata[index] = rank * bins // len(labels)
    else:
        strata = labels
    groups: dict = {}
    for index, stratum in enumerate(strata):
        groups.setdefault(stratum, []).append(index)
    rng = random.Random(draw)
    chosen = []
    for stratum in sorted(groups):
        members = groups[stratum]
        rng.shuffle(members)
        take = round(fraction * len(members))
        if len(members) >= 2:
            take = min(max(take, 1), len(members) - 1)
        chosen += members[:take]
    held = set(chosen)
    return [i for i in range(len(labels)) if i not in held], sorted(chosen)


# -- batching ------------------------------------------------------------------------------------------

def ensure_pad_token(tokenizer):
    """Decoder tokenizers (GPT-2, Llama) have no pad token: pad with the end-of-sequence token."""
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError(f"tokenizer {tokenizer.name_or_path!r} has neither a pad nor an eos token")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def tokenized_cache_dir() -> Path:
    """Where tokenized splits are cached: under HF_DATASETS_CACHE (default ~/.cache/huggingface/datasets)."""
    return Path(datasets.config.HF_DATASETS_CACHE) / "lora-arena-tokenized"


def tokenize(dataset: datasets.Dataset, tokenizer, text_fields, max_length: int) -> datasets.Dataset:
    """Tokenize once; a second call with the same data, tokenizer and max_length reads the cache."""
    from datasets.fingerprint import Hasher

    fields = list(text_fields)
    fingerprint = Hasher.hash([dataset._fingerprint, tokenizer, fields, int(max_length)])
    cache = tokenized_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)

    def encode(batch):
        encoded = tokenizer(*[batch[f] for f in fields], truncation=True, max_length=max_length)
        encoded["length"] = [len(ids) for ids in encoded["input_ids"]]
        return encoded

    encoded = dataset.map(encode, batched=True, remove_columns=fields, new_fingerprint=fingerprint,
                          cache_file_name=str(cache / f"{fingerprint}.arrow"), desc="tokenizing")
    return encoded.rename_column("label", "labels")


class LengthGroupedBatches(Sampler):
    """Batches of indices of similar length, so dynamic padding pads little.

    Train (``shuffle=True``): shuffle, cut into buckets of ``bucket_batches`` batches, sort each bucket by
    length, cut it into batches, shuffle the batches; a new order each epoch, fixed by ``seed``.
    Eval (``shuffle=False``): longest first, the same every time."""

    def __init__(self, lengths, batch_size: int, shuffle: bool, seed: int = 0, bucket_batches: int = 50):
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
        self.lengths, self.batch_size, self.shuffle = list(lengths), int(batch_size), shuffle
        self.seed, self.bucket_batches, self.epoch = seed, bucket_batches, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return math.ceil(len(self.lengths) / self.batch_size)

    def __iter__(self):
        indices = list(range(len(self.lengths)))
        if not self.shuffle:
            indices.sort(key=lambda i: -self.lengths[i])
            return iter([indices[i:i + self.batch_size] for i in range(0, len(indices), self.batch_size)])
        rng = random.Random(f"{self.seed}-{self.epoch}")
        self.epoch += 1
        rng.shuffle(indices)
        bucket = self.batch_size * self.bucket_batches
        batches = []
        for start in range(0, len(indices), bucket):
            chunk = sorted(indices[start:start + bucket], key=lambda i: self.lengths[i])
            batches += [chunk[i:i + self.batch_size] for i in range(0, len(chunk), self.batch_size)]
        rng.shuffle(batches)
        return iter(batches)


class PadCollator:
    """Pads a list of tokenized rows to the longest one; returns a plain dict of tensors."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def __call__(self, rows):
        return dict(self.tokenizer.pad(rows, padding="longest", return_tensors="pt"))


def make_loaders(splits, tokenizer, task: Task, batch_size: int, max_length: int = 128, seed: int = 0,
                 eval_batch_size: int | None = None) -> tuple[DataLoader, dict[str, DataLoader]]:
    """A train loader (length-grouped shuffled batches) and one eval loader per evaluation split (sorted
    by length). Batches: ``input_ids``, ``attention_mask`` (``token_type_ids`` if the tokenizer makes
    them) and ``labels``, each a tensor padded to the longest row of its batch."""
    task = Task.of(task)
    ensure_pad_token(tokenizer)
    collate = PadCollator(tokenizer)
    loaders = {}
    for key, part in splits.items():
        encoded = tokenize(part, tokenizer, task.text_fields, max_length)
        lengths = encoded["length"]
        encoded = encoded.remove_columns("length")
        is_train = key == TRAIN
        size = batch_size if is_train else (eval_batch_size or batch_size)
        sampler = LengthGroupedBatches(lengths, size, shuffle=is_train, seed=seed)
        loaders[key] = DataLoader(encoded, batch_sampler=sampler, collate_fn=collate)
    if TRAIN not in loaders:
        raise ValueError(f"splits has no 'train' split (it has {sorted(loaders)})")
    train = loaders.pop(TRAIN)
    return train, loaders


def loader_order(loader: DataLoader) -> list[int]:
    """The position in its split of each row an (unshuffled) eval loader yields, in the order it yields them."""
    return [index for batch in loader.batch_sampler for index in batch]
