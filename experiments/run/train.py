"""The one training loop every variant and baseline goes through, so comparisons are fair.

AdamW, linear warmup then linear decay, gradient clipping, an optional separate learning rate for the
task head; built on ``accelerate`` (devices, several GPUs, mixed precision come from it). A variant's
hooks (``before_training``, ``after_optimizer_step``; no-ops for most) are called from here.
"""
from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

import variants

logger = logging.getLogger(__name__)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


@dataclass
class TrainOutcome:
    metrics: dict
    eval_loss: float
    steps: int
    train_seconds: float
    peak_memory_mb: float
    device: str
    learning_curve: list = field(default_factory=list)
    #: mean training loss over the last epoch (or the last logged window, if that epoch was shorter)
    final_train_loss: float = math.nan
    #: metrics on the selection split at the end (None without one)
    selection_metrics: dict | None = None
    #: metrics on the held-out test split, scored once at the end (None without one)
    test_metrics: dict | None = None
    #: final-epoch outputs per split ("selection" included): (logits (N, C) float32, labels (N,)), loader order
    outputs: dict = field(default_factory=dict)

    @property
    def seconds_per_step(self) -> float:
        return self.train_seconds / max(self.steps, 1)


class PeakMemory:
    """Peak resident memory of this process while in the block (CPU), or peak allocated CUDA memory."""

    def __init__(self, device: torch.device, interval: float = 0.02):
        self.device, self.interval, self.peak = device, interval, 0

    @staticmethod
    def rss() -> int:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * 4096

    def _sample(self):
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self.rss())

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self.peak = self.rss()
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            self.peak = torch.cuda.max_memory_allocated(self.device)
        else:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, self.rss())

    @property
    def megabytes(self) -> float:
        return self.peak / 2**20


def head_parameter_names(model, head_prefixes) -> set[str]:
    return {n for n, _ in model.named_parameters() if any(n.startswith(p + ".") for p in head_prefixes)}


def parameter_groups(model, lr, head_lr, weight_decay, head_prefixes):
    """AdamW groups: weight decay on matrices only; the head at ``head_lr`` when one is given."""
    head_names = head_parameter_names(model, head_prefixes)
    groups: dict[tuple, list] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        group_lr = head_lr if (head_lr and name in head_names) else lr
        decay = weight_decay if parameter.ndim >= 2 else 0.0
        groups.setdefault((group_lr, decay), []).append(parameter)
    return [{"params": ps, "lr": g_lr, "weight_decay": wd} for (g_lr, wd), ps in groups.items()]


@torch.no_grad()
def evaluate(model, eval_loaders, task, accelerator, outputs: dict | None = None,
             suffixed: bool = True) -> tuple[dict, float]:
    """Run every eval split (MNLI: matched and mismatched; the metric names say which, unless
    ``suffixed`` is false). ``outputs``, when given, receives {split: (logits, labels)} in loader order."""
    model.eval()
    results, losses = {}, []
    for split, loader in eval_loaders.items():
        logits, labels = [], []
        for batch in loader:
            out = model(**batch)
            losses.append(out.loss.item())
            logits.append(accelerator.gather_for_metrics(out.logits).float().cpu().numpy())
            labels.append(accelerator.gather_for_metrics(batch["labels"]).cpu().numpy())
        logits, labels = np.concatenate(logits), np.concatenate(labels)
        if outputs is not None:
            outputs[split] = (logits, labels)
        results.update(task.scores(logits, labels, split=split if suffixed else None))
    model.train()
    return results, float(np.mean(losses)) if losses else math.nan


