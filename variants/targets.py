"""Which layers of a model can be adapted, which of them a ``target_modules`` value picks, and which
modules form the task head (trained by every variant)."""
import re

from torch import nn

from .base import Adapter, is_transposed

HEAD_NAMES = ("classifier", "score")
NEVER_ADAPTED = ("lm_head",)


def head_prefixes(model: nn.Module, head_names=HEAD_NAMES) -> list[str]:
    """Module names of the task head(s): ``classifier`` (BERT, RoBERTa) or ``score`` (Llama, GPT-2)."""
    prefixes = []
    for name, _ in model.named_modules():
        if name.rpartition(".")[2] in head_names and not any(name.startswith(p + ".") for p in prefixes):
            prefixes.append(name)
    return prefixes


def _inside(name: str, prefixes) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def is_linear(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear) or is_transposed(module) or hasattr(module, "dequantized_weight")


def adaptable_layers(model: nn.Module, head_names=HEAD_NAMES) -> dict[str, nn.Module]:
    """Every linear layer outside the head and outside existing adapters, by module name."""
    skip = head_prefixes(model, head_names) + [n for n, m in model.named_modules()
                                               if isinstance(m, Adapter) or n.rpartition(".")[2] in NEVER_ADAPTED]
    return {n: m for n, m in model.named_modules() if n and is_linear(m) and not _inside(n, skip)}


def short_names(names) -> list[str]:
    """Layer names with the repeated block prefix cut off: 'encoder.layer.3.attention.self.query' ->
    'attention.self.query'. Used to list the choices in an error."""
    cut = {re.split(r"(?:^|\.)\d+\.", n)[-1] for n in names}
    return sorted(cut)


def match_targets(model: nn.Module, target_modules, head_names=HEAD_NAMES) -> dict[str, nn.Module]:
    """Pick the layers named by ``target_modules``: ``"all-linear"``, a regex matched against the full
    module name, or exact leaf names such as ``query`` or ``attention.output.dense`` (a list)."""
    layers = adaptable_layers(model, head_names)
    if isinstance(target_modules, str):
        if target_modules == "all-linear":
            chosen = layers
        else:
            try:
                pattern = re.compile(target_modules)
            except re.error as error:
                raise ValueError(f"target_modules {target_modules!r} is not a valid regex: {error}") from None
            chosen = {n: m for n, m in layers.items()
                      if pattern.fullmatch(n) or n == target_modules or n.endswith("." + target_modules)}
    else:
        wanted = [str(t) for t in target_modules]
        if not wanted:
            raise ValueError("target_modules is empty; name at least one layer, or use 'all-linear'")
        chosen = {n: m for n, m in layers.items() if any(n == t or n.endswith("." + t) for t in wanted)}
    if not chosen:
        raise ValueError(f"target_modules {target_modules!r} matches no adaptable layer; adaptable layers: "
                         f"{', '.join(short_names(layers))} (or 'all-linear')")
    return chosen


def set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)
