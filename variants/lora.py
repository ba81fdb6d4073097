"""LoRA (Hu et al., 2021): h = W x + s B A x with s = alpha / r, A (r x in), B (out x r), B = 0 at the start.

The low-rank adapter the LoRA family builds on: rsLoRA changes the scale, DoRA adds a magnitude, QLoRA
stores the base in NF4.

Options: ``init`` = ``kaiming`` (A Kaiming-uniform, B = 0), ``gaussian`` (A ~ N(0, 1/r), B = 0),
``random`` (both random) or ``pissa`` (PiSSA, Meng et al., 2024: s B A = the top-r singular part of W,
as PEFT's ``init_lora_weights="pissa"``); with ``random`` and ``pissa`` the frozen weight is offset by
-s*B0*A0 (for PiSSA: it keeps the residual), so the start still equals the base model.
``trainable_alpha`` makes alpha a learned scalar.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .base import Adapter, dense_weight
from .peft_counterpart import PeftCounterpart


class LoraCounterpart(PeftCounterpart):
    """PEFT's ``LoraConfig``, with the flags that make it rsLoRA (``use_rslora``) or DoRA (``use_dora``)."""

    #: our init -> PEFT's ``init_lora_weights`` (PEFT has no init="random")
    inits = {"kaiming": True, "gaussian": "gaussian", "pissa": "pissa"}

    def __init__(self, use_rslora: bool = False, use_dora: bool = False, extra_tensors: dict | None = None):
        self.flags = {"use_rslora": use_rslora, "use_dora": use_dora}
        self.tensors = {".lora_A.weight": "lora_A", ".lora_B.weight": "lora_B", **(extra_tensors or {})}

    def config(self, variant, *, rank, alpha, dropout, options):
        if options["trainable_alpha"] or options["init"] not in self.inits:
            return None
        return {"peft_type": "LORA", "r": rank, "lora_alpha": alpha, "lora_dropout": dropout, "bias": "none",
                "init_lora_weights": self.inits[options["init"]], **self.flags}

    def export_config(self, variant, *, rank, alpha, dropout, options):
        # init="random"/"pissa" offset our frozen weight, which PEFT's base model does not have: the
        # export writes an exactly equivalent rank-2r adapter instead (see ``layer_tensors``); a trained
        # alpha is folded into B
        offset = options["init"] in variant.offset_inits
        return self.config(variant, rank=rank * (2 if offset else 1), alpha=alpha, dropout=dropout,
                           options={**options, "init": "kaiming", "trainable_alpha": False})

    def read_config(self, variant, peft_config):
        if peft_config.get("peft_type") != "LORA" or any(
                bool(peft_config.get(flag)) != value for flag, value in self.flags.items()):
            return None
        unsupported = {key: peft_config.get(key) for key in ("rank_pattern", "alpha_pattern", "lora_bias")
                       if peft_config.get(key)}
        if peft_config.get("bias", "none") != "none":
            unsupported["bias"] = peft_config["bias"]
        if peft_config.get("init_lora_weights", True) not in (True, False, "gaussian"):
            # e.g. "pissa": its trained factors only fit a residual base (PEFT converts such a folder
            # with save_pretrained(path_initial_model_for_weight_conversion=...))
            unsupported["init_lora_weights"] = peft_config["init_lora_weights"]
        if unsupported:
            raise ValueError(f"PEFT LoRA settings {unsupported} have no equivalent here")
        settings = {"rank": peft_config["r"], "alpha": peft_config["lora_alpha"],
                    "dropout": peft_config.get("lora_dropout", 0.0)}
        return settings, {}

    @torch.no_grad()
    def layer_tensors(self, layer):
        """(A, B) with PEFT's ``scaling * B @ A`` this layer's whole change of the original base weight."""
        a, b, scale = layer.lora_A, layer.lora_B, float(layer.scale_value())
        if hasattr(layer, "lora_A_init"):
            # our base weight also carries -s0 * B0 A0: a rank-2r pair [B, -B0] [A; A0] expresses both parts
            a = torch.cat([a, layer.lora_A_init], 0)
            b = torch.cat([b * scale, -layer.init_scale * layer.lora_B_init], 1)
            scale = 1.0
        rank = layer.rank * (2 if hasattr(layer, "lora_A_init") else 1)
        peft_scale = layer.scaling(layer.config_alpha, rank)  # PEFT has one scaling for every layer
        return {**super().layer_tensors(layer), ".lora_A.weight": a,
                ".lora_B.weight": b if scale == peft_scale else b * (scale / peft_scale)}


