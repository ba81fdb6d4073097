"""The one interface every adapter variant implements.

An adapter wraps one frozen linear layer (``nn.Linear`` or GPT-2's transposed ``Conv1D``) and adds a
small trainable update to its output. A variant is a subclass of :class:`Adapter` in its own file in
this package, with a registry ``name``; it is found automatically (see ``variants/__init__.py``).

A subclass provides:
  * ``create_parameters(shared, **options)`` - make its trainable tensors (called from ``__init__``);
  * ``update(x)`` - the adapter's contribution to the output, for an input that already went through
    dropout (the default ``forward`` is ``base(x) + update(dropout(x))``);
  * ``delta_weight()`` - the same update as a dense ``(out_features, in_features)`` matrix;
and optionally overrides ``forward``/``merge``/``unmerge`` (DoRA does), ``prepare`` (model-level
set-up done once before any layer is wrapped, e.g. VeRA's shared matrices) and ``combine``.

Baselines that adapt no layer (full fine-tuning, head only) subclass :class:`Baseline` instead.
"""
from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn


def is_transposed(layer: nn.Module) -> bool:
    """GPT-2's ``Conv1D`` stores its weight as (in_features, out_features)."""
    return type(layer).__name__ == "Conv1D"


def layer_shape(layer: nn.Module) -> tuple[int, int]:
    """(in_features, out_features) of a linear-like layer."""
    if hasattr(layer, "in_features") and hasattr(layer, "out_features"):
        return int(layer.in_features), int(layer.out_features)
    if is_transposed(layer):
        n_in, n_out = layer.weight.shape
        return int(n_in), int(n_out)
    raise TypeError(f"cannot adapt a {type(layer).__name__}: only linear layers are supported")


def dense_weight(layer: nn.Module) -> torch.Tensor:
    """The layer's weight as an (out_features, in_features) matrix (a view where possible)."""
    if hasattr(layer, "dequantized_weight"):
        return layer.dequantized_weight()
    return layer.weight.T if is_transposed(layer) else layer.weight


