"""The benchmark scripts run (tiny sizes): a script that only runs once per release would rot silently."""
import csv
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import GLUE_DIR, REPO



@pytest.mark.skipif(not (GLUE_DIR / "MRPC").is_dir(), reason=f"no MRPC folder under {GLUE_DIR}")
@pytest.mark.parametrize("batching", [[], ["--pad-to-max-length"], ["--bf16"]])
@pytest.mark.slow
def test_the_trainer_reference_trains_and_reports_its_scores(batching, tmp_path):
    out = tmp_path / "reference.json"
    done = subprocess.run([sys.executable, "benchmarks/hf_peft_reference.py", "--glue-dir", str(GLUE_DIR),
                           "--max-steps", "2", "--batch-size", "4", "--max-length", "32", "--max-train-samples",
                           "32", "--max-eval-samples", "16", "--threads", "1", "--out", str(out), *batching],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["steps"] == 2 and result["eval_examples"] == 16
    assert result["precision"] == ("bf16" if "--bf16" in batching else "fp32")
    assert 0 <= result["accuracy"] <= 1 and 0 <= result["f1"] <= 1
    assert result["trainable_params"] == 6 * 2 * 8 * (384 + 384) + (384 * 2 + 2)  # LoRA on query, value + head


@pytest.mark.slow
def test_the_end_to_end_table_names_unknown_contenders():
    done = subprocess.run([sys.executable, "benchmarks/end_to_end.py", "--contenders", "ours,trainer"],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "trainer" in done.stderr and "hf_grouped" in done.stderr


# -- step_time.py: its pieces -------------------------------------------------------------------------------

from benchmarks import contenders, harness, report  # noqa: E402


def planted_times(rounds=20, slowdown=1.0, seed=0):
    """Two contenders' per-round seconds: a drift shared by the round (the machine's load), each
    contender's own 5 % noise, and ``slowdown`` on the second."""
    import random
    rng = random.Random(seed)
    drift = [rng.uniform(0.8, 1.3) for _ in range(rounds)]
    first = [d * rng.gauss(1.0, 0.05) for d in drift]
    second = [d * rng.gauss(1.0, 0.05) * slowdown for d in drift]
    return first, second


def test_the_interval_of_two_identical_timing_distributions_contains_one():
    first, second = planted_times()
    ratio = report.paired_ratio(second, first)
    assert ratio.low < 1 < ratio.high
    assert ratio.reads() == "same within noise"


def test_a_planted_twenty_percent_slowdown_is_found_and_its_interval_excludes_one():
    first, second = planted_times(slowdown=1.2)
    ratio = report.paired_ratio(second, first)
    assert ratio.value == pytest.approx(1.2, abs=0.03)
    assert 1 < ratio.low <= ratio.value <= ratio.high
    assert ratio.reads() == "slower"
    assert report.paired_ratio(first, second).reads() == "faster"


def test_too_few_rounds_give_no_verdict():
    first, second = planted_times(rounds=3, slowdown=1.5)
    ratio = report.paired_ratio(second, first)
    assert ratio.reads().startswith("no verdict") and report.judge(ratio, 2.0).startswith("no verdict")


def test_overhead_is_the_adapters_share_above_the_floor():
    floor = [1.0, 1.1, 0.9, 1.0, 1.2]
    peft = [f + 0.4 for f in floor]           # PEFT's adapter costs 0.4 s above the floor every round
    ours = [f + 0.1 for f in floor]           # ours 0.1 s
    cost = report.overhead(ours, peft, floor)
    assert cost.value == pytest.approx(0.25) and cost.low == pytest.approx(0.25) and cost.high == pytest.approx(0.25)
    assert report.judge(cost, 0.5) == "met" and report.judge(cost, 0.2) == "missed"
    assert report.overhead(peft, peft, floor).value == pytest.approx(1.0)
    assert report.overhead(ours, floor, floor) is None  # PEFT's step not above the floor: nothing to divide by


def test_a_target_inside_the_interval_is_undecided():
    assert report.judge(report.Ratio(1.0, 0.9, 1.1, 10), 1.0).startswith("undecided")


@dataclass
class FakeMeasurement:
    contender: object
    times: list
    trainable: int = 10
    peak_bytes: int | None = 2**20
    rss_bytes: int | None = 2**20
    storage: dict = field(default_factory=dict)
    forward_flops: int | None = None
    step_flops: int | None = None
    profile: dict | None = None


def test_the_report_has_a_a_rows_for_ours_peft_and_the_plain_model():
    pytest.importorskip("peft")
    recipes = [contenders.recipe("lora")]
    chosen = contenders.contenders_for("minilm", recipes, aa=["lora"])
    labels = [c.label for c in chosen]
    assert labels.count("lora ours") == 1 and "lora ours (again, A/A #2)" in labels
    assert "lora PEFT (again, A/A #2)" in labels and "inference: plain model (again, A/A #2)" in labels
    first, second = planted_times(rounds=8)
    measurements = [FakeMeasurement(c, first if c.copy == 0 else second) for c in chosen]
    lines, rows = report.analyse({"minilm": measurements}, recipes)
    text = "\n".join(lines)
    assert "| A/A: the same contender timed twice" in text
    for label in ("lora ours", "lora PEFT", "inference: plain model"):
        assert f"| {label} | " in text.split("| A/A")[1].split("The A/A rows")[0]
    copies = [row for row in rows if row["copy"] == 1]
    assert len(copies) == 3 and all(row["ratio_vs_first_copy_low"] < 1 < row["ratio_vs_first_copy_high"]
                                    for row in copies)


def test_contenders_come_from_the_registry_and_a_variant_without_peft_gets_only_our_row(monkeypatch):
    pytest.importorskip("peft")
    import variants
    assert contenders.adapter_variants() == [n for n in variants.available()
                                             if issubclass(variants.lookup(n), variants.Adapter)]
    unknown = contenders.Recipe("no_peft_twin", rank=4, alpha=8.0, targets=("query",), dropout=0.0)
    assert contenders.peft_config_for("no_peft_twin", rank=4, alpha=8, target_modules=["query"]) is None
    impls = [(c.impl, c.copy) for c in contenders.contenders_for("wide", [unknown], aa=["no_peft_twin"],
                                                                 full=False, inference=False)]
    assert impls == [("floor", 0), ("ours", 0), ("ours", 1), ("gemm", 0)]  # the last: the multiply probe


def test_every_training_contender_comes_in_each_precision_and_inference_in_fp32_only():
    pytest.importorskip("peft")
    chosen = contenders.contenders_for("minilm", [contenders.recipe("lora")], aa=[], precisions=("fp32", "bf16"))
    by_precision = {p: [(c.mode, c.impl) for c in chosen if c.precision == p] for p in ("fp32", "bf16")}
    train = [("train", "floor"), ("train", "full"), ("train", "ours"), ("train", "peft"), ("probe", "gemm")]
    assert by_precision["bf16"] == train
    assert by_precision["fp32"] == train + [("infer", "base")] * 2 + [("infer", "ours")]
    assert [c.label for c in chosen if c.impl == "ours" and c.mode == "train"] == ["lora ours", "lora ours, bf16"]


@pytest.mark.slow
@pytest.mark.parametrize("impl", ["ours", "peft"])
def test_a_bf16_contender_stores_its_frozen_linear_weights_in_bf16_and_trains_in_fp32(impl, tmp_path):
    pytest.importorskip("peft")
    import torch
    options = {"batch_size": 2, "seq_len": 16, "wide_hidden": 64, "wide_layers": 1, "wide_folder": str(tmp_path)}
    contenders.make_wide_model(options, str(tmp_path))
    contender = contenders.Contender("wide", "train", impl, contenders.recipe("lora"), precision="bf16")
    model = contender.build(options, torch.device("cpu"))
    frozen_linear = {n: p.dtype for n, p in model.named_parameters()
                     if "encoder" in n and p.ndim == 2 and not p.requires_grad}
    assert frozen_linear and set(frozen_linear.values()) == {torch.bfloat16}, frozen_linear
    assert {p.dtype for p in model.parameters() if p.requires_grad} == {torch.float32}  # adapters and head
    assert model.get_input_embeddings().weight.dtype == torch.float32  # not a linear layer: as loaded


def test_the_peft_mapping_keeps_each_recipes_settings():
    pytest.importorskip("peft")
    dora = contenders.peft_counterpart(contenders.recipe("dora", rank=4, alpha=8))
    assert dora.config.use_dora and not dora.config.use_rslora and dora.config.r == 4 and dora.config.lora_alpha == 8
    vera = contenders.recipe("vera")
    assert vera.rank == 256 and vera.options == {"d_initial": 0.1, "projection_seed": 0}  # from its recipe
    assert contenders.peft_counterpart(vera).config.r == 256


def test_the_load_warning_names_the_load_above_half_a_core():
    assert harness.load_warning(0.4) is None
    assert "0.61" in harness.load_warning(0.61)


@pytest.mark.slow
def test_step_time_smoke_run_writes_the_tables_with_a_a_rows_in_both_precisions(tmp_path):
    pytest.importorskip("peft")
    done = subprocess.run([sys.executable, "benchmarks/step_time.py", "--smoke", "--variants", "lora", "--no-full",
                           "--no-inference", "--threads", "1", "--out", str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "estimated duration" in done.stdout
    with open(tmp_path / "step_time.csv") as handle:
        rows = list(csv.DictReader(handle))
    each = [("floor", "0"), ("ours", "0"), ("ours", "1"), ("peft", "0"), ("peft", "1"), ("gemm", "0")]
    assert [(r["precision"], r["impl"], r["copy"]) for r in rows] == [(p, *c) for p in ("fp32", "bf16") for c in each]
    assert all(len(r["times_ms"].split()) == 1 for r in rows)  # --smoke: one timed round
    train = [r for r in rows if r["mode"] == "train"]
    assert all(float(r["step_gflop"]) > float(r["forward_gflop"]) > 0 and float(r["share_of_peak"]) > 0 for r in train)
    assert all(float(r["time_share_matmul"]) > 0 for r in train)
    assert all(r["ratio_vs_fp32"] for r in train if r["precision"] == "bf16")
    text = (tmp_path / "step_time.md").read_text()
    assert text.count("A/A: the same contender timed twice") == 2
    assert "Multiply rate, fp32" in text and "Multiply rate, bf16" in text and "share of peak [95 %]" in text
    assert text.count("| one profiled step | ms | matmul | casts & copies |") == 2
    assert "| lora ours | bf16 |" in text.split("each precision against fp32")[1]  # the bf16/fp32 table


def test_step_time_names_an_unknown_precision_and_the_choices(capsys):
    from benchmarks import step_time
    with pytest.raises(SystemExit):
        step_time.parse_args(["--precisions", "fp32,fp16"])
    error = capsys.readouterr().err
    assert "fp16" in error and "bf16" in error


# -- FLOPs, share of peak, where the time goes ---------------------------------------------------------------

@pytest.mark.parametrize("weight_trains, input_needs_grad, products", [
    (False, True, 2),    # frozen layer: the forward product and the input gradient
    (True, False, 2),    # trained layer at the bottom: the forward product and the weight gradient
    (True, True, 3)])    # trained layer in the middle: all three
def test_the_flop_count_of_a_linear_layer_is_two_per_multiply_add_of_what_runs(weight_trains, input_needs_grad,
                                                                                products):
    import torch
    m, k, n = 6, 5, 3
    layer = torch.nn.Linear(k, n).requires_grad_(weight_trains)
    x = torch.randn(m, k, requires_grad=input_needs_grad)
    forward, total = harness.count_flops(lambda: layer(x).sum(), lambda loss: loss.backward())
    assert forward == 2 * m * k * n
    assert total == products * 2 * m * k * n


def test_the_flop_count_includes_the_cpus_fused_attention():
    import torch
    import torch.nn.functional as F
    b, h, s, d = 2, 3, 8, 4
    q, k, v = (torch.randn(b, h, s, d, requires_grad=True) for _ in range(3))
    forward, total = harness.count_flops(lambda: F.scaled_dot_product_attention(q, k, v).sum(),
                                         lambda loss: loss.backward())
    product = 2 * b * h * s * s * d  # one (s x d) by (d x s) product per head, 2 per multiply-add
    assert forward == 2 * product    # Q K^T and P V
    assert total == 7 * product      # and the backward: the scores again, dP, dV, dQ, dK


def test_share_of_peak_is_the_steps_flop_rate_over_the_probes_round_by_round():
    probe = FakeMeasurement(contenders.Contender("minilm", "probe", "gemm", precision="bf16"), [], step_flops=10**9)
    step = FakeMeasurement(contenders.Contender("minilm", "train", "ours", contenders.recipe("lora"),
                                                precision="bf16"), [], step_flops=2 * 10**9)
    drift = [1.0, 1.3, 0.8, 1.1, 0.9]   # the machine's load, shared by the round (median 1)
    probe.times = [0.1 * d for d in drift]   # 10 GFLOP/s at drift 1
    step.times = [0.5 * d for d in drift]    # 4 GFLOP/s at drift 1: 40 % of the probe's rate, in every round
    share = report.share_of_peak(step, probe)
    assert (share.value, share.low, share.high) == pytest.approx((0.4, 0.4, 0.4))
    assert report.judge(share, 0.3, at_least=True) == "met" and report.judge(share, 0.6, at_least=True) == "missed"
    lines, rows = report.analyse({"minilm": [step, probe]}, [contenders.recipe("lora")])
    text = "\n".join(lines)
    assert "| lora ours: share of the bf16 multiply rate [95 %] | 40 % [40, 40] | ≥ 60 % | missed |" in text
    assert "Multiply rate, bf16: 10.0 GFLOP/s" in text and "| 2.0 | 40 % [40, 40] |" in text
    assert rows[0]["share_of_peak"] == pytest.approx(0.4) and rows[1]["gflop_per_second"] == pytest.approx(10.0)


def test_the_time_of_a_profiled_step_is_split_by_kind_of_op_and_adds_up_to_the_step():
    profile = {"wall_seconds": 1.0, "optimizer_seconds": 0.08,
               "op_seconds": {"aten::mm": 0.3, "aten::addmm": 0.2, "aten::copy_": 0.06, "aten::_to_copy": 0.04,
                              "aten::native_layer_norm": 0.05, "aten::_softmax": 0.03,
                              "aten::_scaled_dot_product_flash_attention_for_cpu": 0.02, "aten::gelu": 0.1,
                              "autograd::engine::evaluate_function: AddmmBackward0": 0.02}}
    seconds = report.time_by_kind(profile)
    assert seconds == pytest.approx({"matmul": 0.5, "casts & copies": 0.1, "layer norm": 0.05,
                                     "attention & softmax": 0.05, "elementwise & other ops": 0.1, "optimizer": 0.08,
                                     "autograd & Python": 0.02 + 0.1})  # + the 0.1 s outside every op
    assert report.largest_ops(profile, count=2) == [("gelu", pytest.approx(0.1)), ("copy_", pytest.approx(0.06))]


@pytest.mark.slow
def test_step_time_names_an_unknown_variant_and_the_choices():
    done = subprocess.run([sys.executable, "benchmarks/step_time.py", "--variants", "lora,nope"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "nope" in done.stderr and "dora" in done.stderr


# -- end_to_end.py ------------------------------------------------------------------------------------------

def test_end_to_end_interleaves_the_contenders_seed_by_seed():
    from benchmarks import end_to_end
    order = end_to_end.schedule(["ours", "hf_grouped", "hf_padded"], 3)
    assert len(order) == 9
    for seed in range(3):  # every repeat runs each contender once, with that repeat's seed
        assert sorted(c for c, s in order[3 * seed:3 * seed + 3] if s == seed) == ["hf_grouped", "hf_padded", "ours"]
    assert len({tuple(c for c, _ in order[i:i + 3]) for i in (0, 3, 6)}) > 1  # not the same order every time


def test_end_to_end_table_gives_mean_and_spread_over_the_seeds():
    from benchmarks import end_to_end

    def run(contender, seed, accuracy, wall):
        return {"contender": contender, "seed": seed, "lr": 0.002, "command": "python x", "wall_seconds": wall,
                "train_seconds": wall - 10, "steps": 345, "accuracy": accuracy, "f1": 0.8}

    found = {"ours": [run("ours", s, a, 100) for s, a in enumerate([0.80, 0.82, 0.84])],
             "hf_grouped": [run("hf_grouped", s, a, 200) for s, a in enumerate([0.79, 0.80, 0.81])]}
    text = end_to_end.table(found)
    assert "| ours | fp32 | 3 (0, 1, 2) | 0.002 | 100 ± 0 (100–100) | 1.00 | – |" in text
    assert "82.00 ± 2.00 (80.00–84.00)" in text and "80.00 ± 1.00 (79.00–81.00)" in text
    assert "| 0.50 |" in text  # ours / hf_grouped mean wall time
    assert "seed by seed: +1.00, +2.00, +3.00 points (mean +2.00)" in text
    assert "Fewer than" not in text


def test_end_to_end_table_sets_each_bf16_contender_beside_itself_in_fp32():
    from benchmarks import end_to_end

    def run(contender, seed, wall, precision):
        return {"contender": contender, "seed": seed, "lr": 0.002, "command": "python x", "wall_seconds": wall,
                "train_seconds": wall - 10, "steps": 345, "accuracy": 0.8, "f1": 0.8, "precision": precision}

    found = {"ours": [run("ours", s, w, "fp32") for s, w in enumerate([100, 110])],
             "ours_bf16": [run("ours_bf16", s, w, "bf16") for s, w in enumerate([60, 55])]}
    text = end_to_end.table(found)
    assert "| ours_bf16 | bf16 | 2 (0, 1) |" in text and "| ours | fp32 | 2 (0, 1) |" in text
    assert "| 1.83 | 0.55 |" in text  # ours / this, bf16 / fp32 (mean wall: 105 / 57.5, 57.5 / 105)
    assert "Wall time, ours_bf16 / ours, seed by seed: 0.60, 0.50 (mean 0.55)." in text


def test_quick_mode_is_minilm_a_subset_of_variants_and_more_rounds():
    from benchmarks import step_time
    quick, full = step_time.parse_args(["--quick"]), step_time.parse_args([])
    assert quick.settings == ["minilm"] and full.settings == ["minilm", "wide"]
    assert set(quick.variants) < set(full.variants) == set(contenders.adapter_variants())
    assert quick.aa == ["lora"] and step_time.parse_args(["--aa", "none"]).aa == []


@pytest.mark.slow
def test_end_to_end_keeps_what_it_measured_and_refuses_to_mix_settings(tmp_path, monkeypatch):
    from benchmarks import end_to_end
    glue = tmp_path / "glue" / "MRPC"
    glue.mkdir(parents=True)
    (glue / "train.tsv").write_text("")
    measured = []

    def measure(contender, seed, args):
        measured.append((contender, seed))
        return {"contender": contender, "seed": seed, "lr": args.lr, "command": "python x", "wall_seconds": 10.0,
                "train_seconds": 9.0, "steps": 3, "accuracy": 0.7, "f1": 0.8}

    monkeypatch.setattr(end_to_end, "measure", measure)
    monkeypatch.setattr(end_to_end, "load_warning", lambda load: "busy" if measured else None)
    common = ["--glue-dir", str(tmp_path / "glue"), "--contenders", "ours", "--max-steps", "3", "--out", str(tmp_path / "out")]
    end_to_end.main(common + ["--repeats", "1"])
    end_to_end.main(common + ["--repeats", "2"])
    assert measured == [("ours", 0), ("ours", 1)]  # seed 0 kept, not rerun
    text = (tmp_path / "out" / "end_to_end.md").read_text()
    assert "stopped after 3 steps" in text and "| ours | fp32 | 2 (0, 1) |" in text
    assert "load average was above 0.5" in text and "ours seed 1" in text and "ours seed 0" not in text
    with pytest.raises(SystemExit):
        end_to_end.main(common[:-4] + ["--max-steps", "5", "--out", str(tmp_path / "out"), "--repeats", "1"])
    assert measured == [("ours", 0), ("ours", 1)]
    end_to_end.main(common + ["--repeats", "1", "--remeasure"])
    assert measured[-1] == ("ours", 0)
