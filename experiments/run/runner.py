"""One configuration in, one result record out: load data, load model, adapt, train, evaluate, record.
Knows no variant by name: everything variant-specific comes from the config and ``variants``. The config
arrives checked (``experiments.config.build``); nothing here checks it again."""
from __future__ import annotations

import logging
import shutil
import tempfile
import traceback
from pathlib import Path

import variants

from ..config import RunConfig, build
from ..config.precision import BASE_DTYPE, RECORDED
from ..records import locks, store
from . import data, provenance
from .models import head_modules, load_model_and_tokenizer, resolve_name_or_path
from .train import train_and_evaluate

log = logging.getLogger(__name__)
REPO_ROOT = Path(__file__).resolve().parents[2]


def target_modules_text(value) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else ",".join(map(str, value))


def model_label(model) -> str:
    """The model's short name; a path or hub id given in place of a packaged model is shown as such."""
    if model.source != "hub" and model.name_or_path:
        return str(model.name_or_path)
    return model.name


def base_record(config: RunConfig, run_hash: str) -> dict:
    train, data_config = config.train, config.data
    return {
        "config_hash": run_hash, "status": None, "error": None, "timestamp": store.now(),
        "git_commit": store.git_commit(REPO_ROOT), "experiment": getattr(config, "experiment_name", None),
        "variant": config.variant_class.label(config.options), "baseline": config.variant_class.is_baseline,
        "task": config.task.name, "model": model_label(config.model),
        "model_name_or_path": config.model.name_or_path, "pooling": config.model.pooling, "rank": config.rank,
        "alpha": config.alpha, "target_modules": target_modules_text(config.target_modules),
        "dropout": config.dropout, "seed": config.seed, "lr": train.lr, "head_lr": train.head_lr,
        "epochs": train.epochs, "max_steps": train.max_steps, "batch_size": train.batch_size,
        "max_length": train.max_length, "warmup": train.warmup, "weight_decay": train.weight_decay,
        "max_train_samples": data_config.max_train_samples, "precision": RECORDED[train.mixed_precision],
        "config": config.as_dict(),
    }


def adapter_file_bytes(model, keep_in) -> int:
    """Size of what ``variants.save`` writes for this model; kept only when ``keep_in`` is given."""
    folder = Path(keep_in) if keep_in else Path(tempfile.mkdtemp(prefix="adapter-"))
    try:
        variants.save(model, folder)
        return sum(path.stat().st_size for path in folder.glob("*.safetensors"))
    finally:
        if not keep_in:
            shutil.rmtree(folder, ignore_errors=True)


def run(config: RunConfig | dict, log_metrics=None, show_progress=True) -> dict:
    """Train and evaluate one configuration; returns its record (also written to the results dir).
    ``config``: a built RunConfig, or a composed config (dict or DictConfig), built here."""
    if not isinstance(config, RunConfig):
        config = build(config)
    results_dir = Path(config.results.dir)
    run_hash = config.config_hash
    done = existing_record(config, results_dir, run_hash)
    if done:
        return done
    with locks.hold(results_dir, run_hash, config.results.stale_claim_after) as claim:
        if not claim.ours:  # another launcher is training it right now
            log.info("skipping %s: claimed by %s", run_hash, claim.describe())
            return {**base_record(config, run_hash), "status": "claimed", "skipped": True, "claimed_by": claim.describe()}
        # checked again under the claim: another launcher may have finished it in between
        return existing_record(config, results_dir, run_hash) or train_and_record(config, results_dir, run_hash,
                                                                                  log_metrics, show_progress)


def existing_record(config: RunConfig, results_dir: Path, run_hash: str) -> dict | None:
    """The successful record of this configuration when there is one and re-runs are skipped."""
    if config.results.skip_existing and store.has_successful_record(results_dir, run_hash):
        log.info("skipping %s: a successful record exists at %s", run_hash, store.record_path(results_dir, run_hash))
        return {**store.read_record(store.record_path(results_dir, run_hash)), "skipped": True}
    return None


