"""Shared helpers and fixtures.

* tiny transformers models built from a config with random weights (no download): ``make_bert(seed)``
  and friends build a fresh model each call; the same seed gives the same weights, so a test can make
  "the same base model" twice (one to adapt, one to load into);
* the repository's paths (``REPO``, ``CONF``, ``GLUE_DIR``), the overrides of a short run (``SHORT``),
  ``composed(...)`` (conf/ composed as run.py composes it, as a plain dict), ``short_config(tmp_path,
  ...)`` and ``records(folder)``, ``run_cli(...)`` (run.py in a subprocess, timed).

Tests marked ``slow`` train or start processes; ``python -m pytest -m "not slow"`` runs the rest in
well under a minute.
"""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["WANDB_MODE"] = "disabled"

import pytest  # noqa: E402
import torch  # noqa: E402
from transformers import (BertConfig, BertForSequenceClassification, GPT2Config,  # noqa: E402
                          GPT2ForSequenceClassification, LlamaConfig, LlamaForCausalLM,
                          LlamaForSequenceClassification)

from hydra import compose, initialize_config_dir  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from experiments.config import open_mapping_overrides, register  # noqa: E402

# tiny models gain nothing from several threads, and the test machine's cores are shared
torch.set_num_threads(1)
register()  # the typed schema, as run.py registers it before Hydra composes

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
#: the real GLUE data in the classic glue_data layout: $GLUE_DIR, else ../shared/glue beside the repo
GLUE_DIR = Path(os.environ.get("GLUE_DIR") or REPO.parent / "shared" / "glue")
#: a run of seconds: 3 steps of 8 short examples, on 64 training and 32 dev examples
SHORT = ["train.max_steps=3", "train.batch_size=8", "train.max_length=32", "train.eval_each_epoch=false",
         "data.max_train_samples=64", "data.max_eval_samples=32"]


def composed(*overrides) -> dict:
    """conf/ composed with ``overrides`` on the typed schema, as a run gets it (a plain, resolved dict)."""
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return OmegaConf.to_container(compose("config", overrides=open_mapping_overrides(list(overrides))),
                                      resolve=True)


def short_config(tmp_path, *overrides) -> dict:
    """A short run's config, its records under ``tmp_path``."""
    return composed(*SHORT, f"results.dir={tmp_path}", *overrides)


def records(folder) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(Path(folder).glob("runs/*.json"))]


def run_cli(*args, timeout=120, env=None):
    """``python run.py ARGS`` from the repository; (the finished process, its wall seconds)."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "run.py", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env=env)
    return done, time.perf_counter() - start

VOCAB_SIZE = 100
NUM_LABELS = 3


def _build(model_class, config, seed):
    torch.manual_seed(seed)
    return model_class(config).eval()


def make_bert(seed: int = 0, hidden_size: int = 32, num_labels: int = NUM_LABELS):
    """BERT, 2 layers, hidden 32: linear leaves query, key, value, attention.output.dense,
    intermediate.dense (32 -> 64), output.dense (64 -> 32), pooler.dense; head ``classifier``. The
    larger-than-usual initializer range makes the logits depend visibly on every weight."""
    config = BertConfig(vocab_size=VOCAB_SIZE, hidden_size=hidden_size, num_hidden_layers=2,
                        num_attention_heads=4, intermediate_size=2 * hidden_size, max_position_embeddings=64,
                        num_labels=num_labels, initializer_range=0.2)
    return _build(BertForSequenceClassification, config, seed)


def _llama_config(num_labels=NUM_LABELS):
    return LlamaConfig(vocab_size=VOCAB_SIZE, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                       pad_token_id=0, num_labels=num_labels, initializer_range=0.2)


def make_llama(seed: int = 0, causal_lm: bool = False):
    """Llama, 2 layers, hidden 32, grouped-query attention (k_proj/v_proj 32 -> 16): head ``score``
    (sequence classification) or ``lm_head`` (causal LM, never adapted)."""
    model_class = LlamaForCausalLM if causal_lm else LlamaForSequenceClassification
    return _build(model_class, _llama_config(), seed)


def make_gpt2(seed: int = 0):
    """GPT-2, 2 layers, hidden 32: its c_attn, c_proj, c_fc are transposed ``Conv1D`` layers."""
    config = GPT2Config(vocab_size=VOCAB_SIZE, n_embd=32, n_layer=2, n_head=4, n_positions=64,
                        pad_token_id=0, bos_token_id=1, eos_token_id=2, num_labels=NUM_LABELS,
                        initializer_range=0.2)
    return _build(GPT2ForSequenceClassification, config, seed)


@pytest.fixture
def token_ids():
    """A batch of 2 sequences of 8 token ids, none of them the pad id 0."""
    return torch.randint(1, VOCAB_SIZE, (2, 8), generator=torch.Generator().manual_seed(1234))


@pytest.fixture
def tiny_bert():
    return make_bert()


@pytest.fixture
def tiny_llama():
    return make_llama()