class Adapter(nn.Module):
    """A frozen base layer plus a trainable update ``update(dropout(x))``."""

    name: ClassVar[str] = ""
    #: extra keyword options this variant accepts, with their defaults
    options: ClassVar[dict[str, Any]] = {}
    #: whether a rank above min(in, out) is worth a warning (it cannot raise the update's rank)
    rank_bounded_by_layer: ClassVar[bool] = True
    #: whether ``combine`` can add several saved adapters of this variant exactly
    combinable: ClassVar[bool] = True

    def __init__(self, base_layer: nn.Module, *, rank: int, alpha: float, dropout: float = 0.0,
                 shared: Any = None, **options: Any):
        super().__init__()
        self.base_layer = base_layer
        self.in_features, self.out_features = layer_shape(base_layer)
        self.rank = rank
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.merged = False
        settings = {**self.options, **options}
        self.create_parameters(alpha=alpha, shared=shared, **settings)

    # -- what a variant implements -------------------------------------------------------------
    def create_parameters(self, *, alpha: float, shared: Any, **options: Any) -> None:
        raise NotImplementedError

    def update(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def delta_weight(self) -> torch.Tensor:
        """The update as a dense (out_features, in_features) matrix."""
        raise NotImplementedError

    @classmethod
    def prepare(cls, model: nn.Module, targets: dict[str, nn.Module], rank: int, options: dict) -> Any:
        """Model-level set-up, once, before the target layers are wrapped; returns ``shared``."""
        return None

    @classmethod
    def scaling(cls, alpha: float, rank: int) -> float:
        return alpha / rank

    # -- shared behaviour ----------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base_layer(x)
        if self.merged:
            return out
        # the adapter computes in its own dtype (float32); a half-precision base gets its dtype back
        return out + self.update(self.dropout(x)).to(out.dtype)

    @torch.no_grad()
    def _add_to_base_weight(self, delta: torch.Tensor) -> None:
        # an in-place add (not ``weight.data +=``) so that the weight's version counter moves on and
        # caches keyed on it (DoRA's base norm) see the change
        weight = self.base_layer.weight
        weight.add_((delta.T if is_transposed(self.base_layer) else delta).to(weight.dtype))

    @torch.no_grad()
    def merge(self) -> None:
        """Fold the update into the base weight: inference then costs what the base layer costs."""
        if not self.merged:
            self._add_to_base_weight(self.delta_weight())
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        if self.merged:
            self._add_to_base_weight(-self.delta_weight())
            self.merged = False

    def adapter_state(self) -> dict[str, torch.Tensor]:
        """What ``variants.save`` writes for this layer: trainable tensors and persistent buffers."""
        state = {n: p for n, p in self.named_parameters(recurse=False)}
        state.update({n: b for n, b in self.named_buffers(recurse=False)
                      if n not in self._non_persistent_buffers_set})
        return state

    def remove(self) -> nn.Module:
        """Undo the adaptation and give back the base layer."""
        self.unmerge()
        return self.base_layer

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, rank={self.rank}, merged={self.merged}"


class LowRankAdapter(Adapter):
    """h = W x + s * B A x with A (rank x in) and B (out x rank): LoRA and its relatives.

    Options: ``init`` = ``kaiming`` (A Kaiming-uniform, B = 0), ``gaussian`` (A ~ N(0, 1/r), B = 0),
    or ``random`` (both random, the frozen weight offset by -s*B0*A0 so the start still equals the
    base model); ``trainable_alpha`` makes alpha a learned scalar.
    """

    options = {"init": "kaiming", "trainable_alpha": False}
    inits = ("kaiming", "gaussian", "random")

    @classmethod
    def check_init(cls, init: str) -> None:
        if init not in cls.inits:
            raise ValueError(f"{cls.name}: unknown init {init!r}; choose one of {', '.join(cls.inits)}")

    @classmethod
    def check_options(cls, options: dict) -> None:
        """Called by ``variants.apply`` before any layer is touched."""
        cls.check_init(options["init"])

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
        if trainable_alpha:
            self.alpha = nn.Parameter(torch.tensor(float(alpha), **factory))
        else:
            self.alpha = float(alpha)
        # the scale the starting offset is made with: fixed, even when alpha is trained later
        self.init_scale = self.scaling(float(alpha), self.rank)
        if init == "random":
            nn.init.kaiming_uniform_(self.lora_B, a=math.sqrt(5))
            # Keep a copy of the starting factors: the base weight is offset by their product and a
            # saved adapter must be able to apply the same offset to a fresh base model.
            self.register_buffer("lora_A_init", self.lora_A.detach().clone())
            self.register_buffer("lora_B_init", self.lora_B.detach().clone())
            self.apply_init_offset(sign=-1)

    @torch.no_grad()
    def apply_init_offset(self, sign: int) -> None:
        if hasattr(self, "lora_A_init"):
            self._add_to_base_weight(sign * self.init_scale * (self.lora_B_init @ self.lora_A_init))

    def scale_value(self) -> torch.Tensor | float:
        return self.scaling(self.alpha, self.rank)

    def update(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.lora_A.dtype)
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
    def combine(cls, states: list[dict[str, torch.Tensor]], configs: list[dict], weights: list[float]
                ) -> tuple[dict[str, torch.Tensor], int, float]:
        """Stack several adapters of one layer into one of rank sum(r_i) whose update is exactly
        sum_i w_i * delta_i. Returns (state, rank, alpha)."""
        rank = sum(c["rank"] for c in configs)
        alpha = float(configs[0]["alpha"])
        new_scale = cls.scaling(alpha, rank)
        a_parts, b_parts = [], []
        for state, config, w in zip(states, configs, weights):
            if "lora_A_init" in state:
                raise ValueError(f"{cls.name}: combine does not support adapters made with init='random'")
            old_alpha = float(state["alpha"]) if "alpha" in state else float(config["alpha"])
            old_scale = cls.scaling(old_alpha, config["rank"])
            a_parts.append(state["lora_A"])
            b_parts.append(state["lora_B"] * (w * old_scale / new_scale))
        return {"lora_A": torch.cat(a_parts, 0), "lora_B": torch.cat(b_parts, 1)}, rank, alpha


class Baseline:
    """A comparison point that adapts no layer: it only decides what is trainable."""

    name: ClassVar[str] = ""

    @staticmethod
    def set_trainable(model: nn.Module, head_prefixes: list[str]) -> None:
        raise NotImplementedError
