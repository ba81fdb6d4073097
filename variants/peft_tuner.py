"""Any PEFT tuner as a contender: ``variant=peft variant.method=loha``, PEFT's own layers injected into
the run's model in place, trained by the same loop as every other variant.

    python run.py variant=peft variant.method=loha rank=8 alpha=16 target_modules=[query,value]
    python run.py variant=peft variant.method=oft variant.config.block_share=true

The methods are PEFT's, read from the installed ``peft`` at run time (``peft.mapping``): every PEFT type
lower-cased (``loha``, ``lokr``, ``ia3``, ``boft``, ``adalora``, ...). ``variant.config.<field>`` sets
any field of that method's PEFT config. rank, alpha, dropout and target_modules go to the config's own
fields where it has them (``r``; ``lora_alpha`` or ``alpha``; ``lora_dropout`` or
``<method>_dropout``; ``target_modules``, as the full names of the layers they pick here, so every
variant adapts the same layers); a setting the config has no field for (or that ``variant.config``
sets itself) is blanked, so it neither splits a sweep nor enters the config hash. The hash covers the
method and its whole resolved PEFT config. Rows are labelled ``peft:<method>``.

The tuner is made as ``peft.inject_adapter_in_model`` makes it (the tuner class PEFT maps the type to,
on the model itself), and kept beside the model, so that tuners with state of their own work too:
shared projections (VeRA, VB-LoRA, ...) and AdaLoRA's rank allocator, which the training loop's hooks
drive (``total_step`` from the run, ``update_and_allocate`` after each optimizer step). Saving writes
PEFT's format (``adapter_config.json`` + ``adapter_model.safetensors``): ``PeftModel.from_pretrained``
reads it. A LoRA init whose data pass PEFT runs before its layers exist (CorDA, ASTRA, LoRA-GA:
``BEFORE_LAYER_INITS``) has its layers made in ``before_training``, after that pass over the first
``init_batches`` batches of the run's training loader. Nothing outside this file names a PEFT method.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import difflib
import enum
import itertools
import json

import torch
from safetensors.torch import save_file
from torch import nn

from .base import ModelTuner
from .files import write_atomically

PREFIX = "base_model.model."
CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
#: the config fields the run fills in itself (field -> what it is): never hashed (the run's own
#: settings that decide them are)
RUN_FIELDS = {"total_step": "the run's total optimizer steps"}
#: a stand-in for the run's steps while no run is there to say (checks, the hash)
STEPS_UNKNOWN = 10**9
#: a stand-in rank for checks made without the run's settings (a config may need r or another field set)
RANK_FOR_CHECKS = 8
#: PEFT methods that cannot be a contender here, each with why (a prompt-learning method PEFT adds
#: later is refused with PEFT's own reason, see ``cannot_inject_reason``)
CANNOT_RUN = {
    "adaption_prompt": "prompt learning (adapter prompts in a decoder's attention): PEFT does not inject it in place",
    "cartridge": "prompt learning (a trained KV-cache prefix): PEFT does not inject it in place",
    "multitask_prompt_tuning": "prompt learning (virtual tokens): PEFT does not inject it in place",
    "p_tuning": "prompt learning (virtual tokens from a prompt encoder): PEFT does not inject it in place",
    "prefix_tuning": "prompt learning (trained key/value prefixes): PEFT does not inject it in place",
    "prompt_tuning": "prompt learning (virtual tokens): PEFT does not inject it in place",
    "cpt": "context-aware prompt tuning, for causal language models only (PEFT: CPTConfig only supports "
           "task_type = CAUSAL_LM)",
    "shadow": "PEFT's inject_adapter_in_model does not support it (its layers need PEFT's own model wrapper)",
    "poly": "routes each example to a mix of skills by its task id (task_ids at every forward): one task per run here",
    "xlora": "mixes LoRA adapters trained before, on a causal language model (PEFT: `use_cache` must be False)",
    "trainable_tokens": "trains the embeddings of chosen token ids (token_indices), not layers: no choice of "
                        "tokens fits every task",
}
#: the bridge's own defaults over PEFT's for a method whose PEFT defaults cannot run with the run's settings
#: on this project's models (MiniLM: width 384); ``variant.config`` overrides them
DEFAULTS_HERE = {
    "oft": {"oft_block_size": 0},   # PEFT takes r or oft_block_size, not both; r comes from rank
    "c3a": {"block_size": 128},     # PEFT's 256 does not divide MiniLM's 384
    "vblora": {"vector_length": 128},  # the same
    "ln_tuning": {"target_modules": ["LayerNorm"]},  # it tunes LayerNorms: target_modules picks linear layers
}
#: a method whose config has a field for a setting under another name than the usual ones
SETTING_FIELDS_HERE = {
    "adalora": {"rank": "target_r"},  # its r is unused: the schedule starts at init_r, ends at target_r on average
}
#: methods whose update PEFT cannot fold into the base weights (``variants.merge``), each with why
CANNOT_MERGE = {"lily": "PEFT's Lily layers have no merge (NotImplementedError: not supported for Lily)"}
#: methods whose merged update PEFT cannot take out of the base weights again (``variants.unmerge``, and
#: ``variants.remove`` after a merge), each with why
CANNOT_UNMERGE = {"osf": "PEFT's OSF layers have no unmerge (NotImplementedError: OSF models do not support unmerging)"}
#: fields of every PEFT config that describe the file rather than the method: not hashed
NOT_METHOD_FIELDS = ("task_type", "peft_type", "auto_mapping", "peft_version", "base_model_name_or_path",
                     "revision", "inference_mode", "modules_to_save")


def mapping():
    import peft.mapping

    return peft.mapping


def methods() -> list[str]:
    """Every PEFT type the installed ``peft`` has, lower-cased."""
    return sorted(t.value.lower() for t in mapping().PEFT_TYPE_TO_CONFIG_MAPPING)


def config_class(method: str) -> type:
    by_name = {t.value.lower(): cls for t, cls in mapping().PEFT_TYPE_TO_CONFIG_MAPPING.items()}
    if method not in by_name:
        close = difflib.get_close_matches(str(method), by_name, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"method={method!r} is not a PEFT method{hint}; valid methods: {', '.join(sorted(by_name))}")
    return by_name[method]


def config_fields(method: str) -> list[str]:
    """The fields ``variant.config`` may set for ``method``."""
    return [f.name for f in dataclasses.fields(config_class(method)) if f.name not in NOT_METHOD_FIELDS]


def setting_fields(method: str) -> dict[str, str]:
    """The run's settings this method's config has a field for: setting -> field."""
    fields = set(config_fields(method))
    candidates = {"rank": ("r",), "alpha": ("lora_alpha", "alpha"), "dropout": ("lora_dropout", f"{method}_dropout"),
                  "target_modules": ("target_modules",)}
    found = {setting: next(f for f in names if f in fields)
             for setting, names in candidates.items() if any(f in fields for f in names)}
    return {**found, **SETTING_FIELDS_HERE.get(method, {})}


def one_line(error: Exception) -> str:
    return " ".join(str(error).split())


def resolved_config(method: str, fields: dict, *, rank=None, alpha=None, dropout=None, targets=None,
                    total_steps: int | None = None):
    """PEFT's config object for ``method``: ``fields`` (``variant.config``) over the run's settings."""
    cls = config_class(method)
    valid = config_fields(method)
    unknown = sorted(set(fields) - set(valid))
    if unknown:
        close = difflib.get_close_matches(unknown[0], valid, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"config.{unknown[0]}: PEFT's {method} config has no field {unknown[0]!r}{hint}; "
                         f"its fields: {', '.join(valid)}")
    given = {"rank": rank, "alpha": alpha, "dropout": dropout, "target_modules": targets}
    values = {field: given[setting] for setting, field in setting_fields(method).items() if given[setting] is not None}
    values.update({field: total_steps or STEPS_UNKNOWN for field in RUN_FIELDS if field in valid})
    values.update(DEFAULTS_HERE.get(method, {}))
    values.update(INIT_DEFAULTS_HERE.get(fields.get("init_lora_weights"), {}))
    values.update(fields)
    try:
        return cls(**values)
    except (TypeError, ValueError) as error:
        raise ValueError(f"PEFT's {method} config refuses these settings: {one_line(error)}") from None


def cannot_inject_reason(config) -> str | None:
    """PEFT's own reason why this method cannot adapt a model in place (prompt learning, ...), or None."""
    import peft

    if not (config.is_prompt_learning or config.is_adaption_prompt
            or config.peft_type not in mapping().PEFT_TYPE_TO_TUNER_MAPPING):
        return None
    try:  # PEFT checks the method before it touches the model
        peft.inject_adapter_in_model(config, nn.Module())
    except (ValueError, TypeError, AttributeError) as error:
        return one_line(error)
    return "PEFT has no tuner that adapts layers in place for it"


