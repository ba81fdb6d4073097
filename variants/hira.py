"""HiRA (Huang et al., ICLR 2025): h = W0 x + (W0 ⊙ (B A)) x, a Hadamard high-rank update.

A (r x in) and B (out x r) are trained, B = 0 at the start; the update W0 ⊙ (B A) is the frozen weight
multiplied element by element by the rank-r product, so its rank is not bounded by r. As in PEFT's
``HiraConfig`` there is no alpha scaling (``alpha`` is accepted and ignored). Options: ``init`` =
``kaiming`` (A Kaiming-uniform, PEFT's default) or ``gaussian`` (A ~ N(0, 1/r)).
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

from .base import Adapter, dense_weight
from .peft_counterpart import PeftCounterpart


class HiraCounterpart(PeftCounterpart):
    """PEFT's ``HiraConfig``."""

    tensors = {".hira_A": "hira_A", ".hira_B": "hira_B"}

    def config(self, variant, *, rank, alpha, dropout, options):
        return {"peft_type": "HIRA", "r": rank, "hira_dropout": dropout,
                "init_weights": True if options["init"] == "kaiming" else "gaussian"}

    def read_config(self, variant, peft_config):
        if peft_config.get("peft_type") != "HIRA":
            return None
        if peft_config.get("rank_pattern"):
            raise ValueError(f"PEFT HiRA setting rank_pattern={peft_config['rank_pattern']} has no equivalent here")
        init = "gaussian" if peft_config.get("init_weights") == "gaussian" else "kaiming"
        settings = {"rank": peft_config["r"], "alpha": None, "dropout": peft_config.get("hira_dropout", 0.0)}
        return settings, {"init": init}


class HiRA(Adapter):
    name = "hira"
    step_overhead_goal = 1.0
    options = {"init": "kaiming"}
    inits = ("kaiming", "gaussian")
    rank_bounded_by_layer = False  # W0 ⊙ (B A) can have rank up to min(in, out)
    peft = HiraCounterpart()

    @classmethod
    def check_options(cls, options):
        if options["init"] not in cls.inits:
            raise ValueError(f"hira: unknown init {options['init']!r}; choose one of {', '.join(cls.inits)}")

    @classmethod
    def trainable_per_layer(cls, in_features, out_features, rank, options):
        return rank * (in_features + out_features)

    def create_parameters(self, *, alpha, shared, init):
        device = dense_weight(self.base_layer).device
        self.hira_A = nn.Parameter(torch.empty(self.rank, self.in_features, device=device))
        self.hira_B = nn.Parameter(torch.zeros(self.out_features, self.rank, device=device))
        if init == "gaussian":
            nn.init.normal_(self.hira_A, std=1.0 / self.rank)
        else:
            nn.init.kaiming_uniform_(self.hira_A, a=math.sqrt(5))

    def delta_weight(self):
        """W0 ⊙ (B A), with W0 the frozen weight (unmerged: ``merge`` keeps the delta it added)."""
        return dense_weight(self.base_layer).to(self.hira_A.dtype) * (self.hira_B @ self.hira_A)

    def update(self, x):
        x = x.to(self.hira_A.dtype)
        return F.linear(x, self.delta_weight())
