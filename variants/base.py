"""The one interface every adapter variant implements.

An adapter wraps one frozen linear layer (``nn.Linear`` or GPT-2's transposed ``Conv1D``) and adds a
small trainable update to its output. A variant is a subclass of :class:`Adapter` in its own file in
this package, with a registry ``name``; it is found automatically (see ``variants/__init__.py``).

A subclass must provide:
  * ``create_parameters(alpha=, shared=, **options)`` - make its trainable tensors (called from ``__init__``);
  * ``update(x)`` - the adapter's contribution to the output, for an input that already went through
    dropout (the default ``forward`` is ``base(x) + update(dropout(x))``);
  * ``delta_weight()`` - the same update as a dense ``(out_features, in_features)`` matrix.
Everything else is declared on :class:`Adapter` with a default that is right for a plain variant:
the class attributes below (capabilities the core and the tests read) and the hooks ``check_options``,
``prepare``, ``scaling``, ``forward``, ``merge``/``unmerge``, ``adapter_state``/``load_adapter_state``,
``remove``, ``combine``, ``trainable_per_layer``, ``peft_settings`` and ``peft_state``.

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
    #: False for adapters; True only for :class:`Baseline` (no layer adapted, rank/alpha/targets unused)
    is_baseline: ClassVar[bool] = False
    #: whether ``variants.save`` writes every trainable weight (only full fine-tuning does)
    saves_all_trainable: ClassVar[bool] = False
    #: whether the frozen base computes exactly what the original layer did (QLoRA's 4-bit base does not)
    exact_base: ClassVar[bool] = True
    #: whether a rank above min(in, out) is worth a warning (it cannot raise the update's rank)
    rank_bounded_by_layer: ClassVar[bool] = True
    #: whether ``combine`` adds several saved adapters of this variant exactly (then it implements it)
    combinable: ClassVar[bool] = False
    #: the attribute name of the model-level module ``prepare`` adds to the model (None: it adds none);
    #: ``variants.remove`` deletes it
    shared_module: ClassVar[str | None] = None
    #: PEFT's tensor name ending (e.g. ``.lora_A.weight``) -> our attribute, for ``export_peft``/``import_peft``
    peft_tensors: ClassVar[dict[str, str]] = {}
    #: the benchmarks' goal for this implementation (benchmarks/step_time.py): (our step - the frozen
    #: floor) / (PEFT's step - the floor) at most this; None: no goal
    step_overhead_goal: ClassVar[float | None] = None
    #: for a variant whose base is stored quantized: the variant it quantizes, which the benchmarks time
    #: it against (None: not a quantized variant)
    quantizes: ClassVar[str | None] = None

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
        """Make this layer's trainable tensors (and buffers); ``shared`` is what ``prepare`` returned."""
        raise NotImplementedError

    def update(self, x: torch.Tensor) -> torch.Tensor:
        """The adapter's contribution to the output for ``x`` (already through dropout)."""
        raise NotImplementedError

    def delta_weight(self) -> torch.Tensor:
        """The update as a dense (out_features, in_features) matrix."""
        raise NotImplementedError

    # -- hooks with a default ------------------------------------------------------------------
    @classmethod
    def check_options(cls, options: dict) -> None:
        """Refuse bad option values (all options filled in) before any layer is touched; default: accept."""

    @classmethod
    def prepare(cls, model: nn.Module, targets: dict[str, nn.Module], *, rank: int, options: dict,
                head_modules: tuple[str, ...]) -> tuple[Any, dict[str, nn.Module]]:
        """Model-level set-up, once, before the targets are wrapped: returns ``(shared, targets)``, the
        object every layer gets as ``shared`` and the layers to wrap (a new dict if they were replaced)."""
        return None, targets

    @classmethod
    def scaling(cls, alpha: float, rank: int) -> float:
        """The factor the update is multiplied by (LoRA: alpha / rank)."""
        return alpha / rank

    @classmethod
    def trainable_per_layer(cls, in_features: int, out_features: int, rank: int, options: dict) -> int:
        """How many trainable numbers one adapted (in -> out) layer adds (tests check it)."""
        raise NotImplementedError(f"{cls.name}: trainable_per_layer is not declared")

    @classmethod
    def combine(cls, states: list[dict[str, torch.Tensor]], configs: list[dict], weights: list[float]
                ) -> tuple[dict[str, torch.Tensor], dict]:
        """One layer's weighted sum of saved adapters as one adapter: ``(state, config changes)``."""
        from .registry import available, lookup  # the registry imports this module
        combinable = [n for n in available() if getattr(lookup(n), "combinable", False)]
        raise ValueError(f"variant {cls.name!r} cannot be combined exactly (it declares no combine); "
                         f"combinable variants: {', '.join(combinable)}")

    @classmethod
    def peft_settings(cls, *, rank: int, alpha: float, dropout: float, options: dict) -> dict | None:
        """PEFT's config (a dict with ``peft_type``) that starts and trains as this variant does with
        these settings (None: PEFT has no equivalent)."""
        return None

    @classmethod
    def peft_export_settings(cls, *, rank: int, alpha: float, dropout: float, options: dict) -> dict | None:
        """PEFT's config under which ``export_peft``'s tensors give this (trained) adapter's outputs."""
        return cls.peft_settings(rank=rank, alpha=alpha, dropout=dropout, options=options)

    @classmethod
    def from_peft_settings(cls, peft_config: dict) -> tuple[dict, dict] | None:
        """``(apply settings, options)`` if a PEFT adapter config is this variant, else None."""
        return None

    @classmethod
    def peft_base_quantization(cls, options: dict) -> dict | None:
        """How PEFT's counterpart stores the frozen base (transformers ``BitsAndBytesConfig`` keywords);
        None: a plain full-precision base."""
        return None

    def peft_state(self) -> dict[str, torch.Tensor]:
        """This layer's tensors under PEFT's name endings, giving PEFT's model the same output."""
        return {ending: getattr(self, attr) for ending, attr in self.peft_tensors.items()}

    @classmethod
    def peft_shared_state(cls, model: nn.Module) -> dict[str, torch.Tensor]:
        """Model-level tensors PEFT saves once (full key -> tensor); default none."""
        return {}

    @classmethod
    def check_peft_shared_state(cls, model: nn.Module, tensors: dict[str, torch.Tensor], source) -> None:
        """Check (on import) that PEFT's model-level tensors equal ours; default: there must be none."""
        if tensors:
            raise ValueError(f"{source}: unexpected tensors {sorted(tensors)[:5]} for a {cls.name} adapter")

    # -- shared behaviour ----------------------------------------------------------------------
    def reference_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The variant's equation written plainly (no dropout, unmerged): tests compare ``forward`` with it."""
        return self.base_layer(x) + self.update(x).to(x.dtype)

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

    @torch.no_grad()
    def load_adapter_state(self, state: dict[str, torch.Tensor]) -> None:
        """Copy saved tensors (names as ``adapter_state`` gives them, shapes already checked) in."""
        for name, tensor in state.items():
            getattr(self, name).copy_(tensor)

    def remove(self) -> nn.Module:
        """Undo the adaptation and give back the base layer."""
        self.unmerge()
        return self.base_layer

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, rank={self.rank}, merged={self.merged}"