def train_and_record(config: RunConfig, results_dir: Path, run_hash: str, log_metrics, show_progress) -> dict:
    """The run itself, while this process holds the configuration's claim."""
    import transformers

    transformers.set_seed(config.seed, deterministic=False)
    task, train = config.task_spec, config.train
    splits = data.load_splits(task, config.data.glue_dir, config.data.max_train_samples, config.data.max_eval_samples,
                              seed=config.seed, selection_fraction=config.data.selection_fraction,
                              selection_seed=config.data.selection_seed, test_size=config.data.test_size,
                              test_seed=config.data.test_seed)
    name_or_path = resolve_name_or_path(config.model)
    model, tokenizer = load_model_and_tokenizer(name_or_path, task.num_labels, config.model.dtype, config.model.pooling)
    total = sum(p.numel() for p in model.parameters())
    heads = head_modules(config.model.pooling)
    variants.apply(model, config.variant_name, rank=config.rank, alpha=config.alpha, target_modules=config.target_modules,
                   dropout=config.dropout, head_modules=heads, base_dtype=BASE_DTYPE.get(train.mixed_precision),
                   **config.options)
    record = base_record(config, run_hash)
    record["model_name_or_path"] = name_or_path
    record["provenance"] = provenance.collect(config, name_or_path)  # not part of the config: never in the hash
    try:
        train_loader, eval_loaders = data.make_loaders(splits, tokenizer, task, train.batch_size, train.max_length,
                                                       seed=config.seed, eval_batch_size=train.eval_batch_size)
        selection_loader = eval_loaders.pop(data.SELECTION, None)
        test_loader = eval_loaders.pop(data.TEST, None)
        outcome = train_and_evaluate(model, train_loader, eval_loaders, task, train,
                                     variants.targets.head_prefixes(model, heads), log_metrics, show_progress,
                                     selection_loader=selection_loader, test_loader=test_loader)
        trainable = variants.trainable_parameters(model)  # after training: an init's data pass may set the ranks
        keep = results_dir / "adapters" / run_hash if config.results.keep_adapters else None
        record.update(
            status="ok", metrics=outcome.metrics, main_metric=task.main_metric,
            main_score=task.main_score(outcome.metrics), eval_loss=outcome.eval_loss,
            trainable_params=trainable, total_params=total, adapter_bytes=adapter_file_bytes(model, keep),
            train_seconds=outcome.train_seconds, steps=outcome.steps, seconds_per_step=outcome.seconds_per_step,
            peak_memory_mb=outcome.peak_memory_mb, device=outcome.device, learning_curve=outcome.learning_curve,
            final_train_loss=outcome.final_train_loss,
            constant_train_loss=task.constant_prediction_loss(splits[data.TRAIN]["label"]))
        if selection_loader is not None:
            record.update(selection_metrics=outcome.selection_metrics,
                          selection_score=task.main_score(outcome.selection_metrics))
        if test_loader is not None:
            record.update(test_metrics=outcome.test_metrics, test_score=task.main_score(outcome.test_metrics))
        held_out = {data.SELECTION: selection_loader, data.TEST: test_loader}
        orders = {split: data.loader_order(loader)
                  for split, loader in {**eval_loaders, **held_out}.items() if loader is not None}
        store.write_predictions(results_dir, run_hash, store.predictions_table(outcome.outputs, orders, task.num_labels))
        record["predictions_file"] = store.predictions_path(results_dir, run_hash).name
    except Exception as error:  # the run failed: record why, let the sweep go on
        log.error("run %s failed: %s", run_hash, traceback.format_exc())
        record.update(status="failed", error=f"{type(error).__name__}: {error}")
    record["timestamp"] = store.now()
    try:
        store.write_record(results_dir, record)
    except OSError:  # a full disk: no predictions file without its record (unless an earlier record owns it)
        if record.get("predictions_file") and not store.has_successful_record(results_dir, run_hash):
            store.predictions_path(results_dir, run_hash).unlink(missing_ok=True)
        raise
    return record
