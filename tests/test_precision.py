"""The precision a run trains in: ``train.mixed_precision=auto`` resolved for the device (bf16 on a CPU
with bf16 instructions or a GPU with bf16, else fp32) before hashing; the record names it; a run in
another precision is another configuration; the study presets of both editions pin fp32, so their
records stay found; and bf16 stores the frozen base in bf16 and nothing that trains."""
import pytest
import torch

import variants
from conftest import CONF, composed, make_bert
from experiments.config import build
from experiments.config.precision import cpu_supports_bf16, resolve

AVX512_BF16 = "processor\t: 0\nflags\t\t: fpu sse sse2 avx2 avx512f avx512_bf16\n"
AVX2_ONLY = "processor\t: 0\nflags\t\t: fpu sse sse2 avx2 avx512f\n"
ARM_BF16 = "processor\t: 0\nFeatures\t: fp asimd bf16 i8mm\n"


def test_cpu_bf16_is_read_from_the_instruction_flags():
    assert cpu_supports_bf16(AVX512_BF16) and cpu_supports_bf16(ARM_BF16)
    assert not cpu_supports_bf16(AVX2_ONLY) and not cpu_supports_bf16("")


@pytest.mark.parametrize("setting, device, cpu_bf16, cuda_bf16, expected", [
    ("auto", "cpu", True, False, "bf16"),
    ("auto", "cpu", False, False, "no"),     # no bf16 instructions: emulated bf16 is slower than fp32
    ("auto", "cuda", False, True, "bf16"),
    ("auto", "cuda", True, False, "no"),     # the GPU decides, not the CPU
    ("no", "cpu", True, True, "no"),
    ("bf16", "cpu", False, False, "bf16"),   # asked for: kept
    ("fp16", "cuda", False, False, "fp16"),
])
def test_auto_is_bf16_where_the_device_has_it(setting, device, cpu_bf16, cuda_bf16, expected):
    assert resolve(setting, device, cpu_bf16, cuda_bf16) == expected


def test_a_bad_precision_is_named():
    with pytest.raises(ValueError, match="train.mixed_precision='fp8' is not a precision; valid: auto, no, bf16, fp16"):
        resolve("fp8", "cpu", True, False)


def test_the_resolved_precision_is_hashed_so_another_precision_is_another_configuration():
    fp32, bf16 = build(composed("train.mixed_precision=no")), build(composed("train.mixed_precision=bf16"))
    assert (fp32.train.mixed_precision, bf16.train.mixed_precision) == ("no", "bf16")
    assert fp32.config_hash != bf16.config_hash
    auto = build(composed("train.mixed_precision=auto"))
    assert auto.train.mixed_precision in ("no", "bf16")  # never "auto" in a record or a hash
    assert auto.config_hash == (bf16 if auto.train.mixed_precision == "bf16" else fp32).config_hash


STUDY_PRESETS = ["glue_table", "glue_table_sst2", "rank_sweep", "alpha_sweep", "target_sweep", "recipe_search",
                 "second_edition_head", "second_edition_tuning", "second_edition_tuning_sst2",
                 "second_edition_tuning_rte", "second_edition_final", "second_edition_final_sst2",
                 "second_edition_final_rte", "second_edition_rank", "second_edition_rank_own_rate"]


@pytest.mark.parametrize("preset", STUDY_PRESETS)
def test_the_presets_of_both_study_editions_pin_fp32(preset):
    assert (CONF / "experiment" / f"{preset}.yaml").is_file()
    assert composed(f"experiment={preset}", "train.tuned_file=null", "train.tuned_variant=null")[
        "train"]["mixed_precision"] == "no"


@pytest.mark.parametrize("name", ["lora", "dora", "vera", "hira", "qlora", "head", "full"])
def test_bf16_stores_the_frozen_linear_weights_in_bf16_and_trains_in_float32(name):
    model = variants.apply(make_bert(), name, rank=4, alpha=8, target_modules=["query", "value"],
                           base_dtype="bfloat16")
    trained = [p for p in model.parameters() if p.requires_grad]
    assert trained and all(p.dtype == torch.float32 for p in trained)
    frozen_linear = [m.weight for m in model.modules() if isinstance(m, torch.nn.Linear) and not m.weight.requires_grad]
    assert all(w.dtype == torch.bfloat16 for w in frozen_linear)
    assert model.variant_config["base_dtype"] == "bfloat16"


def test_dora_starts_equal_to_its_bf16_base_because_its_norms_come_from_the_stored_weights(token_ids):
    """At the start LoRA adds nothing, so both models are the bf16 base; DoRA's m / ||W|| is exactly 1
    only if its magnitude was taken from the weights as stored (bf16), in float32, outside autocast."""
    settings = {"rank": 4, "alpha": 8, "target_modules": ["query"], "base_dtype": "bfloat16"}
    dora, lora = variants.apply(make_bert(), "dora", **settings), variants.apply(make_bert(), "lora", **settings)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        torch.testing.assert_close(dora(token_ids).logits, lora(token_ids).logits, rtol=0, atol=1e-6)
        for layer in variants.adapter_layers(dora).values():
            assert layer.magnitude.dtype == torch.float32
            torch.testing.assert_close(layer.magnitude, layer.weight_norm(), rtol=0, atol=0)