def train_and_evaluate(model, train_loader, eval_loaders, task, train, head_prefixes=(), log=None,
                       show_progress=True, selection_loader=None, test_loader=None) -> TrainOutcome:
    """Train, then score every eval split. ``task``: the run's ``Task``; ``train``: its ``TrainConfig``
    (checked: every value is valid). ``selection_loader`` (the held-out part of train, if any) is
    scored after every epoch and at the end; its main score joins each epoch's learning-curve entry.
    With a selection split the eval splits are scored once, at the end (``eval_each_epoch`` then
    applies to the selection split only), so no per-epoch dev score exists for a choice to peek at.
    ``test_loader`` (a held-out test split, if any) is scored once, at the end, like dev."""
    # accelerate keeps one precision per process; each run sets its own (a sweep in one process, e.g. the
    # basic launcher over train.mixed_precision=no,bf16, would otherwise refuse the second)
    AcceleratorState._reset_state()
    accelerator = Accelerator(mixed_precision=train.mixed_precision, cpu=train.device == "cpu")
    steps_per_epoch = len(train_loader)
    max_steps = train.max_steps or math.ceil(train.epochs * steps_per_epoch)
    # the variant's own set-up (a rank schedule's length, an init's data pass: the training data only),
    # before the optimizer sees which parameters train
    variants.before_training(model, total_steps=max_steps, train_loader=train_loader)
    optimizer = (variants.own_optimizer(model, lr=train.lr, weight_decay=train.weight_decay)
                 or torch.optim.AdamW(parameter_groups(model, train.lr, train.head_lr, train.weight_decay, head_prefixes)))
    warmup_steps = int(train.warmup * max_steps) if train.warmup < 1 else int(train.warmup)
    scheduler = get_linear_schedule_with_warmup(optimizer, warmup_steps, max_steps)
    model, optimizer, train_loader, scheduler = accelerator.prepare(model, optimizer, train_loader, scheduler)
    eval_loaders = {k: accelerator.prepare(v) for k, v in eval_loaders.items()}
    selection = {"selection": accelerator.prepare(selection_loader)} if selection_loader is not None else {}
    trainable = [p for p in model.parameters() if p.requires_grad]
    eval_each_epoch = train.eval_each_epoch and not selection
    log_every = train.log_every
    curve, step, running, step_losses = [], 0, [], []
    progress = tqdm(total=max_steps, disable=not show_progress or not accelerator.is_local_main_process,
                    desc="train", mininterval=2.0)
    model.train()
    train_seconds = 0.0
    with PeakMemory(accelerator.device) as memory:
        while step < max_steps:
            start = time.perf_counter()
            epoch_losses = []
            for batch in train_loader:
                loss = model(**batch).loss
                if not torch.isfinite(loss):
                    raise TrainingDiverged(f"loss became {loss.item()} at step {step + 1}")
                accelerator.backward(loss)
                if train.grad_clip:
                    accelerator.clip_grad_norm_(trainable, train.grad_clip)
                optimizer.step()
                scheduler.step()
                variants.after_optimizer_step(accelerator.unwrap_model(model), step)  # gradients still there
                optimizer.zero_grad(set_to_none=True)
                step += 1
                running.append(loss.item())
                epoch_losses.append(running[-1])
                progress.update(1)
                if step % log_every == 0:
                    curve.append({"step": step, "epoch": step / steps_per_epoch,
                                  "loss": float(np.mean(running)), "eval": None})
                    progress.set_postfix(loss=f"{curve[-1]['loss']:.4f}")
                    logger.info("step %d/%d: train loss %.4f", step, max_steps, curve[-1]["loss"])
                    if log:
                        log({"train/loss": curve[-1]["loss"], "train/lr": scheduler.get_last_lr()[0]}, step)
                    running = []
                if step >= max_steps:
                    break
            train_seconds += time.perf_counter() - start
            step_losses.append(epoch_losses)
            if (eval_each_epoch or selection) and step < max_steps:
                entry = {"step": step, "epoch": step / steps_per_epoch, "loss": None, "eval": None}
                if eval_each_epoch:
                    scores, _ = evaluate(model, eval_loaders, task, accelerator)
                    entry["eval"] = task.main_score(scores)
                    logger.info("step %d/%d: dev %s %.4f", step, max_steps, task.main_metric, entry["eval"])
                    if log:
                        log({f"eval/{k}": v for k, v in scores.items()}, step)
                if selection:
                    entry["selection"] = _selection_score(model, selection, task, accelerator, log, step)
                curve.append(entry)
    progress.close()
    outputs = {}
    scores, eval_loss = evaluate(model, eval_loaders, task, accelerator, outputs)
    curve.append({"step": step, "epoch": step / steps_per_epoch, "loss": None,
                  "eval": task.main_score(scores)})
    if log:
        log({f"eval/{k}": v for k, v in scores.items()}, step)
    selection_metrics = test_metrics = None
    if selection:
        selection_metrics, _ = evaluate(model, selection, task, accelerator, outputs, suffixed=False)
        curve[-1]["selection"] = task.main_score(selection_metrics)
    if test_loader is not None:
        test_metrics, _ = evaluate(model, {"test": accelerator.prepare(test_loader)}, task, accelerator, outputs,
                                   suffixed=False)
    return TrainOutcome(metrics=scores, eval_loss=eval_loss, steps=step, train_seconds=train_seconds,
                        peak_memory_mb=memory.megabytes, device=str(accelerator.device), learning_curve=curve,
                        final_train_loss=last_epoch_loss(step_losses, log_every),
                        selection_metrics=selection_metrics, test_metrics=test_metrics, outputs=outputs)


def _selection_score(model, selection, task, accelerator, log, step) -> float:
    scores, _ = evaluate(model, selection, task, accelerator, suffixed=False)
    main = task.main_score(scores)
    logger.info("step %d: selection %s %.4f", step, task.main_metric, main)
    if log:
        log({f"selection/{k}": v for k, v in scores.items()}, step)
    return main


def last_epoch_loss(epochs: list[list[float]], window: int) -> float:
    """Mean training loss of the last pass over the data; when that pass was shorter than one logging
    window (``max_steps`` cut it short), the mean of the last ``window`` steps instead."""
    last = epochs[-1] if epochs else []
    if len(last) < window:
        last = [loss for epoch in epochs for loss in epoch][-window:]
    return float(np.mean(last)) if last else math.nan
