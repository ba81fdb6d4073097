"""The one interface every variant implements.

Every variant is a subclass of :class:`Variant`, in its own file in this package, with a registry
``name``; it is found automatically (see ``variants/__init__.py``). There are two kinds:

* an :class:`Adapter` wraps one frozen linear layer (``nn.Linear`` or GPT-2's transposed ``Conv1D``)
  and adds a small trainable update to its output. A subclass must provide four methods:

  - ``create_parameters(alpha=, shared=, **options)``: make its trainable tensors (called from ``__init__``);
  - ``update(x)``: the adapter's contribution to the output, for an input that already went through
    dropout (the default ``forward`` is ``base(x) + update(dropout(x))``);
  - ``delta_weight()``: the same update as a dense ``(out_features, in_features)`` matrix
    (``merge`` adds it to the base weight, and ``unmerge`` takes the same tensor out again);
  - ``trainable_per_layer(in_features, out_features, rank, options)``: how many numbers one adapted
    layer trains (the tests check it against the model).

  Hooks with a default that is right for a plain variant: ``check_options``, ``prepare`` (model-level
  set-up, e.g. VeRA's shared matrices or QLoRA's quantization), ``forward`` (a fast path),
  ``reference_forward`` (the equation written plainly, which the tests compare ``forward`` with),
  ``adapter_state``/``load_adapter_state``, ``remove`` and ``combine``.
* a :class:`Baseline` (full fine-tuning, head only) adapts no layer: it only decides what trains
  (``set_trainable``).

What a variant declares about itself is a class attribute of :class:`Variant` (its options with their
defaults, whether saves write every weight, whether adapters add exactly, its PEFT counterpart, ...),
read by the rest of the package and by the tests; nothing outside a variant's own file names it.
"""
from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from .peft_counterpart import PeftCounterpart


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


class Variant:
    """What every variant declares, adapters and baselines alike."""

    name: ClassVar[str] = ""
    #: the keyword options this variant accepts, with their defaults (the only place they are set)
    options: ClassVar[dict[str, Any]] = {}
    #: True for a baseline (no layer adapted: rank, alpha, target_modules and dropout unused)
    is_baseline: ClassVar[bool] = False
    #: whether ``variants.save`` writes every trainable weight (only full fine-tuning does)
    saves_all_trainable: ClassVar[bool] = False
    #: whether ``variants.combine`` adds several saved adapters of this variant exactly (the class
    #: then implements ``combine``)
    combinable: ClassVar[bool] = False
    #: the attribute name of the model-level module ``prepare`` adds to the model (None: none);
    #: ``variants.remove`` deletes it
    shared_module: ClassVar[str | None] = None
    #: how PEFT does the same thing (None: PEFT has no counterpart): its config both ways, its tensor
    #: names, how it stores the base (see ``variants/peft_counterpart.py``)
    peft: ClassVar[PeftCounterpart | None] = None
    #: the benchmarks' goal for this implementation (benchmarks/step_time.py): (our step - the frozen
    #: floor) / (PEFT's step - the floor) at most this; None: no goal
    step_overhead_goal: ClassVar[float | None] = None
    #: for a variant whose base is stored quantized: the variant it quantizes, which the benchmarks
    #: time it against (None: not a quantized variant)
    quantizes: ClassVar[str | None] = None

    @classmethod
    def check_options(cls, options: dict) -> None:
        """Refuse bad option values (all options filled in) before any layer is touched; default: accept."""

    @classmethod
    def label(cls, options: dict) -> str:
        """The row name of this variant with these options in records, tables, figures and tuned files
        (a variant that stands for several methods names the method, e.g. ``peft:loha``)."""
        return cls.name

    @classmethod
    def unused_settings(cls, options: dict) -> tuple[str, ...]:
        """Which of rank, alpha, target_modules and dropout this variant ignores with these options: a
        run's config blanks them, so that they neither split a sweep nor enter the config hash."""
        return ("rank", "alpha", "target_modules", "dropout") if cls.is_baseline else ()

    @classmethod
    def distinct_options(cls, options: dict) -> dict:
        """The options that make a run of this variant another configuration (its config hash covers
        them): by default those that differ from their default, so that adding an option with a
        default that keeps the old behaviour leaves every earlier configuration's hash as it was."""
        return {key: value for key, value in options.items() if cls.options.get(key, object()) != value}

    # -- the training loop's hooks (experiments/run/train.py calls them; default: nothing) ---------------
    @classmethod
    def before_training(cls, model: nn.Module, *, total_steps: int, train_loader) -> None:
        """Once, before the optimizer is made: the run's total optimizer steps and its training loader
        (never dev or the selection split), e.g. for a rank schedule or an init that needs a data pass."""

    @classmethod
    def optimizer(cls, model: nn.Module, options: dict, *, lr: float, weight_decay: float):
        """An optimizer of this variant's own (e.g. LoRA+'s groups at their own rates), or None: the
        training loop's AdamW over its usual groups."""
        return None

    @classmethod
    def after_optimizer_step(cls, model: nn.Module, step: int) -> None:
        """After each optimizer step (``step``: how many came before it), its gradients still there."""


