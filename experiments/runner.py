"""One configuration in, one result record out: check, load data, load model, adapt, train, evaluate,
record. Knows no variant by name: everything variant-specific comes from the config and ``variants``."""
from __future__ import annotations

import logging
import shutil
import tempfile
import traceback
from pathlib import Path

import variants

from . import claims, data, metrics, precision, provenance, results
from .checks import check_config, normalized
from .models import head_modules, load_model_and_tokenizer, resolve_name_or_path
from .train import train_and_evaluate

log = logging.getLogger(__name__)
REPO_ROOT = Path(__file__).resolve().parent.parent


def target_modules_text(value) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else ",".join(map(str, value))


def model_label(model_cfg: dict) -> str:
    """The model's short name; a path or hub id given in place of a packaged model is shown as such."""
    if model_cfg.get("source") != "hub" and model_cfg.get("name_or_path"):
        return str(model_cfg["name_or_path"])
    return model_cfg["name"]


def base_record(cfg: dict, run_hash: str) -> dict:
    train, data_cfg = cfg["train"], cfg["data"]
    return {
        "config_hash": run_hash, "status": None, "error": None, "timestamp": results.now(),
        "git_commit": results.git_commit(REPO_ROOT), "experiment": cfg.get("experiment_name"),
        "variant": cfg["variant"]["name"], "baseline": variants.lookup(cfg["variant"]["name"]).is_baseline,
        "task": cfg["task"]["name"], "model": model_label(cfg["model"]),
        "model_name_or_path": cfg["model"].get("name_or_path"),
        "pooling": cfg["model"].get("pooling", "model"), "rank": cfg["rank"],
        "alpha": cfg["alpha"], "target_modules": target_modules_text(cfg["target_modules"]),
        "dropout": cfg["dropout"], "seed": cfg["seed"], "lr": train["lr"], "head_lr": train.get("head_lr"),
        "epochs": train.get("epochs"), "max_steps": train.get("max_steps"), "batch_size": train["batch_size"],
        "max_length": train.get("max_length"), "warmup": train.get("warmup"),
        "weight_decay": train.get("weight_decay"), "max_train_samples": data_cfg.get("max_train_samples"),
        "precision": precision.RECORDED[train["mixed_precision"]], "config": cfg,
    }


def adapter_file_bytes(model, keep_in) -> int:
    """Size of what ``variants.save`` writes for this model; kept only when ``keep_in`` is given."""
    folder = Path(keep_in) if keep_in else Path(tempfile.mkdtemp(prefix="adapter-"))
    try:
        variants.save(model, folder)
        return (folder / "adapter.safetensors").stat().st_size
    finally:
        if not keep_in:
            shutil.rmtree(folder, ignore_errors=True)


def run(cfg: dict, log_metrics=None, show_progress=True) -> dict:
    """Train and evaluate one configuration; returns its record (also written to the results dir)."""
    cfg = normalized(cfg)
    check_config(cfg)
    results_dir = Path(cfg["results"]["dir"])
    run_hash = results.config_hash(cfg)
    done = existing_record(cfg, results_dir, run_hash)
    if done:
        return done
    with claims.hold(results_dir, run_hash, cfg["results"].get("stale_claim_after")) as claim:
        if not claim.ours:  # another launcher is training it right now
            log.info("skipping %s: claimed by %s", run_hash, claim.describe())
            return {**base_record(cfg, run_hash), "status": "claimed", "skipped": True, "claimed_by": claim.describe()}
        # checked again under the claim: another launcher may have finished it in between
        return existing_record(cfg, results_dir, run_hash) or train_and_record(cfg, results_dir, run_hash,
                                                                               log_metrics, show_progress)


def existing_record(cfg: dict, results_dir: Path, run_hash: str) -> dict | None:
    """The successful record of this configuration when there is one and re-runs are skipped."""
    if cfg["results"].get("skip_existing", True) and results.has_successful_record(results_dir, run_hash):
        log.info("skipping %s: a successful record exists at %s", run_hash, results.record_path(results_dir, run_hash))
        return {**results.read_record(results.record_path(results_dir, run_hash)), "skipped": True}
    return None