class LoRA(Adapter):
    name = "lora"
    step_overhead_goal = 1.0
    options = {"init": "kaiming", "trainable_alpha": False}
    inits = ("kaiming", "gaussian", "random", "pissa")
    #: inits whose starting factors are kept as buffers and offset the frozen weight
    offset_inits = ("random", "pissa")
    combinable = True
    peft = LoraCounterpart()

    @classmethod
    def check_init(cls, init: str) -> None:
        if init not in cls.inits:
            raise ValueError(f"{cls.name}: unknown init {init!r}; choose one of {', '.join(cls.inits)}")

    @classmethod
    def check_options(cls, options: dict) -> None:
        cls.check_init(options["init"])

    @classmethod
    def trainable_per_layer(cls, in_features, out_features, rank, options):
        return rank * (in_features + out_features) + (1 if options.get("trainable_alpha") else 0)

    @classmethod
    def scaling(cls, alpha: float, rank: int) -> float:
        """The factor the update is multiplied by: alpha / r."""
        return alpha / rank

    def create_parameters(self, *, alpha: float, shared: Any, init: str, trainable_alpha: bool) -> None:
        self.check_init(init)  # also when a layer is built directly, without variants.apply
        weight = dense_weight(self.base_layer)
        factory = {"device": weight.device, "dtype": torch.float32}
        self.lora_A = nn.Parameter(torch.empty(self.rank, self.in_features, **factory))
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, self.rank, **factory))
        if init == "gaussian":
            nn.init.normal_(self.lora_A, std=1.0 / self.rank)
        else:
            nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.config_alpha = float(alpha)
        if trainable_alpha:
            self.alpha = nn.Parameter(torch.tensor(float(alpha), **factory))
        else:
            self.alpha = float(alpha)
        # the scale the starting offset is made with: fixed, even when alpha is trained later
        self.init_scale = self.scaling(float(alpha), self.rank)
        if init == "random":
            nn.init.kaiming_uniform_(self.lora_B, a=math.sqrt(5))
        elif init == "pissa":
            self.pissa_factors(weight)
        if init in self.offset_inits:
            # Keep a copy of the starting factors: the base weight is offset by their product and a
            # saved adapter must be able to apply the same offset to a fresh base model.
            self.register_buffer("lora_A_init", self.lora_A.detach().clone())
            self.register_buffer("lora_B_init", self.lora_B.detach().clone())
            self.apply_init_offset(sign=-1)

    @torch.no_grad()
    def pissa_factors(self, weight: torch.Tensor) -> None:
        """W = U S V^T: B = U_r sqrt(S_r / s), A = sqrt(S_r / s) V_r^T, so s B A is W's top-r part."""
        u, singular, vh = torch.linalg.svd(weight.float(), full_matrices=False)
        root = torch.sqrt(singular[: self.rank] / self.init_scale)
        self.lora_A.copy_(root.unsqueeze(1) * vh[: self.rank])
        self.lora_B.copy_(u[:, : self.rank] * root)

    @torch.no_grad()
    def apply_init_offset(self, sign: int) -> None:
        if hasattr(self, "lora_A_init"):
            self._add_to_base_weight(sign * self.init_scale * (self.lora_B_init @ self.lora_A_init))

    @torch.no_grad()
    def load_adapter_state(self, state):
        self.apply_init_offset(sign=+1)  # take out the offset of this layer's own starting factors...
        super().load_adapter_state(state)
        self.apply_init_offset(sign=-1)  # ...and put in the offset of the saved ones

    def scale_value(self) -> torch.Tensor | float:
        return self.scaling(self.alpha, self.rank)

    def update(self, x: torch.Tensor) -> torch.Tensor:
        device = x.device.type
        if not (torch.is_autocast_enabled(device) and x.dtype == torch.get_autocast_dtype(device)):
            x = x.to(self.lora_A.dtype)  # under autocast an input in its dtype would be cast straight back
        return F.linear(F.linear(x, self.lora_A), self.lora_B) * self.scale_value()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base_layer(x)
        if self.merged:
            return out
        dropped = self.dropout(x)
        if out.dtype != self.lora_B.dtype or dropped.dtype != self.lora_A.dtype:
            return out + self.update(dropped).to(out.dtype)
        return self.add_update(out.reshape(-1, self.out_features), dropped.reshape(-1, self.in_features)
                               ).view(out.shape)

    def add_update(self, out_flat: torch.Tensor, x_flat: torch.Tensor) -> torch.Tensor:
        """out + s * (x A^T) B^T as one GEMM that accumulates into ``out`` (2-D, tokens x out), with no
        (tokens x out) temporary for the scale or the add. A plain-number scale is the GEMM's own
        multiplier, so nothing new is saved for backward; a trainable scale multiplies the small B."""
        scale = self.scale_value()
        if isinstance(scale, torch.Tensor):
            return torch.addmm(out_flat, F.linear(x_flat, self.lora_A), (self.lora_B * scale).T)
        return torch.addmm(out_flat, F.linear(x_flat, self.lora_A), self.lora_B.T, alpha=scale)

    def delta_weight(self) -> torch.Tensor:
        return (self.lora_B @ self.lora_A) * self.scale_value()

    def remove(self) -> nn.Module:
        self.unmerge()
        self.apply_init_offset(sign=+1)
        return self.base_layer

    @classmethod
    def combine(cls, states, configs, weights):
        """Stack several adapters of one layer into one of rank sum(r_i) whose update is exactly
        sum_i w_i * delta_i."""
        rank = sum(c["rank"] for c in configs)
        alpha = float(configs[0]["alpha"])
        new_scale = cls.scaling(alpha, rank)
        a_parts, b_parts = [], []
        for state, config, w in zip(states, configs, weights):
            if "lora_A_init" in state:
                raise ValueError(f"{cls.name}: combine does not support adapters made with init="
                                 f"{config.get('options', {}).get('init')!r} (their base weight is offset)")
            old_alpha = float(state["alpha"]) if "alpha" in state else float(config["alpha"])
            old_scale = cls.scaling(old_alpha, config["rank"])
            a_parts.append(state["lora_A"])
            b_parts.append(state["lora_B"] * (w * old_scale / new_scale))
        changes = {"rank": rank, "alpha": alpha, "options": {"trainable_alpha": False, "init": "kaiming"}}
        return {"lora_A": torch.cat(a_parts, 0), "lora_B": torch.cat(b_parts, 1)}, changes