class Adapter(Variant, nn.Module):
    """A frozen base layer plus a trainable update ``update(dropout(x))``."""

    #: whether the frozen base computes exactly what the original layer did (QLoRA's 4-bit base does not)
    exact_base: ClassVar[bool] = True
    #: whether a rank above min(in, out) is worth a warning (it cannot raise the update's rank)
    rank_bounded_by_layer: ClassVar[bool] = True

    def __init__(self, base_layer: nn.Module, *, rank: int, alpha: float, dropout: float = 0.0,
                 shared: Any = None, **options: Any):
        super().__init__()
        self.base_layer = base_layer
        self.in_features, self.out_features = layer_shape(base_layer)
        self.rank = rank
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.merged = False
        self.create_parameters(alpha=alpha, shared=shared, **{**self.options, **options})

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

    @classmethod
    def trainable_per_layer(cls, in_features: int, out_features: int, rank: int, options: dict) -> int:
        """How many trainable numbers one adapted (in -> out) layer adds (tests check it)."""
        raise NotImplementedError(f"{cls.name}: trainable_per_layer is not declared")

    # -- hooks with a default ------------------------------------------------------------------
    @classmethod
    def prepare(cls, model: nn.Module, targets: dict[str, nn.Module], *, rank: int, options: dict,
                head_modules: tuple[str, ...]) -> tuple[Any, dict[str, nn.Module]]:
        """Model-level set-up, once, before the targets are wrapped: returns ``(shared, targets)``, the
        object every layer gets as ``shared`` and the layers to wrap (a new dict if they were replaced)."""
        return None, targets

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
        """Add a dense (out x in) change to the frozen weight. A base layer that stores its weight in
        another form (QLoRA's NF4) takes it through its own ``add_to_weight``."""
        if hasattr(self.base_layer, "add_to_weight"):
            self.base_layer.add_to_weight(delta)
            return
        # an in-place add (not ``weight.data +=``) so that the weight's version counter moves on and
        # caches keyed on it (DoRA's base norm) see the change
        weight = self.base_layer.weight
        weight.add_((delta.T if is_transposed(self.base_layer) else delta).to(weight.dtype))

    @torch.no_grad()
    def merge(self) -> None:
        """Fold the update into the base weight: inference then costs what the base layer costs. The
        delta added is kept, so that ``unmerge`` takes out exactly what was added (DoRA's and HiRA's
        updates depend on the base weight itself)."""
        if not self.merged:
            self._merged_delta = self.delta_weight().detach().clone()
            self._add_to_base_weight(self._merged_delta)
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        if self.merged:
            self._add_to_base_weight(-self._merged_delta)
            del self._merged_delta
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

    @classmethod
    def combine(cls, states: list[dict[str, torch.Tensor]], configs: list[dict], weights: list[float]
                ) -> tuple[dict[str, torch.Tensor], dict]:
        """One layer's weighted sum of saved adapters as one adapter: ``(state, config changes)``; only
        for a ``combinable`` variant."""
        raise NotImplementedError(f"{cls.name}: combine is not declared")

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, rank={self.rank}, merged={self.merged}"


class ModelTuner(Variant):
    """A variant that adapts the whole model in one go (another library's tuner, injected in place)
    rather than wrapping one linear layer at a time: ``variants.apply`` freezes the model, calls
    ``adapt``, then makes the task head trainable, as for an adapter. ``save_adapter``, ``merge_model``,
    ``unmerge_model`` and ``remove_model`` stand in for the layer-wise ones."""

    @classmethod
    def adapt(cls, model: nn.Module, *, targets: list[str] | None, rank, alpha, dropout, options: dict) -> None:
        """Adapt ``model`` in place; ``targets``: the full names of the layers ``target_modules`` picks
        (None where this variant ignores ``target_modules`` with these options)."""
        raise NotImplementedError

    @classmethod
    def save_adapter(cls, model: nn.Module, folder, heads: list[str]) -> None:
        """Write the adapter and the task head (parameters under ``heads``) to ``folder``."""
        raise NotImplementedError

    @classmethod
    def merge_model(cls, model: nn.Module) -> None:
        raise NotImplementedError(f"{cls.name}: merge is not declared")

    @classmethod
    def unmerge_model(cls, model: nn.Module) -> None:
        raise NotImplementedError(f"{cls.name}: unmerge is not declared")

    @classmethod
    def remove_model(cls, model: nn.Module) -> None:
        raise NotImplementedError(f"{cls.name}: remove is not declared")


class Baseline(Variant):
    """A comparison point that adapts no layer: it only decides what is trainable.

    It accepts (and ignores) rank, alpha, target_modules and dropout, so callers pass them as they are
    (None included)."""

    is_baseline: ClassVar[bool] = True

    @staticmethod
    def set_trainable(model: nn.Module, head_prefixes: list[str]) -> None:
        """Switch ``requires_grad`` on for what this baseline trains (the head is at ``head_prefixes``)."""
        raise NotImplementedError
