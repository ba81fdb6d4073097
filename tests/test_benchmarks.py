"""The benchmark scripts run (tiny sizes): a script that only runs once per release would rot silently."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import GLUE_DIR

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(not (GLUE_DIR / "MRPC").is_dir(), reason=f"no MRPC folder under {GLUE_DIR}")
@pytest.mark.parametrize("batching", [[], ["--pad-to-max-length"]])
def test_the_trainer_reference_trains_and_reports_its_scores(batching, tmp_path):
    out = tmp_path / "reference.json"
    done = subprocess.run([sys.executable, "benchmarks/hf_peft_reference.py", "--glue-dir", str(GLUE_DIR),
                           "--max-steps", "2", "--batch-size", "4", "--max-length", "32", "--max-train-samples",
                           "32", "--max-eval-samples", "16", "--threads", "1", "--out", str(out), *batching],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["steps"] == 2 and result["eval_examples"] == 16
    assert 0 <= result["accuracy"] <= 1 and 0 <= result["f1"] <= 1
    assert result["trainable_params"] == 6 * 2 * 8 * (384 + 384) + (384 * 2 + 2)  # LoRA on query, value + head


def test_the_end_to_end_table_names_unknown_contenders():
    done = subprocess.run([sys.executable, "benchmarks/end_to_end.py", "--contenders", "ours,trainer"],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "trainer" in done.stderr and "hf_grouped" in done.stderr