def train_and_record(cfg: dict, results_dir: Path, run_hash: str, log_metrics, show_progress) -> dict:
    """The run itself, while this process holds the configuration's claim."""
    import transformers

    transformers.set_seed(cfg["seed"], deterministic=False)
    task, train = cfg["task"], cfg["train"]
    splits = data.load_splits(task, cfg["data"].get("glue_dir"), cfg["data"].get("max_train_samples"),
                              cfg["data"].get("max_eval_samples"), seed=cfg["seed"],
                              selection_fraction=cfg["data"].get("selection_fraction"),
                              selection_seed=cfg["data"].get("selection_seed", 0))
    name_or_path = resolve_name_or_path(cfg["model"])
    model, tokenizer = load_model_and_tokenizer(name_or_path, task["num_labels"], cfg["model"].get("dtype", "float32"),
                                                cfg["model"].get("pooling", "model"))
    total = sum(p.numel() for p in model.parameters())
    variant = cfg["variant"]
    heads = head_modules(cfg["model"].get("pooling", "model"))
    variants.apply(model, variant["name"], rank=cfg["rank"], alpha=cfg["alpha"], target_modules=cfg["target_modules"],
                   dropout=cfg["dropout"], head_modules=heads, base_dtype=precision.BASE_DTYPE.get(train["mixed_precision"]),
                   **dict(variant.get("options") or {}))
    record = base_record(cfg, run_hash)
    record["model_name_or_path"] = name_or_path
    record["provenance"] = provenance.collect(cfg, name_or_path)  # not part of cfg: never in the hash
    try:
        trainable = variants.trainable_parameters(model)
        train_loader, eval_loaders = data.make_loaders(splits, tokenizer, task, train["batch_size"],
                                                       train.get("max_length", 128), seed=cfg["seed"],
                                                       eval_batch_size=train.get("eval_batch_size"))
        selection_loader = eval_loaders.pop(data.SELECTION, None)
        outcome = train_and_evaluate(model, train_loader, eval_loaders, task, train,
                                     variants.targets.head_prefixes(model, heads), log_metrics, show_progress,
                                     selection_loader=selection_loader)
        keep = results_dir / "adapters" / run_hash if cfg["results"].get("keep_adapters") else None
        record.update(
            status="ok", metrics=outcome.metrics, main_metric=task["main_metric"],
            main_score=metrics.main_score(task, outcome.metrics), eval_loss=outcome.eval_loss,
            trainable_params=trainable, total_params=total, adapter_bytes=adapter_file_bytes(model, keep),
            train_seconds=outcome.train_seconds, steps=outcome.steps, seconds_per_step=outcome.seconds_per_step,
            peak_memory_mb=outcome.peak_memory_mb, device=outcome.device, learning_curve=outcome.learning_curve,
            final_train_loss=outcome.final_train_loss,
            constant_train_loss=metrics.constant_prediction_loss(task, splits[data.TRAIN]["label"]))
        if selection_loader is not None:
            record.update(selection_metrics=outcome.selection_metrics,
                          selection_score=metrics.main_score(task, outcome.selection_metrics))
        orders = {split: data.loader_order(loader)
                  for split, loader in {**eval_loaders, data.SELECTION: selection_loader}.items() if loader is not None}
        results.write_predictions(results_dir, run_hash,
                                  results.predictions_table(outcome.outputs, orders, task["num_labels"]))
        record["predictions_file"] = results.predictions_path(results_dir, run_hash).name
    except Exception as error:  # the run failed: record why, let the sweep go on
        log.error("run %s failed: %s", run_hash, traceback.format_exc())
        record.update(status="failed", error=f"{type(error).__name__}: {error}")
    record["timestamp"] = results.now()
    try:
        results.write_record(results_dir, record)
    except OSError:  # a full disk: no predictions file without its record (unless an earlier record owns it)
        if record.get("predictions_file") and not results.has_successful_record(results_dir, run_hash):
            results.predictions_path(results_dir, run_hash).unlink(missing_ok=True)
        raise
    return record

