"""End to end: ``python run.py task=mrpc variant=lora`` against plain Hugging Face Trainer + PEFT scripts
with the same model and hyperparameters (``hf_peft_reference.py``), in fp32 and in bf16: wall time and
dev scores, each contender run several times (seeds 0, 1, 2, ...), interleaved, at the learning rate of
LoRA's recipe.

    python benchmarks/end_to_end.py --glue-dir ../shared/glue                 # 5 x 3 runs (~75 min, 2 cores)
    python benchmarks/end_to_end.py --glue-dir ../shared/glue --contenders ours,ours_bf16 --repeats 3
    python benchmarks/end_to_end.py --glue-dir ../shared/glue --repeats 1 --max-steps 3 --out /tmp/e2e  # smoke

Contenders (each run a fresh process, timed from the outside, one at a time):
  * ``ours``: ``python run.py task=mrpc variant=lora seed=K train.mixed_precision=no`` (fp32; records go
    to a temporary results folder);
  * ``ours_bf16``: the same with ``train.mixed_precision=bf16`` (autocast, frozen base weights in bf16);
  * ``hf_grouped``: the Trainer reference with per-batch padding and length-grouped batches, as ours;
  * ``hf_grouped_bf16``: the same with the Trainer's ``--bf16`` (its autocast; the base stays fp32);
  * ``hf_padded``: the Trainer reference batched like transformers' run_glue.py example (every
    example padded to max_length, random batches).
Repeat K runs every chosen contender once with seed K, in an order shuffled for that repeat, so that a
slow stretch of the machine does not fall on one contender's runs only. The learning rate is
``conf/variant/lora.yaml``'s (the recipe, where LoRA clearly learns on MRPC) unless ``--lr`` says
otherwise. Each result is kept as ``<out>/<contender>-seed<K>.json``; the table (``<out>/end_to_end.md``:
mean, standard deviation and range of wall time, accuracy and F1 over the seeds) is built from every
such result in ``<out>``, so runs can be added later: a (contender, seed) already measured there with the
same settings is kept, not rerun (``--remeasure`` reruns it; other settings in the same ``<out>`` are an
error, so one table never mixes them). Do not run anything else on the machine meanwhile.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))

from benchmarks import contenders as setups  # noqa: E402
from benchmarks.harness import load_warning  # noqa: E402

CONTENDERS = ("ours", "ours_bf16", "hf_grouped", "hf_grouped_bf16", "hf_padded")
#: the contenders that are our runner (the others are the Trainer reference)
OURS = ("ours", "ours_bf16")
#: each bf16 contender and the same contender in fp32, for the bf16 / fp32 column
IN_FP32 = {"ours_bf16": "ours", "hf_grouped_bf16": "hf_grouped"}
REFERENCE = ["benchmarks/hf_peft_reference.py"]
#: the variant both sides train; its recipe gives the learning rate
VARIANT = "lora"
MIN_REPEATS = 3
#: what makes two results comparable: a result kept in --out must have been measured with the same
SETTINGS = ("lr", "max_steps", "max_train_samples", "max_eval_samples")


def command_for(contender: str, seed: int, args, scratch: Path) -> list[str]:
    if contender in OURS:
        precision = "bf16" if contender == "ours_bf16" else "no"
        command = ["run.py", "task=mrpc", f"variant={VARIANT}", f"seed={seed}", f"train.lr={args.lr}",
                   f"train.mixed_precision={precision}",
                   f"data.glue_dir={args.glue_dir}", f"results.dir={scratch}", f"hydra.run.dir={scratch}/hydra",
                   "results.skip_existing=false"]
        limits = {"train.max_steps": args.max_steps, "data.max_train_samples": args.max_train_samples,
                  "data.max_eval_samples": args.max_eval_samples}
        return command + [f"{key}={value}" for key, value in limits.items() if value]
    command = [*REFERENCE, "--glue-dir", str(args.glue_dir), "--seed", str(seed), "--lr", str(args.lr),
               "--out", str(scratch / "reference.json")]
    if contender == "hf_padded":
        command.append("--pad-to-max-length")
    if contender == "hf_grouped_bf16":
        command.append("--bf16")
    limits = {"--max-steps": args.max_steps, "--max-train-samples": args.max_train_samples,
              "--max-eval-samples": args.max_eval_samples}
    return command + [part for key, value in limits.items() if value for part in (key, str(value))]


def scores_of(contender: str, scratch: Path) -> dict:
    if contender in OURS:
        record = json.loads(next((scratch / "runs").glob("*.json")).read_text())
        if record["status"] != "ok":
            raise RuntimeError(f"our run failed: {record['error']}")
        return {"accuracy": record["metrics"]["accuracy"], "f1": record["metrics"]["f1"],
                "steps": record["steps"], "train_seconds": record["train_seconds"], "precision": record["precision"]}
    reference = json.loads((scratch / "reference.json").read_text())
    return {key: reference[key] for key in ("accuracy", "f1", "steps", "train_seconds", "precision")}


def measure(contender: str, seed: int, args) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"end_to_end_{contender}_") as folder:
        scratch = Path(folder)
        command = [sys.executable, *command_for(contender, seed, args, scratch)]
        print(f"[{contender} seed {seed}] {' '.join(command[1:])}", file=sys.stderr, flush=True)
        started = time.perf_counter()
        done = subprocess.run(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"})
        wall = time.perf_counter() - started
        if done.returncode != 0:
            raise RuntimeError(f"{contender} (seed {seed}) exited with {done.returncode}:\n{done.stderr[-3000:]}")
        result = {"contender": contender, "seed": seed, "lr": args.lr, "command": "python " + " ".join(command[1:]),
                  "wall_seconds": wall, **scores_of(contender, scratch)}
    print(f"[{contender} seed {seed}] {wall:.0f} s, accuracy {result['accuracy']:.4f}, F1 {result['f1']:.4f}",
          file=sys.stderr, flush=True)
    return result


def schedule(chosen: list[str], repeats: int) -> list[tuple[str, int]]:
    """(contender, seed) in run order: repeat K runs every contender once with seed K, shuffled."""
    order = []
    for seed in range(repeats):
        shuffled = list(chosen)
        random.Random(seed).shuffle(shuffled)
        order += [(contender, seed) for contender in shuffled]
    return order


def spread(values: list[float], scale: float = 1.0, digits: int = 2) -> str:
    """'mean ± sd (min–max)' of ``values`` times ``scale``; the sd only from two values on."""
    values = [v * scale for v in values]
    text = f"{statistics.mean(values):.{digits}f}"
    if len(values) > 1:
        text += f" ± {statistics.stdev(values):.{digits}f} ({min(values):.{digits}f}–{max(values):.{digits}f})"
    return text


def read_results(out: Path) -> dict[str, list[dict]]:
    found = {}
    for contender in CONTENDERS:
        runs = [json.loads(p.read_text()) for p in sorted(out.glob(f"{contender}-seed*.json"))]
        if runs:
            found[contender] = sorted(runs, key=lambda r: r["seed"])
    return found


def mean_wall(runs: list[dict] | None) -> float | None:
    return statistics.mean(r["wall_seconds"] for r in runs) if runs else None


def table(found: dict[str, list[dict]]) -> str:
    lines = ["| contender | precision | runs (seeds) | lr | wall s | ours / this (mean wall) | bf16 / fp32 (mean wall) "
             "| train s | steps | dev accuracy | dev F1 |", "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    ours = found.get("ours")
    for name, runs in found.items():
        wall = mean_wall(runs)
        ratio = f"{mean_wall(ours) / wall:.2f}" if ours else "n/a"
        fp32 = mean_wall(found.get(IN_FP32.get(name)))
        lrs = sorted({f"{r.get('lr', '?')}" for r in runs})
        precisions = "/".join(sorted({r.get("precision", "fp32") for r in runs}))  # fp32 before precisions were noted
        lines.append(f"| {name} | {precisions} | {len(runs)} ({', '.join(str(r['seed']) for r in runs)}) | "
                     f"{', '.join(lrs)} | {spread([r['wall_seconds'] for r in runs], digits=0)} | {ratio} | "
                     f"{f'{wall / fp32:.2f}' if fp32 else '–'} | "
                     f"{spread([r['train_seconds'] for r in runs], digits=0)} | "
                     f"{'/'.join(sorted({str(r['steps']) for r in runs}))} | "
                     f"{spread([r['accuracy'] for r in runs], 100)} | {spread([r['f1'] for r in runs], 100)} |")
    notes = []
    if any(len(runs) < MIN_REPEATS for runs in found.values()):
        notes.append(f"Fewer than {MIN_REPEATS} runs for some contender: its spread says little.")
    if ours:
        by_seed = {r["seed"]: r["accuracy"] for r in ours}
        for name, runs in found.items():
            paired = [100 * (by_seed[r["seed"]] - r["accuracy"]) for r in runs if name != "ours" and r["seed"] in by_seed]
            if paired:
                notes.append(f"Accuracy, ours − {name}, seed by seed: {', '.join(f'{d:+.2f}' for d in paired)} "
                             f"points (mean {statistics.mean(paired):+.2f}).")
    for name, reference in IN_FP32.items():
        fp32_wall = {r["seed"]: r["wall_seconds"] for r in found.get(reference, [])}
        paired = [r["wall_seconds"] / fp32_wall[r["seed"]] for r in found.get(name, []) if r["seed"] in fp32_wall]
        if paired:
            notes.append(f"Wall time, {name} / {reference}, seed by seed: {', '.join(f'{x:.2f}' for x in paired)} "
                         f"(mean {statistics.mean(paired):.2f}).")
    loads = [r for runs in found.values() for r in runs if r.get("load_warning")]
    noisy = ("measured while the 1-minute load average was above 0.5 at the start of their launch, so their "
             "timings carry other jobs' noise: " + ", ".join(f"{r['contender']} seed {r['seed']}" for r in loads)
             + "; rerun them on a quiet machine before concluding") if loads else ""
    commands = "\n".join(f"- {name} (seed {r['seed']}): `{r['command']}` (measured {r.get('measured', '?')})"
                         for name, runs in found.items() for r in runs)
    limits = sorted({r.get("max_steps") for rs in found.values() for r in rs}, key=str)
    length = "3 epochs" if limits == [None] else "stopped after " + "/".join(f"{n}" for n in limits) + " steps"
    return (f"# End to end: MRPC, LoRA r=8 on query,value, {length}\n\nMade by `python benchmarks/end_to_end.py` "
            "(each run a fresh process timed from the outside, one at a time; every contender once per seed, "
            "in a shuffled order per seed). Values: mean ± standard deviation (min–max) over the seeds. bf16: "
            "ours with train.mixed_precision=bf16 (autocast, frozen base weights in bf16), the Trainer with "
            "--bf16 (its autocast, base weights in fp32).\n\n"
            + (f"**{noisy}**\n\n" if noisy else "") + "\n".join(lines) + "\n\n" + "".join(n + "\n" for n in notes)
            + "\nTargets: ours ≤ 0.7 × the reference's wall time; dev accuracy and F1 within one point.\n\n"
            f"Commands (temporary folders shown as run):\n{commands}\n")


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--contenders", default=",".join(CONTENDERS), help="comma-separated, from " + ",".join(CONTENDERS))
    parser.add_argument("--repeats", type=positive, default=MIN_REPEATS,
                        help=f"runs per contender, seeds 0 .. repeats-1 (default {MIN_REPEATS})")
    parser.add_argument("--glue-dir", default=os.environ.get("GLUE_DIR", str(ROOT.parent / "shared" / "glue")))
    parser.add_argument("--lr", type=float, default=None,
                        help=f"learning rate of both (default: conf/variant/{VARIANT}.yaml's, "
                             f"{setups.recipe(VARIANT).lr:g})")
    parser.add_argument("--max-steps", type=positive, default=None, help="stop each run after this many steps (smoke test)")
    parser.add_argument("--max-train-samples", type=positive, default=None, help="first N training pairs (smoke test)")
    parser.add_argument("--max-eval-samples", type=positive, default=None, help="first N dev pairs (smoke test)")
    parser.add_argument("--out", default=str(ROOT / "results" / "benchmark" / "end_to_end"))
    parser.add_argument("--remeasure", action="store_true", help="rerun (contender, seed) pairs already in --out")
    args = parser.parse_args(argv)
    chosen = [c.strip() for c in args.contenders.split(",") if c.strip()]
    unknown = sorted(set(chosen) - set(CONTENDERS))
    if unknown or not chosen:
        parser.error(f"unknown contender(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(CONTENDERS)}")
    if not (Path(args.glue_dir) / "MRPC" / "train.tsv").is_file():
        parser.error(f"--glue-dir {args.glue_dir} has no MRPC/train.tsv (the classic glue_data layout)")
    if args.lr is None:
        args.lr = setups.recipe(VARIANT).lr
    warning = load_warning(os.getloadavg()[0])
    if warning:
        print(warning, file=sys.stderr, flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for contender, seed in schedule(chosen, args.repeats):
        kept = out / f"{contender}-seed{seed}.json"
        if kept.is_file() and not args.remeasure:
            earlier = json.loads(kept.read_text())
            differs = {key: (earlier.get(key), getattr(args, key)) for key in SETTINGS if earlier.get(key) != getattr(args, key)}
            if differs:
                parser.error(f"{kept} was measured with other settings ({', '.join(f'{k}: {a} there, {b} now' for k, (a, b) in differs.items())}): "
                             "use another --out, or --remeasure")
            print(f"[{contender} seed {seed}] kept from {kept}", file=sys.stderr, flush=True)
            continue
        result = measure(contender, seed, args)
        result.update(measured=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), machine=platform.machine(),
                      cpus=os.cpu_count(), load_warning=warning, **{key: getattr(args, key) for key in SETTINGS})
        kept.write_text(json.dumps(result, indent=2) + "\n")
    text = table(read_results(out))
    (out / "end_to_end.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