def plain_value(value):
    """A config value as JSON: sets as sorted lists, enums as their value."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (set, frozenset)):
        return sorted(map(plain_value, value), key=str)
    if isinstance(value, (list, tuple)):
        return [plain_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): plain_value(v) for k, v in value.items()}
    return value


class PeftModelView(nn.Module):
    """The tuner as ``peft.PeftModel`` holds it (``base_model``, its names ``base_model.model.<path>``):
    what ``peft.get_peft_model_state_dict`` reads, shared tensors (VeRA's projection, ...) included."""

    def __init__(self, tuner):
        super().__init__()
        self.base_model = tuner
        self.peft_config = tuner.peft_config

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.base_model, name)

    @contextlib.contextmanager
    def disable_adapter(self):
        """The base model alone inside the block (as ``PeftModel.disable_adapter``)."""
        self.base_model.disable_adapter_layers()
        try:
            yield
        finally:
            self.base_model.enable_adapter_layers()


class WithoutLabels:
    """A loader's batches without their labels (a data pass for an init needs only the inputs)."""

    def __init__(self, loader):
        self.loader = loader

    def __iter__(self):
        return ({k: v for k, v in batch.items() if k != "labels"} for batch in self.loader)

    def __len__(self):
        return len(self.loader)


def eva_init(model, tuner, train_loader) -> None:
    """EVA (Paischer et al., 2024): A from the SVD of each layer's inputs over the run's training batches."""
    import peft

    if train_loader is None:
        raise ValueError("init_lora_weights='eva' needs the run's training loader for its data pass")
    peft.initialize_lora_eva_weights(PeftModelView(tuner), dataloader=WithoutLabels(train_loader),
                                     forward_fn=lambda _, inputs: model(**inputs), show_progress_bar=False)


