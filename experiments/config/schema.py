"""Every configuration key, its type, its default and its valid values, in one place.

The dataclasses below are the schema Hydra composes ``conf/config.yaml`` and its groups onto (registered
in Hydra's ConfigStore as ``run_schema``; each variant's options as ``variant_options/<name>``, made from
the variant class's own ``options``). ``conf/`` holds no defaults of these keys: a group file sets only
what its choice changes (a variant its learning rate, a task its data and metric, a preset its study).

    python run.py --cfg job                      # every key with the value a run would use
    python -m experiments.config                 # every key, its default and what it accepts (markdown)

Each field says what it accepts through ``setting(default, rule, doc)``; ``experiments.config.checking``
applies the rules and turns any failure into one line naming the key, the value and what is valid.
"""
import dataclasses
import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, dataclass, field, fields, make_dataclass
from typing import Any, Callable, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING as REQUIRED  # "???": a value the group must set

# -- rules: value -> None when valid; each has a ``wants`` phrase for the error ---------------------------


class Rule:
    """What a setting accepts: ``check(value)`` is True when it is valid; ``wants`` says what is valid."""

    def __init__(self, wants: str, check: Callable[[Any], bool]):
        self.wants, self.check = wants, check

    def __call__(self, value) -> bool:
        try:
            return bool(self.check(value))
        except (TypeError, ValueError):
            return False


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _integer(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def positive() -> Rule:
    return Rule("a number > 0", lambda v: _number(v) and v > 0)


def at_least(low, integer: bool = True) -> Rule:
    kind = "an integer" if integer else "a number"
    return Rule(f"{kind} >= {low}", lambda v: (_integer(v) if integer else _number(v)) and v >= low)


def between(low, high, *, low_open=False, high_open=False) -> Rule:
    text = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    return Rule(f"a number in {text}", lambda v: _number(v) and (v > low if low_open else v >= low)
                and (v < high if high_open else v <= high))


def one_of(*choices) -> Rule:
    return Rule(f"one of {', '.join(map(str, choices))}", lambda v: v in choices)


def text() -> Rule:
    return Rule("a non-empty string", lambda v: isinstance(v, str) and bool(v.strip()))


def flag() -> Rule:
    return Rule("true or false", lambda v: isinstance(v, bool))


def integer() -> Rule:
    return Rule("an integer", _integer)


def or_null(rule: Rule, meaning: str = "") -> Rule:
    extra = f" (null: {meaning})" if meaning else ""
    return Rule(f"{rule.wants} or null{extra}", lambda v: v is None or rule(v))


def setting(default=MISSING, rule: Rule | None = None, doc: str = "", factory=None):
    """A dataclass field with its rule and a one-line description (``python -m experiments.config.schema``)."""
    metadata = {"rule": rule, "doc": doc}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def names(low: int = 1, high: int | None = None, what: str = "column names") -> Rule:
    count = f"{low}" if low == high else f"{low} or {high}" if high == low + 1 else f"{low} or more"
    return Rule(f"a list of {count} {what}", lambda v: isinstance(v, (list, tuple)) and low <= len(v) <= (high or len(v))
                and all(isinstance(x, str) and x.strip() for x in v))


def mapping(what: str) -> Rule:
    return Rule(f"a mapping of {what}", lambda v: isinstance(v, dict) and all(
        isinstance(k, str) and isinstance(x, str) and x.strip() for k, x in v.items()))


PRECISIONS = ("no", "auto", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda")
MODEL_SOURCES = ("minilm", "smollm2", "hub")
POOLINGS = ("model", "mean", "trainable")
DTYPES = ("float32", "bfloat16", "float16")
LOGGERS = ("none", "wandb")


# -- the groups ----------------------------------------------------------------------------------------

@dataclass
class TrainConfig:
    epochs: int = setting(3, at_least(1), "passes over the training data (train.max_steps, when set, wins)")
    max_steps: Optional[int] = setting(None, or_null(at_least(1), "train for train.epochs"),
                                       "optimizer steps to train")
    lr: float = setting(REQUIRED, positive(), "learning rate (each conf/variant/*.yaml sets its own)")
    head_lr: Optional[float] = setting(None, or_null(positive(), "the same as train.lr"),
                                       "a separate learning rate for the task head")
    lr_factor: float = setting(1.0, positive(), "multiplies lr and head_lr (a tuning grid around the default)")
    tuned_file: Optional[str] = setting(None, or_null(text(), "the variant's own rates"),
                                        "YAML from python -m experiments.tune: lr and head_lr per task and variant")
    tuned_variant: Optional[str] = setting(None, or_null(text(), "the run's own variant"),
                                           "take this variant's rates from tuned_file")
    batch_size: int = setting(32, at_least(1), "training batch size")
    eval_batch_size: int = setting(128, at_least(1), "evaluation batch size")
    max_length: int = setting(128, at_least(2), "tokens per example (longer ones are truncated)")
    warmup: float = setting(0.06, at_least(0, integer=False),
                            "linear warm-up: a fraction of the steps (< 1) or a number of steps (>= 1)")
    weight_decay: float = setting(0.0, at_least(0, integer=False), "AdamW weight decay (matrices only)")
    grad_clip: Optional[float] = setting(1.0, or_null(positive(), "no clipping"), "gradient norm clipping")
    eval_each_epoch: bool = setting(True, flag(), "score dev after every epoch (the selection split instead, when held out)")
    log_every: int = setting(20, at_least(1), "steps between training-loss log lines")
    mixed_precision: str = setting("no", one_of(*PRECISIONS),
                                   "no (fp32), auto (bf16 where the CPU or GPU has it natively), bf16, fp16")
    device: str = setting("auto", one_of(*DEVICES), "auto (a GPU when torch sees one), cpu, cuda")


@dataclass
class DataConfig:
    glue_dir: Optional[str] = setting("${oc.env:GLUE_DIR,null}", or_null(text(), "load from the hub"),
                                      "a folder in the classic glue_data layout (default: $GLUE_DIR)")
    max_train_samples: Optional[int] = setting(None, or_null(at_least(1), "all of train"),
                                               "a random subset of train (the same for the same seed)")
    max_eval_samples: Optional[int] = setting(None, or_null(at_least(1), "all of dev"),
                                              "a fixed subset of dev (the same for every seed)")
    selection_fraction: Optional[float] = setting(
        None, or_null(between(0, 1, low_open=True, high_open=True), "no selection split"),
        "share of train held out, stratified, for choices (the comparison protocol)")
    selection_seed: int = setting(0, integer(), "the selection split's draw (not the training seed)")
    test_size: Optional[int] = setting(None, or_null(at_least(1), "no held-out test split"),
                                       "rows of train (after the selection split) held out as a test split, scored once at the end")
    test_seed: int = setting(0, integer(), "the test split's draw")


@dataclass
class ModelConfig:
    name: str = setting(REQUIRED, text(), "the model's short name in records (conf/model/ sets it)")
    source: str = setting(REQUIRED, one_of(*MODEL_SOURCES), "where the weights come from (conf/model/ sets it)")
    name_or_path: Optional[str] = setting(None, or_null(text(), "the packaged model of model.source"),
                                          "a hub id or a local folder")
    dtype: str = setting("float32", one_of(*DTYPES), "dtype the weights are loaded in")
    pooling: str = setting("model", one_of(*POOLINGS),
                           "model (its own pooler, frozen under an adapter), mean, trainable (pooler in the head)")


@dataclass
class ResultsConfig:
    dir: str = setting("results", text(), "records go to <dir>/runs/<config hash>.json")
    skip_existing: bool = setting(True, flag(), "a configuration with a successful record is not run again")
    keep_adapters: bool = setting(False, flag(), "keep the trained adapter under <dir>/adapters/<config hash>/")
    stale_claim_after: float = setting(300.0, positive(),
                                       "seconds without a heartbeat after which another host's claim on a run is taken over")


@dataclass
class LoggerConfig:
    name: str = setting(REQUIRED, one_of(*LOGGERS), "none, or wandb (WANDB_MODE=offline works without an account)")
    project: Optional[str] = setting(None, or_null(text()), "wandb project")
    mode: Optional[str] = setting(None, or_null(text()), "wandb mode (online, offline, disabled)")


@dataclass
class HubSource:
    path: str = setting(REQUIRED, text(), "a hub dataset id, e.g. nyu-mll/glue")
    name: Optional[str] = setting(None, or_null(text()), "the dataset's config name")


@dataclass
class LocalSource:
    folder: Optional[str] = setting(None, or_null(text()), "relative to data.glue_dir, or absolute")
    format: Optional[str] = setting(None, or_null(one_of("tsv", "csv", "jsonl", "parquet"), "from the file suffix"),
                                    "file format")
    header: Optional[bool] = setting(None, or_null(flag(), "true"), "whether the first row names the columns")
    columns: Optional[List[str]] = setting(None, or_null(names(1)), "the columns of a file without a header")
    files: Optional[Dict[str, str]] = setting(None, or_null(mapping("split -> file")), "split -> file")
    rename: Optional[Dict[str, str]] = setting(None, or_null(mapping("the file's column -> the task's name")),
                                               "the file's column name -> the task's name")


@dataclass
class TaskConfig:
    """A task YAML (conf/task/*.yaml): what experiments.config.task.Task is built from."""
    name: str = setting(REQUIRED, text(), "the task's name in records")
    text_fields: List[str] = setting(REQUIRED, names(1, 2), "one or two text columns, e.g. [sentence1, sentence2]")
    label_field: str = setting(REQUIRED, text(), "the label column")
    num_labels: int = setting(REQUIRED, at_least(1), "classes (1: regression)")
    metric: str = setting(REQUIRED, text(), "the GLUE metric set (analysis.metrics.GLUE_METRICS)")
    main_metric: str = setting(REQUIRED, text(), "the headline score, one of the metric set's outputs")
    label_names: Optional[List[str]] = setting(None, or_null(names(1, what="label names")), "one name per class")
    label_range: Optional[List[float]] = setting(
        None, or_null(Rule("[low, high], two numbers", lambda v: len(v) == 2 and all(map(_number, v)))),
        "[low, high] of a regression label")
    splits: Optional[Dict[str, str]] = setting(None, or_null(mapping("result split -> source split"), "train, validation"),
                                               "result split -> source split")
    hub: Optional[HubSource] = setting(None, None, "the Hugging Face hub dataset")
    local: Optional[LocalSource] = setting(None, None, "local files (under data.glue_dir)")
    generate: Optional[str] = setting(None, or_null(one_of("demo")), "a task the project generates")


#: Settings added after records were made, with the value(s) that reproduce the behaviour from before
#: they existed: a key at such a value is hashed as if absent, so adding a setting never changes the
#: hash of a configuration that does not use it (committed records stay recognised). Dotted paths.
HASH_NEUTRAL: dict[str, tuple] = {
    "data.selection_fraction": (None,), "data.selection_seed": (0,), "data.test_size": (None,), "data.test_seed": (0,),
    "train.lr_factor": (1, 1.0), "train.tuned_file": (None,), "train.tuned_variant": (None,),
}
#: sections that do not change what a run computes (where results go, how it is logged)
NOT_HASHED = ("results", "logger")
NOT_HASHED_DATA = ("glue_dir",)


def _without_neutral(payload: dict, prefix: str = "") -> dict:
    kept = {}
    for key, value in payload.items():
        path = f"{prefix}{key}"
        if path in HASH_NEUTRAL and value in HASH_NEUTRAL[path]:
            continue
        kept[key] = _without_neutral(value, path + ".") if isinstance(value, dict) else value
    return kept


def plain(value):
    """A config as plain dicts and lists: schema dataclasses, Hydra's DictConfig / ListConfig, tuples."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {item.name: plain(getattr(value, item.name)) for item in fields(value)}
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return [plain(v) for v in value]
    return value


def without_unset(value):
    """``value`` with every None-valued key left out, at every depth (a task YAML as written)."""
    if isinstance(value, dict):
        return {k: without_unset(v) for k, v in value.items() if v is not None}
    return value


@dataclass
class RunConfig:
    """One run: the adapter's settings at the top, then one section per group.

    Built by ``experiments.config.build`` (checked and normalized); ``as_dict()`` is what a record
    stores, ``hash_input()`` what its config hash covers."""
    rank: Optional[int] = setting(8, or_null(at_least(1), "a baseline"), "the adapter's rank r")
    alpha: Optional[float] = setting(16.0, or_null(positive(), "alpha = rank"), "the adapter's alpha")
    target_modules: Any = setting(REQUIRED, None, "layers to adapt: leaf names ([query,value]), a regex string, or "
                                                  "all-linear (conf/model/ sets the model's default)")
    dropout: Optional[float] = setting(0.0, or_null(between(0, 1, high_open=True), "0"), "dropout on the adapter's input")
    seed: int = setting(0, integer(), "the training seed")
    variant: Any = setting(REQUIRED, None, "the variant and its options (conf/variant/, variant_options/<name>)")
    task: TaskConfig = setting(REQUIRED, None, "the task (conf/task/)")
    model: ModelConfig = setting(rule=None, doc="the pretrained model (conf/model/)", factory=ModelConfig)
    train: TrainConfig = setting(rule=None, doc="the training loop", factory=TrainConfig)
    data: DataConfig = setting(rule=None, doc="where the data comes from and how it is split", factory=DataConfig)
    results: ResultsConfig = setting(rule=None, doc="where records go", factory=ResultsConfig)
    logger: LoggerConfig = setting(rule=None, doc="conf/logger/", factory=LoggerConfig)

    @property
    def variant_name(self) -> str:
        return self.variant.name

    @property
    def options(self) -> dict:
        """The variant's options, every one filled in."""
        return {item.name: plain(getattr(self.variant, item.name)) for item in fields(self.variant)
                if item.name != "name"}

    @property
    def variant_class(self):
        import variants

        return variants.lookup(self.variant.name)

    def as_dict(self) -> dict:
        """The config as a record stores it: plain dicts, the variant's options beside its name."""
        payload = {item.name: plain(getattr(self, item.name)) for item in fields(self)}
        payload["experiment_name"] = getattr(self, "experiment_name", None)
        return payload

    def hash_input(self) -> dict:
        """Everything that decides what the run computes: every section but results and logger, the data
        folder left out (the same files anywhere), settings at their neutral value left out
        (``HASH_NEUTRAL``), the variant's options only where they differ from its defaults (the
        variant's ``distinct_options``), the task as its YAML writes it (unset keys left out), and a
        whole-number alpha as an integer (as records before the typed schema stored it)."""
        payload = {key: value for key, value in self.as_dict().items()
                   if key not in NOT_HASHED and key != "experiment_name"}
        payload["variant"] = {"name": self.variant.name, "options": self.variant_class.distinct_options(self.options)}
        payload["task"] = without_unset(payload["task"])
        payload["data"] = {k: v for k, v in payload["data"].items() if k not in NOT_HASHED_DATA}
        if isinstance(self.alpha, float) and self.alpha.is_integer():
            payload["alpha"] = int(self.alpha)
        return _without_neutral(payload)

    @property
    def config_hash(self) -> str:
        """A short stable hash of ``hash_input()``: the record's file name."""
        text = json.dumps(self.hash_input(), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


# -- each variant's options, from the variant class ----------------------------------------------------

def _option_type(default):
    if isinstance(default, bool):
        return bool
    for kind in (int, float, str):
        if isinstance(default, kind):
            return kind
    if isinstance(default, dict):
        return Dict[str, Any]
    if isinstance(default, (list, tuple)):
        return List[Any]
    return Optional[Any]


def option_rule(default) -> Rule | None:
    """An option's type rule, from its default (a variant's ``check_options`` checks the values)."""
    kind = _option_type(default)
    if kind is bool:
        return flag()
    if kind is int:
        return integer()
    if kind is float:
        return Rule("a number", _number)
    if kind is str:
        return Rule("a string", lambda v: isinstance(v, str))
    return None


_option_schemas: dict[str, type] = {}


def variant_options_schema(variant_class) -> type:
    """A dataclass with ``name`` and one typed field per option of ``variant_class``, at its default
    (``<ClassName>Options``, e.g. ``LoRAOptions``; made once)."""
    name = f"{variant_class.__name__}Options"
    if name not in _option_schemas:
        entries = [("name", str, setting(variant_class.name, text(), "the variant"))]
        for key, default in variant_class.options.items():
            value = (setting(rule=None, factory=lambda d=default: type(d)(d))
                     if isinstance(default, (dict, list)) else setting(default, option_rule(default)))
            entries.append((key, _option_type(default), value))
        schema = make_dataclass(name, entries)
        schema.__module__ = __name__  # found by name (``__getattr__`` below): launchers pickle composed configs
        _option_schemas[name] = schema
    return _option_schemas[name]


def __getattr__(name: str):
    """``<ClassName>Options`` of a registered variant, made on first use (e.g. when a launcher's worker
    unpickles a composed config)."""
    if name.endswith("Options"):
        import variants

        for variant in variants.available():
            cls = variants.lookup(variant)
            if f"{cls.__name__}Options" == name:
                return variant_options_schema(cls)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def register(typed: bool = True) -> None:
    """Put the schema into Hydra's ConfigStore: ``run_schema`` and ``variant_options/<name>``.

    ``typed=False`` stores the same keys and defaults as plain mappings instead: Hydra then composes
    about four times faster (it validates nothing), and ``experiments.config.build`` types and checks
    the result. The command-line check and ``experiments.progress`` compose every run of a sweep that
    way; a run itself composes on the typed schema."""
    import variants
    from omegaconf import OmegaConf

    store = ConfigStore.instance()
    store.store(name="run_schema", node=RunConfig if typed else OmegaConf.to_container(OmegaConf.structured(RunConfig)))
    for name in variants.available():
        schema = variant_options_schema(variants.lookup(name))
        store.store(group="variant_options", name=name,
                    node=schema if typed else OmegaConf.to_container(OmegaConf.structured(schema)))


# -- the keys as a table (docs) ------------------------------------------------------------------------

#: sections whose keys are listed one by one (the task and the variant are their groups' business)
LISTED_SECTIONS = (TrainConfig, DataConfig, ModelConfig, ResultsConfig, LoggerConfig)


def rows(schema=RunConfig, prefix: str = ""):
    """(key, default, accepts, doc) for every leaf key of ``schema``."""
    for item in fields(schema):
        key = f"{prefix}{item.name}"
        if item.type in LISTED_SECTIONS:
            yield from rows(item.type, key + ".")
            continue
        default = item.default_factory() if item.default_factory is not MISSING else item.default
        default = "(set by its group)" if default == REQUIRED else default
        rule = item.metadata.get("rule")
        yield key, default, rule.wants if rule else "see its group", item.metadata.get("doc", "")


def markdown() -> str:
    lines = ["| key | default | accepts | what it does |", "|---|---|---|---|"]
    for key, default, wants, doc in rows():
        shown = "null" if default is None else str(default).replace("|", "\\|")
        lines.append(f"| `{key}` | `{shown}` | {wants} | {doc} |")
    return "\n".join(lines)