class LowRankAdapter(Adapter):
    """h = W x + s * B A x with A (rank x in) and B (out x rank): LoRA and its relatives.

    Options: ``init`` = ``kaiming`` (A Kaiming-uniform, B = 0), ``gaussian`` (A ~ N(0, 1/r), B = 0),
    ``random`` (both random) or ``pissa`` (PiSSA, Meng et al., 2024: s B A = the top-r singular part of W,
    as PEFT's ``init_lora_weights="pissa"``); with ``random`` and ``pissa`` the frozen weight is offset by
    -s*B0*A0 (for PiSSA: it keeps the residual), so the start still equals the base model.
    ``trainable_alpha`` makes alpha a learned scalar.
    """

    options = {"init": "kaiming", "trainable_alpha": False}
    inits = ("kaiming", "gaussian", "random", "pissa")
    #: inits whose starting factors are kept as buffers and offset the frozen weight
    offset_inits = ("random", "pissa")
    combinable = True
    peft_tensors = {".lora_A.weight": "lora_A", ".lora_B.weight": "lora_B"}

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

    # -- PEFT's LoRA ---------------------------------------------------------------------------
    #: PEFT LoraConfig flags this class sets (rsLoRA: use_rslora, DoRA: use_dora)
    peft_flags: ClassVar[dict[str, bool]] = {"use_rslora": False, "use_dora": False}

    #: our init -> PEFT's ``init_lora_weights`` (PEFT has no init="random")
    peft_inits: ClassVar[dict[str, Any]] = {"kaiming": True, "gaussian": "gaussian", "pissa": "pissa"}

    @classmethod
    def peft_settings(cls, *, rank, alpha, dropout, options):
        options = {**cls.options, **options}
        if options["trainable_alpha"] or options["init"] not in cls.peft_inits:
            return None
        return {"peft_type": "LORA", "r": rank, "lora_alpha": alpha, "lora_dropout": dropout, "bias": "none",
                "init_lora_weights": cls.peft_inits[options["init"]], **cls.peft_flags}

    @classmethod
    def peft_export_settings(cls, *, rank, alpha, dropout, options):
        # init="random"/"pissa" offset our frozen weight, which PEFT's base model does not have: the
        # export writes an exactly equivalent rank-2r adapter instead (see ``peft_state``); a trained
        # alpha is folded into B
        offset = {**cls.options, **options}["init"] in cls.offset_inits
        return cls.peft_settings(rank=rank * (2 if offset else 1), alpha=alpha, dropout=dropout,
                                 options={**options, "init": "kaiming", "trainable_alpha": False})

    @classmethod
    def from_peft_settings(cls, peft_config):
        if peft_config.get("peft_type") != "LORA" or any(
                bool(peft_config.get(flag)) != value for flag, value in cls.peft_flags.items()):
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

    def peft_rank_and_scale(self) -> tuple[int, float]:
        """The rank and the one scaling PEFT's exported config has for every layer."""
        rank = self.rank * (2 if hasattr(self, "lora_A_init") else 1)
        return rank, self.scaling(self.config_alpha, rank)

    @torch.no_grad()
    def peft_state(self):
        """(A, B) with PEFT's ``scaling * B @ A`` this layer's whole change of the original base weight."""
        a, b, scale = self.lora_A, self.lora_B, float(self.scale_value())
        if hasattr(self, "lora_A_init"):
            # our base weight also carries -s0 * B0 A0: a rank-2r pair [B, -B0] [A; A0] expresses both parts
            a = torch.cat([a, self.lora_A_init], 0)
            b = torch.cat([b * scale, -self.init_scale * self.lora_B_init], 1)
            scale = 1.0
        peft_scale = self.peft_rank_and_scale()[1]
        # PEFT has one scaling for all layers: a trained alpha (or the rank-2r form) goes into B
        return {**super().peft_state(), ".lora_A.weight": a,
                ".lora_B.weight": b if scale == peft_scale else b * (scale / peft_scale)}


