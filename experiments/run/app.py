"""run.py's Hydra app: from Hydra's composed config to one run: the config built (typed, checked,
normalized), paths made absolute, logging set up (wandb when asked), the run, a one-line report.

The console stays readable: one progress bar (training), log lines printed above it (tqdm's logging
redirect), no weight-loading report or progress bars from transformers and datasets, library warnings
once each, through logging (so they land in the run's log file too), and one summary line at the end.
In a parallel sweep (joblib) everything a run prints goes to its own log file (Hydra's
``<sweep dir>/<job>/run.log``) and the console gets one line per finished run: ``[3/8 runs done] ...``.
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import to_absolute_path
from omegaconf import OmegaConf

log = logging.getLogger("run")
DONE_FOLDER = ".runs-done"  # in a sweep's folder: files 1, 2, ... one per finished run


def _parallel_jobs() -> int | None:
    """How many runs joblib makes at once (-1: one per core), or None when runs go one at a time."""
    launcher = HydraConfig.get().launcher
    n_jobs = launcher.get("n_jobs") if "n_jobs" in launcher else None
    return n_jobs if n_jobs and n_jobs != 1 else None


def _threads_for_parallel_jobs() -> None:
    """joblib runs several jobs at once: share the cores instead of oversubscribing them."""
    n_jobs = _parallel_jobs()
    if n_jobs:
        import torch

        cores = os.cpu_count() or 1
        torch.set_num_threads(max(1, cores // (n_jobs if n_jobs > 0 else cores)))


def _quiet_libraries() -> None:
    """No per-run weight-loading report or progress bars from the libraries; their warnings via logging."""
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)  # "no CPU kernels package" at every import
    logging.captureWarnings(True)
    import datasets
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()


@contextlib.contextmanager
def _output_to_log_file():
    """Send this process's console output (log lines, prints, warnings, C-level writes) to the run's
    log file while the block runs; the console is shared by the parallel runs of a sweep."""
    root = logging.getLogger()
    files = [h for h in root.handlers if isinstance(h, logging.FileHandler)]
    if not files:
        yield
        return
    consoles = [h for h in root.handlers if not isinstance(h, logging.FileHandler)]
    for handler in consoles:
        root.removeHandler(handler)
    sys.stdout.flush(), sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    try:
        with open(files[0].baseFilename, "a") as log_file:
            os.dup2(log_file.fileno(), 1), os.dup2(log_file.fileno(), 2)
            yield
    finally:
        sys.stdout.flush(), sys.stderr.flush()
        for fd, copy in zip((1, 2), saved):
            os.dup2(copy, fd)
            os.close(copy)
        for handler in consoles:
            root.addHandler(handler)


def _sweep_size(sweep_dir: Path) -> int | None:
    """How many runs the sweep makes: its swept values (command line, then the preset's sweeper params)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        saved = OmegaConf.load(sweep_dir / "multirun.yaml")
        parser = OverridesParser.create()
        sizes = {}
        overrides = [*saved.hydra.overrides.task,
                     *(f"{key}={value}" for key, value in (saved.hydra.sweeper.params or {}).items())]
        for text in overrides:
            override = parser.parse_override(text)
            sizes.setdefault(override.get_key_element(), len(list(override.sweep_string_iterator()))
                             if override.is_sweep_override() else 1)
        return math.prod(sizes.values())
    except Exception:  # a sweeper that saves no multirun.yaml, an override we cannot count: no total
        return None


def _runs_done() -> str:
    """Mark this run of the sweep finished; '[done/total runs done] ' (total when it can be counted)."""
    sweep_dir = Path(HydraConfig.get().sweep.dir)
    try:  # multirun.yaml is written when the sweep starts: a sweep re-run into the same folder counts anew
        started = (sweep_dir / "multirun.yaml").stat().st_mtime_ns
    except OSError:
        started = 0
    done = sweep_dir / f"{DONE_FOLDER}-{started}"
    done.mkdir(parents=True, exist_ok=True)
    count = 1
    while True:  # files 1, 2, 3, ... created exclusively: two runs finishing at once get different numbers
        try:
            (done / str(count)).touch(exist_ok=False)
            break
        except FileExistsError:
            count += 1
    total = _sweep_size(sweep_dir)
    return f"[{count}/{total} runs done] " if total else f"[{count} runs done] "


def _wandb_logger(config, name: str):
    import wandb

    run = wandb.init(project=config.logger.project or "lora-arena", mode=config.logger.mode,
                     config=config.as_dict(), name=name, reinit="finish_previous")
    return run, (lambda values, step: run.log(values, step=step))


def _absolute(cfg) -> None:
    """Paths on the command line are relative to where run.py was started (Hydra changes nothing, but
    a launcher's worker may run elsewhere)."""
    OmegaConf.set_struct(cfg, False)
    cfg.results.dir = to_absolute_path(cfg.results.dir)
    for section, key in (("data", "glue_dir"), ("train", "tuned_file")):
        if cfg[section][key]:
            cfg[section][key] = to_absolute_path(cfg[section][key])


def run_from_hydra(cfg) -> float | None:
    from ..config import ConfigError, build

    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    _absolute(cfg)
    choices = HydraConfig.get().runtime.choices
    try:  # fast: before data, model or the heavy imports
        config = build(cfg, experiment=choices.get("experiment"), task_source=f"task/{choices.get('task')}.yaml")
    except ConfigError as error:
        if multirun:
            raise
        sys.exit(f"error: {error}")
    parallel = multirun and _parallel_jobs() is not None
    with _output_to_log_file() if parallel else contextlib.nullcontext():
        _quiet_libraries()
        from tqdm.contrib.logging import logging_redirect_tqdm

        from . import runner

        if multirun:
            _threads_for_parallel_jobs()
        wandb_run, log_metrics = None, None
        if config.logger.name == "wandb":
            name = f"{config.variant_name}-{config.task.name}-r{config.rank}-s{config.seed}"
            wandb_run, log_metrics = _wandb_logger(config, name)
        try:
            with logging_redirect_tqdm() if not parallel else contextlib.nullcontext():  # no bar there
                record = runner.run(config, log_metrics=log_metrics,
                                    show_progress=not parallel and (sys.stderr.isatty() or not multirun))
        except (ValueError, OSError, ModuleNotFoundError) as error:  # OSError: a record or claim it cannot write
            if multirun:  # a bad setting in a sweep stops it early, before more time is spent
                raise
            sys.exit(f"error: {error}")
        finally:
            if wandb_run is not None:
                wandb_run.finish()
    path = os.path.join(config.results.dir, "runs", f"{record['config_hash']}.json")
    if record.get("claimed_by"):  # another launcher runs it; the runner said so in one line
        return None
    done = _runs_done() if multirun else ""
    if record.get("skipped"):
        log.info("%salready done (%s): %s %s = %s", done, path, record["variant"], record["main_metric"],
                 record["main_score"])
    elif record["status"] == "ok":
        log.info("%s%s on %s (%s): %s = %.4f, %d trainable parameters, %.1f s training -> %s", done,
                 record["variant"], record["task"], record["precision"], record["main_metric"], record["main_score"],
                 record["trainable_params"], record["train_seconds"], path)
    else:
        log.error("%sfailed: %s -> %s", done, record["error"], path)
        if not multirun:
            sys.exit(1)
    return record.get("main_score")
