"""End to end: ``python run.py task=mrpc variant=lora`` against plain Hugging Face Trainer + PEFT scripts
with the same model and hyperparameters (``hf_peft_reference.py``), total wall time and dev scores.

    python benchmarks/end_to_end.py --glue-dir ../shared/glue              # all three, one after the other
    python benchmarks/end_to_end.py --contenders ours --glue-dir ../shared/glue   # re-measure one
    python benchmarks/end_to_end.py --glue-dir ../shared/glue --max-steps 5       # smoke test

Contenders (each a fresh process, timed from the outside, run one at a time):
  * ``ours``: ``python run.py task=mrpc variant=lora`` (records go to a temporary results folder);
  * ``hf_grouped``: the Trainer reference with per-batch padding and length-grouped batches, as ours;
  * ``hf_padded``: the Trainer reference batched like transformers' run_glue.py example (every
    example padded to max_length, random batches).
Each result is kept as ``<out>/<contender>.json``; the table (``<out>/end_to_end.md``) is built from
every result in ``<out>``, so contenders can be re-measured one at a time. Do not run anything else
on the machine meanwhile.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONTENDERS = ("ours", "hf_grouped", "hf_padded")
REFERENCE = ["benchmarks/hf_peft_reference.py"]


def command_for(contender: str, args, scratch: Path) -> list[str]:
    if contender == "ours":
        command = ["run.py", "task=mrpc", "variant=lora", f"train.lr={args.lr}", f"data.glue_dir={args.glue_dir}",
                   f"results.dir={scratch}", f"hydra.run.dir={scratch}/hydra", "results.skip_existing=false"]
        if args.max_steps:
            command.append(f"train.max_steps={args.max_steps}")
        return command
    command = [*REFERENCE, "--glue-dir", str(args.glue_dir), "--lr", str(args.lr), "--out", str(scratch / "reference.json")]
    if contender == "hf_padded":
        command.append("--pad-to-max-length")
    if args.max_steps:
        command += ["--max-steps", str(args.max_steps)]
    return command


def scores_of(contender: str, scratch: Path) -> dict:
    if contender == "ours":
        record = json.loads(next((scratch / "runs").glob("*.json")).read_text())
        if record["status"] != "ok":
            raise RuntimeError(f"our run failed: {record['error']}")
        return {"accuracy": record["metrics"]["accuracy"], "f1": record["metrics"]["f1"],
                "steps": record["steps"], "train_seconds": record["train_seconds"]}
    reference = json.loads((scratch / "reference.json").read_text())
    return {key: reference[key] for key in ("accuracy", "f1", "steps", "train_seconds")}


def measure(contender: str, args) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"end_to_end_{contender}_") as folder:
        scratch = Path(folder)
        command = [sys.executable, *command_for(contender, args, scratch)]
        print(f"[{contender}] {' '.join(command[1:])}", file=sys.stderr, flush=True)
        started = time.perf_counter()
        done = subprocess.run(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"})
        wall = time.perf_counter() - started
        if done.returncode != 0:
            raise RuntimeError(f"{contender} exited with {done.returncode}:\n{done.stderr[-3000:]}")
        result = {"contender": contender, "command": "python " + " ".join(command[1:]),
                  "wall_seconds": wall, **scores_of(contender, scratch)}
    print(f"[{contender}] {wall:.0f} s, accuracy {result['accuracy']:.4f}, F1 {result['f1']:.4f}",
          file=sys.stderr, flush=True)
    return result


def table(out: Path) -> str:
    found = {c: json.loads((out / f"{c}.json").read_text()) for c in CONTENDERS if (out / f"{c}.json").is_file()}
    lines = ["| contender | wall s | ours / this | train s | steps | dev accuracy | dev F1 |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    ours = found.get("ours")
    for name, result in found.items():
        ratio = f"{ours['wall_seconds'] / result['wall_seconds']:.2f}" if ours else "n/a"
        lines.append(f"| {name} | {result['wall_seconds']:.0f} | {ratio} | {result['train_seconds']:.0f} | "
                     f"{result['steps']} | {100 * result['accuracy']:.2f} | {100 * result['f1']:.2f} |")
    commands = "\n".join(f"- {name}: `{result['command']}` (measured {result.get('measured', '?')})"
                         for name, result in found.items())
    return (f"# End to end: MRPC, LoRA r=8 on query,value, 3 epochs\n\nMade by `python benchmarks/end_to_end.py`"
            f" (each contender a fresh process timed from the outside, one at a time).\n\n"
            + "\n".join(lines) + f"\n\nTargets: ours ≤ 0.7 × the reference's wall time; dev accuracy and F1 within "
            f"one point.\n\nCommands (temporary folders shown as run):\n{commands}\n")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--contenders", default=",".join(CONTENDERS), help="comma-separated, from " + ",".join(CONTENDERS))
    parser.add_argument("--glue-dir", default=os.environ.get("GLUE_DIR", str(ROOT.parent / "shared" / "glue")))
    parser.add_argument("--max-steps", type=int, default=None, help="stop each run after this many steps (smoke test)")
    parser.add_argument("--lr", type=float, default=5e-4,
                        help="learning rate of both (default 5e-4, as in results/benchmark/end_to_end; the "
                             "framework's LoRA default is now 2e-3, which changes the scores, not the time)")
    parser.add_argument("--out", default=str(ROOT / "results" / "benchmark" / "end_to_end"))
    args = parser.parse_args(argv)
    chosen = [c.strip() for c in args.contenders.split(",") if c.strip()]
    unknown = sorted(set(chosen) - set(CONTENDERS))
    if unknown:
        parser.error(f"unknown contender(s) {', '.join(unknown)}; choose from {', '.join(CONTENDERS)}")
    if not (Path(args.glue_dir) / "MRPC" / "train.tsv").is_file():
        parser.error(f"--glue-dir {args.glue_dir} has no MRPC/train.tsv (the classic glue_data layout)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for contender in chosen:
        result = measure(contender, args)
        result.update(measured=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), machine=platform.machine(),
                      cpus=os.cpu_count(), max_steps=args.max_steps)
        (out / f"{contender}.json").write_text(json.dumps(result, indent=2) + "\n")
    text = table(out)
    (out / "end_to_end.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