def one_example_at_a_time(batches):
    """Each example of ``batches`` alone, without its padding: CorDA's and ASTRA's covariance hooks take one
    sequence per forward."""
    for batch in batches:
        for row in range(len(batch["input_ids"])):
            keep = batch["attention_mask"][row].bool() if "attention_mask" in batch else slice(None)
            yield {k: v[row:row + 1, keep] for k, v in batch.items() if k != "labels"}


def forward_pass(model, batches):
    """What ``preprocess_corda`` and ``preprocess_astra`` call to build each layer's input covariance:
    the base model forward over ``batches``, one example at a time."""
    def run_model():
        with torch.no_grad():
            for example in one_example_at_a_time(batches):
                model(**example)
    return run_model


def corda_pass(model, config, batches):
    """CorDA (Yang et al., 2024): the weights' SVD weighted by each layer's input covariance."""
    from peft.tuners.lora.corda import preprocess_corda

    preprocess_corda(model, config, run_model=forward_pass(model, batches))


def astra_pass(model, config, batches):
    """ASTRA: as CorDA, from each layer's input covariance, with its own split of the weight."""
    from peft.tuners.lora.astra import preprocess_astra

    preprocess_astra(model, config, run_model=forward_pass(model, batches))


def lora_ga_pass(model, config, batches):
    """LoRA-GA (Wang et al., 2024): the full weights' gradient of the training loss, averaged over the
    batches, whose SVD gives A and B."""
    import peft

    def train_step():
        for batch in batches:
            model(**batch).loss.backward()

    peft.preprocess_loraga(model, config, train_step=train_step)


#: LoRA inits that need a pass over data once the layers are there: init_lora_weights -> what does it
#: (with the run's training loader, never dev or the selection split)
DATA_INITS = {"eva": eva_init}
#: LoRA inits whose pass over data runs on the base model before the layers are made (PEFT's
#: ``preprocess_*``): init_lora_weights -> the pass. The layers are then made in ``before_training``, over
#: ``init_batches`` batches of the run's training loader (never dev or the selection split)
BEFORE_LAYER_INITS = {"corda": corda_pass, "astra": astra_pass, "lora_ga": lora_ga_pass}
#: an init's own sub-config, at PEFT's defaults unless ``variant.config`` sets it (PEFT needs LoRA-GA's
#: given; CorDA's and ASTRA's it fills in itself, with a warning)
INIT_DEFAULTS_HERE = {"corda": {"corda_config": {}}, "astra": {"astra_config": {}}, "lora_ga": {"lora_ga_config": {}}}