class Baseline:
    """A comparison point that adapts no layer: it only decides what is trainable.

    It accepts (and ignores) rank, alpha, target_modules and dropout, so callers pass them as they are
    (None included)."""

    name: ClassVar[str] = ""
    options: ClassVar[dict[str, Any]] = {}
    is_baseline: ClassVar[bool] = True
    #: whether ``variants.save`` writes every trainable weight, not only the head
    saves_all_trainable: ClassVar[bool] = False
    combinable: ClassVar[bool] = False
    shared_module: ClassVar[str | None] = None
    step_overhead_goal: ClassVar[float | None] = None
    quantizes: ClassVar[str | None] = None

    @staticmethod
    def set_trainable(model: nn.Module, head_prefixes: list[str]) -> None:
        """Switch ``requires_grad`` on for what this baseline trains (the head is at ``head_prefixes``)."""
        raise NotImplementedError

    @classmethod
    def check_options(cls, options: dict) -> None:
        """Baselines take no options."""

    @classmethod
    def combine(cls, states, configs, weights):
        """A baseline holds no adapter to combine."""
        raise ValueError(f"variant {cls.name!r} is a baseline: it has no adapter to combine")

    @classmethod
    def peft_settings(cls, *, rank, alpha, dropout, options) -> dict | None:
        """PEFT has no adapter for a baseline."""
        return None

    @classmethod
    def peft_export_settings(cls, *, rank, alpha, dropout, options) -> dict | None:
        """Nothing to export."""
        return None

    @classmethod
    def from_peft_settings(cls, peft_config: dict):
        """No PEFT adapter config is a baseline."""
        return None

    @classmethod
    def peft_base_quantization(cls, options: dict) -> dict | None:
        """A baseline trains a plain base."""
        return None
