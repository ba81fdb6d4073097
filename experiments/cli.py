"""From a Hydra config to one run: resolve paths, set up logging (wandb when asked), run, report."""
from __future__ import annotations

import logging
import os
import sys

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import to_absolute_path
from omegaconf import OmegaConf

log = logging.getLogger("run")


def _threads_for_parallel_jobs() -> None:
    """joblib runs several jobs at once: share the cores instead of oversubscribing them."""
    launcher = HydraConfig.get().launcher
    n_jobs = launcher.get("n_jobs") if "n_jobs" in launcher else None
    if n_jobs and n_jobs != 1:
        import torch

        cores = os.cpu_count() or 1
        torch.set_num_threads(max(1, cores // (n_jobs if n_jobs > 0 else cores)))


def _wandb_logger(cfg: dict, name: str):
    import wandb

    run = wandb.init(project=cfg["logger"].get("project", "lora-arena"), mode=cfg["logger"].get("mode"),
                     config=cfg, name=name, reinit="finish_previous")
    return run, (lambda values, step: run.log(values, step=step))


def run_from_hydra(cfg) -> float | None:
    from .checks import check_config, normalized

    resolved = OmegaConf.to_container(cfg, resolve=True)
    resolved["experiment_name"] = HydraConfig.get().runtime.choices.get("experiment")
    resolved["results"]["dir"] = to_absolute_path(resolved["results"]["dir"])
    if resolved["data"].get("glue_dir"):
        resolved["data"]["glue_dir"] = to_absolute_path(resolved["data"]["glue_dir"])
    if resolved["train"].get("tuned_file"):
        resolved["train"]["tuned_file"] = to_absolute_path(resolved["train"]["tuned_file"])
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        check_config(normalized(resolved))  # fast: before data, model or the heavy imports
    except ValueError as error:
        if multirun:
            raise
        sys.exit(f"error: {error}")
    from . import runner

    if multirun:
        _threads_for_parallel_jobs()
    wandb_run, log_metrics = None, None
    if resolved["logger"]["name"] == "wandb":
        name = f"{resolved['variant']['name']}-{resolved['task']['name']}-r{resolved['rank']}-s{resolved['seed']}"
        wandb_run, log_metrics = _wandb_logger(resolved, name)
    try:
        record = runner.run(resolved, log_metrics=log_metrics, show_progress=sys.stderr.isatty() or not multirun)
    except (ValueError, OSError, ModuleNotFoundError) as error:  # OSError: a record or claim it cannot write
        if multirun:  # a bad setting in a sweep stops it early, before more time is spent
            raise
        sys.exit(f"error: {error}")
    finally:
        if wandb_run is not None:
            wandb_run.finish()
    path = os.path.join(resolved["results"]["dir"], "runs", f"{record['config_hash']}.json")
    if record.get("claimed_by"):  # another launcher runs it; the runner said so in one line
        return None
    if record.get("skipped"):
        log.info("already done (%s): %s %s = %s", path, record["variant"], record["main_metric"], record["main_score"])
    elif record["status"] == "ok":
        log.info("%s on %s: %s = %.4f, %d trainable parameters, %.1f s training -> %s", record["variant"],
                 record["task"], record["main_metric"], record["main_score"], record["trainable_params"],
                 record["train_seconds"], path)
    else:
        log.error("failed: %s -> %s", record["error"], path)
        if not multirun:
            sys.exit(1)
    return record.get("main_score")