class PeftTuner(ModelTuner):
    name = "peft"
    #: loraplus_ratio: LoRA+ (Hayou et al., 2024) through PEFT's ``create_loraplus_optimizer``: B (and every
    #: vector, the head's bias included, as PEFT groups them) at ratio x the rate; null: off.
    #: init_batches: how many training batches the data pass of CorDA, ASTRA or LoRA-GA reads
    options = {"method": "lora", "config": {}, "loraplus_ratio": None, "init_batches": 8}
    #: the attribute of the model that keeps PEFT's tuner object (not a submodule: it holds the model)
    tuner_attribute = "peft_tuner"
    #: the attribute that keeps the config of layers still to be made (an init in BEFORE_LAYER_INITS)
    plan_attribute = "peft_plan"

    @classmethod
    def check_options(cls, options):
        if not isinstance(options["config"], dict):
            raise ValueError(f"config must be a mapping of PEFT config fields, got {options['config']!r}")
        method, ratio = options["method"], options["loraplus_ratio"]
        if ratio is not None and (isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not ratio >= 1):
            raise ValueError(f"loraplus_ratio={ratio!r}: must be a number >= 1 (B's rate over A's) or null")
        if ratio is not None and "lora_alpha" not in config_fields(method):
            raise ValueError(f"loraplus_ratio is for LoRA's B matrices: method={method!r} has none (use method=lora)")
        if method in CANNOT_RUN:
            raise ValueError(f"method={method!r} cannot run here: {CANNOT_RUN[method]}")
        batches = options["init_batches"]
        if isinstance(batches, bool) or not isinstance(batches, int) or batches < 1:
            raise ValueError(f"init_batches={batches!r}: must be an integer >= 1 (training batches of an init's data pass)")
        config = resolved_config(method, options["config"], rank=RANK_FOR_CHECKS)
        reason = cannot_inject_reason(config)
        if reason:
            raise ValueError(f"method={options['method']!r} cannot adapt a model in place: {reason}")

    @classmethod
    def label(cls, options):
        """``peft:<method>``, with what ``variant.config`` and LoRA+ set, e.g.
        ``peft:lora(init_lora_weights=olora)``: each its own row."""
        settings = [f"{k}={plain_value(v)}" for k, v in sorted(options["config"].items())]
        if options["loraplus_ratio"] is not None:
            settings.append(f"loraplus_ratio={options['loraplus_ratio']:g}")
        return f"peft:{options['method']}" + (f"({','.join(settings)})" if settings else "")

    @classmethod
    def unused_settings(cls, options):
        try:
            has = setting_fields(options["method"])
        except ValueError:
            return ()  # check_options names the bad method
        fixed = {**DEFAULTS_HERE.get(options["method"], {}), **options["config"]}
        return tuple(s for s in ("rank", "alpha", "target_modules", "dropout") if s not in has or has[s] in fixed)

    @classmethod
    def distinct_options(cls, options):
        """The method and its whole resolved PEFT config (without the fields the run's own hashed
        settings fill in)."""
        method = options["method"]
        config = resolved_config(method, options["config"], rank=RANK_FOR_CHECKS).to_dict()
        fixed = {**DEFAULTS_HERE.get(method, {}), **options["config"]}
        filled = set(RUN_FIELDS) | {f for f in setting_fields(method).values() if f not in fixed}
        hashed = {"method": method, "config": {k: plain_value(v) for k, v in sorted(config.items())
                                               if k not in filled and k not in NOT_METHOD_FIELDS}}
        if options["loraplus_ratio"] is not None:
            hashed["loraplus_ratio"] = options["loraplus_ratio"]
        if config.get("init_lora_weights") in BEFORE_LAYER_INITS:
            hashed["init_batches"] = options["init_batches"]
        return hashed

    # -- the model ------------------------------------------------------------------------------
    @classmethod
    def adapt(cls, model, *, targets, rank, alpha, dropout, options):
        method = options["method"]
        config = resolved_config(method, options["config"], rank=rank, alpha=alpha, dropout=dropout,
                                 targets=targets)
        if getattr(config, "init_lora_weights", None) in BEFORE_LAYER_INITS:
            object.__setattr__(model, cls.plan_attribute, config)  # made in before_training, after the data pass
        else:
            cls.make_layers(model, config)

    @classmethod
    def make_layers(cls, model, config):
        method = config.peft_type.value.lower()
        tuner_class = mapping().PEFT_TYPE_TO_TUNER_MAPPING[config.peft_type]
        trains = [p for p in model.parameters() if p.requires_grad]  # PEFT freezes all but its own layers
        try:
            tuner = tuner_class(model, config, adapter_name="default")
        except (ValueError, TypeError, NotImplementedError, RuntimeError) as error:
            raise ValueError(f"PEFT's {method} cannot adapt this {type(model).__name__}: {one_line(error)}") from None
        for parameter in trains:
            parameter.requires_grad_(True)
        object.__setattr__(model, cls.tuner_attribute, tuner)

    @classmethod
    def make_layers_after_data_pass(cls, model, config, train_loader):
        """The data pass of an init in BEFORE_LAYER_INITS over the run's first ``init_batches`` training
        batches, on the base model, then its layers."""
        init = config.init_lora_weights
        if train_loader is None:
            raise ValueError(f"init_lora_weights={init!r} needs the run's training loader for its data pass")
        options = {**cls.options, **model.variant_config["options"]}
        batches = list(itertools.islice(train_loader, options["init_batches"]))
        was_training = model.training
        BEFORE_LAYER_INITS[init](model, config, batches)
        model.train(was_training)
        cls.make_layers(model, config)

    @classmethod
    def tuner(cls, model):
        if cls.plan_attribute in model.__dict__:
            raise ValueError("the PEFT layers of a data-driven init are made in before_training, after its data pass")
        return getattr(model, cls.tuner_attribute)

    @classmethod
    def before_training(cls, model, *, total_steps, train_loader):
        plan = model.__dict__.pop(cls.plan_attribute, None)
        if plan is not None:
            cls.make_layers_after_data_pass(model, plan, train_loader)
        tuner = cls.tuner(model)
        if getattr(tuner.peft_config["default"], "init_lora_weights", None) in DATA_INITS:
            DATA_INITS[tuner.peft_config["default"].init_lora_weights](model, tuner, train_loader)
        for config in tuner.peft_config.values():
            for field in RUN_FIELDS:
                if hasattr(config, field):
                    setattr(config, field, total_steps)
                    try:  # PEFT's own check of the schedule against the real number of steps
                        dataclasses.replace(config)
                    except ValueError as error:
                        raise ValueError(f"PEFT's config with {field}={total_steps} "
                                         f"({RUN_FIELDS[field]}): {one_line(error)}") from None

    @classmethod
    def optimizer(cls, model, options, *, lr, weight_decay):
        if options["loraplus_ratio"] is None:
            return None
        from peft.optimizers import create_loraplus_optimizer

        return create_loraplus_optimizer(model, torch.optim.AdamW, lr=lr, loraplus_lr_ratio=options["loraplus_ratio"],
                                         loraplus_weight_decay=weight_decay)

    @classmethod
    def after_optimizer_step(cls, model, step):
        reallocate = getattr(cls.tuner(model), "update_and_allocate", None)  # a rank schedule (AdaLoRA)
        if reallocate is not None:
            reallocate(step)

    @classmethod
    def save_adapter(cls, model, folder, heads):
        import peft

        tuner = cls.tuner(model)
        state = peft.get_peft_model_state_dict(PeftModelView(tuner), adapter_name="default")
        for name, parameter in model.named_parameters():
            if any(name.startswith(h + ".") for h in heads):
                state[PREFIX + name] = parameter
        state = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
        config = copy.copy(tuner.peft_config["default"])
        config.modules_to_save, config.inference_mode = list(heads) or None, True
        write_atomically(folder / WEIGHTS_FILE, lambda p: save_file(state, p, metadata={"format": "pt"}))
        write_atomically(folder / CONFIG_FILE, json.dumps(plain_value(config.to_dict()), indent=2))

    @classmethod
    def method_of(cls, model) -> str:
        return cls.tuner(model).peft_config["default"].peft_type.value.lower()

    @classmethod
    def merge_model(cls, model):
        if cls.method_of(model) in CANNOT_MERGE:
            raise ValueError(f"cannot merge {cls.method_of(model)}: {CANNOT_MERGE[cls.method_of(model)]}")
        cls.tuner(model).merge_adapter()

    @classmethod
    def unmerge_model(cls, model):
        if cls.method_of(model) in CANNOT_UNMERGE:
            raise ValueError(f"cannot unmerge {cls.method_of(model)}: {CANNOT_UNMERGE[cls.method_of(model)]}")
        cls.tuner(model).unmerge_adapter()

    @classmethod
    def remove_model(cls, model):
        """The base layers back as they were: a merged update is taken out first (PEFT's unload keeps it)."""
        from peft.tuners.tuners_utils import BaseTunerLayer

        if model.__dict__.pop(cls.plan_attribute, None) is not None:
            return  # no layers made yet
        if any(m.merged for m in model.modules() if isinstance(m, BaseTunerLayer)):
            cls.unmerge_model(model)
        cls.tuner(model).unload()
        model.__dict__.pop(cls.tuner_attribute, None)
        model.__dict__.pop("peft_config", None)

