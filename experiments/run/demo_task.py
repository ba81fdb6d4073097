"""The embedded default task ("demo"): generated here, deterministically, so `python run.py` runs with no
network and no GLUE folder.

Task: "is the red thing higher?" One short sentence puts a red object and an object of another colour
in a vertical relation, e.g. "the red cup is under the green box" (label 0) or "the pink
hat is below the red lamp" (label 1). The label is (red comes first) XOR (relation says "lower"): every
word is as frequent in both classes, so only word order decides. A frozen MiniLM sentence vector (the
pooler output a head-only model sees) barely separates the classes; adapting attention learns it fast.

How large the gap is, with commands in this repo:
    python run.py variant=head        # head-only on the frozen encoder: stays near chance (0.5)
    python run.py                     # LoRA r=8 on query,value: learns the task
    python -m pytest tests/test_runner.py -k demo_task   # 150 steps each: head < 0.62, LoRA >= head + 0.2
README gives the numbers of the last two default runs. LoRA sits at chance for a while and then jumps
(the XOR has no linear signal to follow at first): short runs need lr >= 5e-4.
"""
from __future__ import annotations

import os
import random
from pathlib import Path

from variants.files import write_atomically

VERSION = 2
SEED = 20240601
TRAIN_ROWS = 4000
DEV_ROWS = 500
LABEL_NAMES = ["red_is_lower", "red_is_higher"]

COLOURS = ["blue", "green", "yellow", "black", "white", "purple", "orange", "brown", "pink", "gray"]
OBJECTS = ["box", "ball", "cup", "book", "lamp", "chair", "hat", "bag", "bottle", "plate"]
HIGHER = ["above", "over"]
LOWER = ["below", "under"]


def sentence(rng: random.Random, label: int) -> str:
    """One sentence whose label is ``label``: 1 when the red object is the higher one."""
    red = f"red {rng.choice(OBJECTS)}"
    other = f"{rng.choice(COLOURS)} {rng.choice(OBJECTS)}"
    red_first = rng.random() < 0.5
    says_higher = red_first == bool(label)      # "red ABOVE other" or "other BELOW red" for label 1
    relation = rng.choice(HIGHER if says_higher else LOWER)
    first, second = (red, other) if red_first else (other, red)
    return f"the {first} is {relation} the {second}"


def rows(split: str) -> list[tuple[str, int]]:
    """The (sentence, label) rows of ``split`` ("train" or "dev"): the same on every call, half of each
    label, and no dev sentence also in train."""
    if split not in ("train", "dev"):
        raise ValueError(f"unknown demo split {split!r}; valid: train, dev")
    rng = random.Random(SEED)
    train = _draw(rng, TRAIN_ROWS, exclude=set())
    if split == "train":
        return train
    return _draw(rng, DEV_ROWS, exclude={text for text, _ in train})


def _draw(rng: random.Random, count: int, exclude: set) -> list[tuple[str, int]]:
    labels = [i % 2 for i in range(count)]
    rng.shuffle(labels)
    drawn, seen = [], set(exclude)
    for label in labels:
        text = sentence(rng, label)
        while text in seen:
            text = sentence(rng, label)
        seen.add(text)
        drawn.append((text, label))
    return drawn


def default_folder() -> Path:
    """$LORA_ARENA_DEMO_DIR, else ~/.cache/lora-arena/demo-v<VERSION> (never inside the repository)."""
    if os.environ.get("LORA_ARENA_DEMO_DIR"):
        return Path(os.path.expanduser(os.environ["LORA_ARENA_DEMO_DIR"]))
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return Path(cache) / "lora-arena" / f"demo-v{VERSION}"


def tsv_text(table: list[tuple[str, int]]) -> str:
    """A GLUE-style TSV: header ``sentence<TAB>label``, one row a line."""
    return "sentence\tlabel\n" + "".join(f"{text}\t{label}\n" for text, label in table)


def generate(kind: str = "demo", folder=None) -> Path:
    """Write train.tsv and dev.tsv of the demo task into ``folder`` (default: ``default_folder()``) unless
    they are already there with the right content; returns the folder."""
    if kind != "demo":
        raise ValueError(f"unknown generated task {kind!r}; valid: demo")
    folder = Path(folder) if folder is not None else default_folder()
    folder.mkdir(parents=True, exist_ok=True)
    for split in ("train", "dev"):
        path, text = folder / f"{split}.tsv", tsv_text(rows(split))
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            write_atomically(path, text)
    return folder
