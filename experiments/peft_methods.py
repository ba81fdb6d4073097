"""The PEFT methods the bridge runs (``variant=peft variant.method=...``), their trainable parameters on
the packaged MiniLM, and which of them this project also implements natively; then those that cannot run
here, with why. Prints markdown (docs/peft-methods.md holds its output):

    python -m experiments.peft_methods                   # r = 8, alpha = 16 on query, value
    python -m experiments.peft_methods --rank 4 --targets query,key,value
"""
from __future__ import annotations

import argparse
import copy
import warnings

import variants
from variants import peft_tuner
from variants.peft_format import peft_variants

from .run.models import load_model_and_tokenizer, minilm_folder


def native_counterparts() -> dict[str, list[str]]:
    """PEFT method -> the native variants whose declared PEFT counterpart is that method."""
    found: dict[str, list[str]] = {}
    for name in peft_variants():
        cls = variants.lookup(name)
        config = cls.peft.config(cls, rank=1, alpha=1.0, dropout=0.0, options=cls.options)
        found.setdefault(config["peft_type"].lower(), []).append(name)
    return found


def table(rank: int, alpha: float, targets: list[str]) -> str:
    model, _ = load_model_and_tokenizer(minilm_folder(), num_labels=2)
    head = variants.trainable_parameters(variants.apply(copy.deepcopy(model), "head"))
    natives = native_counterparts()
    lines = [f"| method | trainable parameters (adapter + head of {head}) | implemented natively |",
             "| :--- | ---: | :--- |"]
    for method in peft_tuner.methods():
        if method in peft_tuner.CANNOT_RUN:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            adapted = variants.apply(copy.deepcopy(model), "peft", rank=rank, alpha=alpha, target_modules=targets,
                                     method=method)
        lines.append(f"| `{method}` | {variants.trainable_parameters(adapted):,} | "
                     f"{', '.join(natives.get(method, [])) or ''} |")
    lines += ["", "| cannot run here | why |", "| :--- | :--- |"]
    lines += [f"| `{method}` | {reason} |" for method, reason in sorted(peft_tuner.CANNOT_RUN.items())]
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--alpha", type=float, default=16.0)
    parser.add_argument("--targets", default="query,value")
    args = parser.parse_args(argv)
    print(table(args.rank, args.alpha, args.targets.split(",")))


if __name__ == "__main__":
    main()
