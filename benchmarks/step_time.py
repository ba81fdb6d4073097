"""Training step time and peak memory of our variants against PEFT's, the frozen floor and full
fine-tuning, in fp32 and bf16; each step's counted FLOPs against the machine's measured multiply rate
(share of peak) and where its time goes by kind of op; merged inference against the base model; a
quantized variant's storage. Every ratio has a 95 % bootstrap interval, and A/A rows (one contender
timed twice) show the machine's noise.

    python benchmarks/step_time.py                  # the full benchmark (about 85 minutes, 2 quiet cores)
    python benchmarks/step_time.py --quick          # MiniLM, lora/dora/vera, 12 rounds (about 25 minutes)
    python benchmarks/step_time.py --quick --precisions fp32   # as before the precision axis (about 15 minutes)
    python benchmarks/step_time.py --smoke          # tiny sizes, 1 round: checks that it runs (seconds)
    python benchmarks/step_time.py --variants lora,dora --settings wide --repeats 8

The pieces: ``contenders.py`` (what is timed, built from ``variants.available()`` and each variant's
recipe; the one variant-to-PEFT mapping, ``peft_config_for``), ``harness.py`` (workers, round-robin
timing, memory peaks, the load check) and ``report.py`` (ratios, intervals, targets, markdown + CSV).

How it measures:
  * every training contender (one model set up one way) lives in its own worker process, built once;
    the parent then times them round-robin, in a shuffled order each round, one worker running at a
    time, so slow drifts of the machine's load hit every contender alike. The first round is a warm-up
    and is thrown away. A round times ``--steps`` consecutive steps and keeps their mean.
  * a training step is forward + backward + AdamW step + zero_grad on one fixed batch. After its turn
    a worker that holds much freed memory (> 256 MB of activations at full sizes) gives it back to the
    system (malloc_trim), so that only the running worker holds activations; its next turn then starts
    with one untimed step that brings the memory back;
  * A/A: the variants of ``--aa`` (default lora) are built twice, ours and PEFT's, as separate
    contenders in separate workers; their ratio would be 1 on a noiseless machine, so its interval is
    the noise floor. The plain model is timed twice for inference likewise;
  * ratios (ours/PEFT, ours/floor, merged/plain, A/A) are medians of the per-round ratios, so each is
    computed from two timings taken minutes apart at most; the 95 % interval resamples the rounds
    (bootstrap, 2000 resamples). A ratio reads "faster"/"slower" only when its interval excludes 1;
  * overhead = (ours − floor) / (PEFT's − floor) from the medians of the per-round differences: the
    part of the step an adapter implementation controls; a target counts as met when the whole
    interval is at or below it;
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
  * precisions (``--precisions``, default fp32,bf16): every training contender is built and timed in
    each, all in the same rounds, so bf16/fp32 of one contender is a per-round ratio too. bf16 is how
    ``train.mixed_precision=bf16`` trains: autocast(bf16) around the forward pass (accelerate's wrapper
    in the runner covers the forward pass only; backward ops run in their forward op's dtype) and the
    frozen linear weights stored in bf16 before the adapters are made (ours: ``variants.apply(...,
    base_dtype="bfloat16")``; PEFT's: the same cast of its frozen nn.Linear weights and biases after
    ``get_peft_model``; PEFT's QLoRA computes in bf16); adapters, head and optimizer state stay fp32.
    The A/A rows, the variant table and the targets are per precision. Inference stays fp32.
  * share of peak: the FLOPs of one step are counted (torch.utils.flop_counter over a real step of the
    contender's model, after the timed rounds: mm, addmm, bmm, baddbmm, attention, convolution, as
    executed, so the backward through a frozen layer adds its input gradient only and a trained
    weight its weight gradient; elementwise ops, norms, softmax and the optimizer count 0). Per
    precision a probe contender, timed in the rounds like the others, runs for each distinct linear
    shape of the model the three GEMMs of training (forward, input gradient, weight gradient) at
    batch × seq_len tokens, alone; its counted FLOPs over its time is the multiply rate. Share of
    peak = (step FLOPs / step time) / that rate, per round, with the bootstrap interval;
  * where the time goes: one more step of each training contender runs under torch.profiler; each
    op's self time is grouped by kind (matmul, casts & copies, layer norm, attention & softmax,
    elementwise & other ops, the optimizer: everything under its step and zero_grad, autograd &
    Python: the autograd engine's own time and the time outside every op), shown as shares of the
    step, with the three largest ops outside the matmuls.
  * the 1-minute load average is checked at start: above 0.5 a warning goes into the output and the
    markdown (other jobs share the cores; do not read the numbers as the machine's).

Results: tables printed and written to ``<out>/step_time.md`` (with the command line and the machine;
per setting one section per precision and one of each precision against fp32) and
``<out>/step_time.csv`` (one row per contender and precision, with its per-round times, every ratio's
interval, its counted GFLOP, share of peak and time shares by kind of op).
"""
from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # appended, so PYTHONPATH can point at another copy of variants/ to compare
    sys.path.append(str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from benchmarks import contenders, harness, report  # noqa: E402

#: --quick: the variants of the issue's targets that cover the three kinds of cost (none beyond LoRA's
#: matmuls, a per-step weight norm, shared random matrices); those not available are left out
QUICK_VARIANTS = ("lora", "dora", "vera")
AA_DEFAULT = "lora"
#: (quick, smoke, full) values of the options left unset
DEFAULTS = {"repeats": (12, 1, 10), "steps": (1, 1, 1), "warmup": (1, 1, 1), "batch_size": (32, 2, 32),
            "seq_len": (128, 16, 128), "wide_hidden": (1024, 64, 1024), "wide_layers": (2, 1, 2)}


def machine_info(options: dict, load: tuple[float, ...]) -> list[str]:
    import peft
    import torch
    import transformers
    bitsandbytes = __import__("bitsandbytes").__version__ if contenders.bitsandbytes_available() else "absent"
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
            f"- load average at start: {' '.join(f'{x:.2f}' for x in load)}",
            f"- python {platform.python_version()}, torch {torch.__version__}, transformers "
            f"{transformers.__version__}, peft {peft.__version__}, bitsandbytes {bitsandbytes}"]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true",
                      help=f"MiniLM only, {','.join(QUICK_VARIANTS)}, 12 rounds of 1 step (~25 min on 2 quiet cores in "
                           "both precisions)")
    size.add_argument("--smoke", action="store_true",
                      help="checks that it runs: the wide stack at tiny sizes, 1 round (numbers meaningless)")
    parser.add_argument("--variants", default=None,
                        help="comma-separated adapter variants (default: every one variants.available() offers)")
    parser.add_argument("--aa", default=None,
                        help=f"variants timed twice, ours and PEFT's, for the A/A rows (default {AA_DEFAULT}; "
                             "'none' for no A/A rows)")
    parser.add_argument("--settings", default=None,
                        help="minilm (the packaged all-MiniLM-L6-v2) and/or wide (random BERT stack); "
                             "default both (quick: minilm, smoke: wide)")
    parser.add_argument("--precisions", default=",".join(contenders.PRECISIONS),
                        help="the precisions every training contender is timed in: fp32 and/or bf16 (autocast "
                             "around the forward pass, frozen base weights in bf16, as train.mixed_precision=bf16 "
                             "trains); default both")
    parser.add_argument("--no-full", action="store_true", help="leave out full fine-tuning")
    parser.add_argument("--no-inference", action="store_true", help="leave out the merged-inference contenders")
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds (default 10; quick 12, smoke 1)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed rounds first (default 1)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per contender per round (default 1)")
    parser.add_argument("--batch-size", type=int, default=None, help="default 32 (smoke 2)")
    parser.add_argument("--seq-len", type=int, default=None, help="tokens per example (default 128, smoke 16)")
    parser.add_argument("--wide-hidden", type=int, default=None, help="hidden size of the wide stack (default 1024)")
    parser.add_argument("--wide-layers", type=int, default=None, help="layers of the wide stack (default 2)")
    parser.add_argument("--rank", type=int, default=None,
                        help="every variant's rank (default: its recipe's, conf/variant/<name>.yaml or conf/config.yaml)")
    parser.add_argument("--alpha", type=float, default=None, help="default: the recipe's")
    parser.add_argument("--targets", default=None, help="comma-separated layer names (default: the recipe's)")
    parser.add_argument("--dropout", type=float, default=None, help="default: the recipe's")
    parser.add_argument("--device", default="auto", help="auto (cuda when there is one), cpu, cuda, cuda:1 ...")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: usable cores)")
    parser.add_argument("--out", default=str(ROOT / "results" / "benchmark"), help="folder for step_time.md/.csv")
    args = parser.parse_args(argv)
    mode = 0 if args.quick else 1 if args.smoke else 2
    for name, values in DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, values[mode])
    available = contenders.adapter_variants()
    args.variants = split(args.variants) if args.variants else (
        [v for v in QUICK_VARIANTS if v in available] if args.quick else available)
    args.settings = split(args.settings) if args.settings else (
        ["minilm"] if args.quick else ["wide"] if args.smoke else list(contenders.SETTINGS))
    aa_default = [AA_DEFAULT] if AA_DEFAULT in args.variants else args.variants[:1]
    args.aa = aa_default if args.aa is None else [] if args.aa == "none" else split(args.aa)
    args.precisions = split(args.precisions)
    for value, choices, flag in ((args.variants, available, "--variants"),
                                 (args.settings, contenders.SETTINGS, "--settings"),
                                 (args.precisions, tuple(contenders.PRECISIONS), "--precisions"),
                                 (args.aa, args.variants, "--aa")):
        bad = [v for v in value if v not in choices]
        if bad or (not value and flag != "--aa"):
            parser.error(f"{flag}: unknown {bad or 'empty'}; choose from {', '.join(choices)}")
    for name in ("repeats", "steps", "batch_size", "seq_len", "wide_hidden", "wide_layers"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.rank is not None and args.rank < 1:
        parser.error(f"--rank must be >= 1, got {args.rank}")
    if args.warmup < 0:
        parser.error(f"--warmup must be >= 0, got {args.warmup}")
    return args


def bf16_support(device: str) -> str:
    if device.startswith("cuda"):
        return "bf16 on this GPU"
    from experiments.config import precision
    return ("this CPU has bf16 instructions" if precision.cpu_supports_bf16()
            else "**this CPU has no bf16 instructions: oneDNN emulates bf16, slower than fp32**")


def split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def main(argv=None) -> int:
    args = parse_args(argv)
    load = os.getloadavg()  # before anything of ours adds to the load
    load_warning = harness.load_warning(load[0])
    import torch
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit(f"--device {args.device}: no CUDA device is available; use --device cpu")
    threads = args.threads or len(os.sched_getaffinity(0))
    recipes = [contenders.recipe(v, rank=args.rank, alpha=args.alpha, dropout=args.dropout,
                                 targets=split(args.targets) if args.targets else None) for v in args.variants]
    notes = [f"{r.variant}: ours only (PEFT has no counterpart here, or bitsandbytes is missing)"
             for r in recipes if not contenders.has_peft_row(r)]
    options = {"device": args.device, "threads": threads, "batch_size": args.batch_size, "seq_len": args.seq_len,
               "wide_hidden": args.wide_hidden, "wide_layers": args.wide_layers,
               "repeats": args.repeats, "warmup": args.warmup, "steps": args.steps}
    plan = {setting: contenders.contenders_for(setting, recipes, aa=args.aa, full=not args.no_full,
                                               inference=not args.no_inference, precisions=args.precisions)
            for setting in args.settings}
    estimate = sum(harness.estimate_seconds(chosen, options, lambda c: contenders.reference_step_seconds(c, options))
                   for chosen in plan.values())
    command = "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]])
    same_targets = len({(r.targets, r.dropout) for r in recipes}) == 1
    recipe_text = "; ".join(f"{r.variant} r={r.rank}, alpha={r.alpha:g}" + (f", {r.options}" if r.options else "")
                            + ("" if same_targets else f", targets {','.join(r.targets)}, dropout {r.dropout:g}")
                            for r in recipes)
    header = ["# Step time and peak memory", "", f"`{command}`", "", *machine_info(options, load),
              *([f"- **{load_warning}**"] if load_warning else []),
              f"- batch {args.batch_size} × {args.seq_len} tokens; {recipe_text}"
              + (f"; targets {','.join(recipes[0].targets)}, dropout {recipes[0].dropout:g}" if same_targets else "")
              + f"; wide stack: BERT, hidden "
              f"{args.wide_hidden}, {args.wide_layers} layer(s), random weights",
              f"- {args.warmup} warm-up round(s), then {args.repeats} timed rounds of {args.steps} step(s) per "
              "contender (after an untimed one where the worker gave its memory back), round-robin in a "
              "shuffled order; ratios are medians of per-round ratios, with 95 % bootstrap intervals over the "
              f"rounds; A/A (timed twice): {', '.join(args.aa) or 'none'} and the plain model",
              f"- precisions: {', '.join(args.precisions)}" + (
                  "; bf16 = autocast around the forward pass and the frozen base weights stored in bf16 (ours: "
                  "variants.apply(..., base_dtype='bfloat16'); PEFT's: cast after get_peft_model), as "
                  "train.mixed_precision=bf16 trains; adapters, head and optimizer state in fp32; "
                  + bf16_support(args.device) if "bf16" in args.precisions else ""),
              "- GFLOP/step: the FLOPs of the matrix products and attention of one step, counted op by op as "
              "torch runs them (forward, the backward through frozen layers, the trained weights' gradients); "
              "share of peak: its FLOPs per second against the multiply probe's (see the probe line per table)",
              "- peak MB: the peak of the bytes held by tensors during a training step (weights, optimizer "
              "state, activations, temporaries; CUDA: max_memory_allocated); RSS MB: the worker's peak "
              "resident set minus its resident set after the imports (see the script's docstring)",
              *[f"- {n}" for n in notes], ""]
    for line in header:
        print(line)
    print(f"estimated duration: about {estimate / 60:.0f} min ({sum(map(len, plan.values()))} contenders; scaled "
          "from the committed run on 2 quiet CPU cores; each round prints the time left)", flush=True)
    started = time.perf_counter()
    results = {}
    with tempfile.TemporaryDirectory(prefix="step_time_") as folder:
        if "wide" in args.settings:
            contenders.make_wide_model(options, folder)
            options["wide_folder"] = folder
        for setting, chosen in plan.items():
            results[setting] = harness.measure(chosen, options, lambda s: print(s, flush=True), name=setting)
    lines, rows = report.analyse(results, recipes)
    lines.append(f"Total time {time.perf_counter() - started:.0f} s; load average at the end: "
                 f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}.")
    print("\n".join(lines))
    md, table = report.write(Path(args.out), header + lines, rows)
    print(f"\nwrote {md} and {table}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
