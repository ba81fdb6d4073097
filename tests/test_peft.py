"""Every variant PEFT has, against PEFT's own implementation with the same weights, and PEFT's folder
format both ways (variants.export_peft / variants.import_peft). The variants come from the registry (the
ones that declare PEFT settings), so a new variant with a PEFT counterpart is checked without an edit."""
import pytest
import torch
from conftest import make_bert, make_gpt2, make_llama
from safetensors.torch import load_file, save_file

import variants
from variants.peft_format import exportable_variants

peft = pytest.importorskip("peft")
from peft import PeftModel, get_peft_model, get_peft_model_state_dict  # noqa: E402
from peft.tuners.vera.model import _kaiming_init  # noqa: E402

#: variants whose PEFT counterpart runs on a plain base model
ADAPTERS = exportable_variants()
#: the LoRA family's inits that offset the frozen weight (exported as an equivalent rank-2r adapter)
OFFSET = [(n, init) for n in ADAPTERS for init in getattr(variants.lookup(n), "offset_inits", ())]
#: name -> (builder, PEFT task type, target leaf names, head module name or None)
MODELS = {
    "bert": (make_bert, "SEQ_CLS", ["query", "value", "intermediate.dense"], "classifier"),
    "llama": (make_llama, "SEQ_CLS", ["q_proj", "k_proj", "down_proj"], "score"),
    "llama-lm": (lambda: make_llama(causal_lm=True), "CAUSAL_LM", ["v_proj", "up_proj"], None),
}


def logits(model, ids):
    model.eval()
    with torch.no_grad():
        return model(input_ids=ids).logits


@torch.no_grad()
def perturb(model, seed=0):
    """Move every trainable tensor (adapter, head) away from its start: B and lambda_b non-zero."""
    generator = torch.Generator().manual_seed(seed)
    for parameter in model.parameters():
        if parameter.requires_grad:
            parameter.add_(0.2 * torch.randn(parameter.shape, generator=generator))


def peft_model(name, model_name, **options):
    make, task_type, targets, _ = MODELS[model_name]
    config = variants.peft_config(name, rank=4, alpha=8, target_modules=targets, task_type=task_type, **options)
    return get_peft_model(make(), config)


def trained_peft_model(name, model_name, seed=0):
    model = peft_model(name, model_name)
    perturb(model, seed)
    return model


def ours_like(name, model_name, **options):
    make, _, targets, _ = MODELS[model_name]
    return variants.apply(make(), name, rank=4, alpha=8, target_modules=targets, **options)


@torch.no_grad()
def copy_from_peft(ours, theirs, model_name):
    """Put PEFT's adapter tensors (found by the names the variant declares) and head into ours."""
    state = get_peft_model_state_dict(theirs)
    for layer_name, layer in variants.adapter_layers(ours).items():
        for ending, attr in type(layer).peft.tensors.items():
            getattr(layer, attr).copy_(state[f"base_model.model.{layer_name}{ending}"])
    head = MODELS[model_name][3]
    if head:
        inner = theirs.base_model.model
        ours.get_submodule(head).load_state_dict(inner.get_submodule(head).modules_to_save["default"].state_dict())


def test_the_registry_has_peft_variants():
    assert len(ADAPTERS) >= 2 and all(not variants.lookup(n).is_baseline for n in ADAPTERS)


@pytest.mark.parametrize("model_name", list(MODELS))
@pytest.mark.parametrize("name", ADAPTERS)
def test_same_weights_give_the_same_logits_as_peft(name, model_name, token_ids):
    theirs = trained_peft_model(name, model_name)
    ours = ours_like(name, model_name)
    copy_from_peft(ours, theirs, model_name)
    expected = logits(theirs, token_ids)
    assert not torch.allclose(expected, logits(MODELS[model_name][0](), token_ids), atol=1e-3)  # not trivial
    torch.testing.assert_close(logits(ours, token_ids), expected, rtol=0, atol=1e-5)
    shared = variants.lookup(name).peft.model_tensors(ours)  # e.g. VeRA's projection: made the same way
    theirs_state = get_peft_model_state_dict(theirs)
    for key, tensor in shared.items():
        assert torch.equal(tensor, theirs_state[key]), key


@pytest.mark.parametrize("name", ADAPTERS)
def test_merge_and_unmerge_agree_with_peft(name, token_ids):
    theirs = trained_peft_model(name, "llama")
    ours = ours_like(name, "llama")
    copy_from_peft(ours, theirs, "llama")
    variants.merge(ours)
    theirs.merge_adapter()
    torch.testing.assert_close(logits(ours, token_ids), logits(theirs, token_ids), rtol=0, atol=1e-5)
    variants.unmerge(ours)
    theirs.unmerge_adapter()
    torch.testing.assert_close(logits(ours, token_ids), logits(theirs, token_ids), rtol=0, atol=1e-5)


@pytest.mark.parametrize("seed, rank, targets", [(0, 4, ["query"]), (7, 3, "all-linear"), (123, 16, ["intermediate.dense"])])
def test_vera_projection_is_made_exactly_as_peft_makes_it(seed, rank, targets):
    ours = variants.apply(make_bert(), "vera", rank=rank, target_modules=targets, projection_seed=seed)
    theirs = get_peft_model(make_bert(), variants.peft_config("vera", rank=rank, alpha=None, target_modules=targets,
                                                              task_type="SEQ_CLS", projection_seed=seed))
    assert torch.equal(ours.vera_projection.A, theirs.base_model.vera_A["default"])
    assert torch.equal(ours.vera_projection.B, theirs.base_model.vera_B["default"])
    generator = torch.Generator().manual_seed(seed)  # and PEFT's own recipe, called directly
    assert torch.equal(ours.vera_projection.A, _kaiming_init(tuple(ours.vera_projection.A.shape), generator))
    assert torch.equal(ours.vera_projection.B, _kaiming_init(tuple(ours.vera_projection.B.shape), generator))


@pytest.mark.parametrize("model_name", list(MODELS))
@pytest.mark.parametrize("name", ADAPTERS)
def test_export_then_peft_from_pretrained_gives_the_same_logits(name, model_name, tmp_path, token_ids):
    ours = ours_like(name, model_name)
    perturb(ours)
    variants.export_peft(ours, tmp_path / "ours")
    loaded = PeftModel.from_pretrained(MODELS[model_name][0](), tmp_path / "ours")
    torch.testing.assert_close(logits(loaded, token_ids), logits(ours, token_ids), rtol=0, atol=1e-5)


@pytest.mark.parametrize("model_name", list(MODELS))
@pytest.mark.parametrize("name", ADAPTERS)
def test_import_of_a_peft_saved_folder_gives_the_same_logits(name, model_name, tmp_path, token_ids):
    theirs = trained_peft_model(name, model_name, seed=3)
    theirs.save_pretrained(tmp_path)
    ours = variants.import_peft(MODELS[model_name][0](), tmp_path)
    assert ours.variant_config["variant"] == name
    torch.testing.assert_close(logits(ours, token_ids), logits(theirs, token_ids), rtol=0, atol=1e-5)
    # exporting it again writes PEFT's file back: the same names, the same tensors
    variants.export_peft(ours, tmp_path / "again")
    written = load_file(tmp_path / "again" / "adapter_model.safetensors")
    original = load_file(tmp_path / "adapter_model.safetensors")
    assert written.keys() == original.keys()
    assert all(torch.equal(written[k], original[k]) for k in original)


@pytest.mark.parametrize("name, init", OFFSET)
def test_export_of_an_offset_init_and_trained_alpha(name, init, tmp_path, token_ids):
    """init='random'/'pissa' offset our frozen weight and alpha may be trained: PEFT's saved form has
    neither, so the export writes an exactly equivalent rank-2r adapter with PEFT's fixed scaling."""
    ours = variants.apply(make_bert(), name, rank=4, alpha=8, target_modules=["query", "value"], init=init,
                          trainable_alpha=True)
    perturb(ours)
    with torch.no_grad():
        for layer in variants.adapter_layers(ours).values():
            layer.alpha.mul_(1.7)
    variants.export_peft(ours, tmp_path)
    loaded = PeftModel.from_pretrained(make_bert(), tmp_path)
    assert loaded.peft_config["default"].r == 8
    torch.testing.assert_close(logits(loaded, token_ids), logits(ours, token_ids), rtol=0, atol=1e-5)


def train_steps(model, token_ids, steps=3):
    """A few SGD steps in eval mode (BERT's own dropout off, so that both models see the same function)."""
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.05)
    model.eval()
    for _ in range(steps):
        optimizer.zero_grad()
        model(input_ids=token_ids, labels=torch.tensor([0, 2])).loss.backward()
        optimizer.step()


@pytest.mark.parametrize("name", [n for n in ADAPTERS if "pissa" in getattr(variants.lookup(n), "inits", ())])
def test_pissa_equals_peft_pissa_before_and_after_training(name, token_ids):
    ours = ours_like(name, "bert", init="pissa")
    theirs = peft_model(name, "bert", init="pissa")
    assert theirs.peft_config["default"].init_lora_weights == "pissa"
    inner = theirs.base_model.model
    for layer_name, layer in variants.adapter_layers(ours).items():  # the same factors and residual
        peft_layer = inner.get_submodule(layer_name)
        torch.testing.assert_close(layer.lora_A, peft_layer.lora_A["default"].weight, rtol=0, atol=1e-5)
        torch.testing.assert_close(layer.base_layer.weight, peft_layer.base_layer.weight, rtol=0, atol=1e-6)
    torch.testing.assert_close(logits(ours, token_ids), logits(theirs, token_ids), rtol=0, atol=1e-5)
    torch.testing.assert_close(logits(ours, token_ids), logits(make_bert(), token_ids), rtol=0, atol=1e-5)
    train_steps(ours, token_ids)
    train_steps(theirs, token_ids)
    assert not torch.allclose(logits(ours, token_ids), logits(make_bert(), token_ids), atol=1e-3)  # it moved
    torch.testing.assert_close(logits(ours, token_ids), logits(theirs, token_ids), rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", ADAPTERS)
def test_gpt2_conv1d_export_and_import(name, tmp_path, token_ids):
    ours = variants.apply(make_gpt2(), name, rank=4, alpha=8, target_modules=["c_attn", "c_fc"])
    perturb(ours)
    variants.export_peft(ours, tmp_path)
    loaded = PeftModel.from_pretrained(make_gpt2(), tmp_path)
    torch.testing.assert_close(logits(loaded, token_ids), logits(ours, token_ids), rtol=0, atol=1e-5)
    back = variants.import_peft(make_gpt2(), tmp_path)
    torch.testing.assert_close(logits(back, token_ids), logits(ours, token_ids), rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", [n for n in variants.available() if n not in ADAPTERS])
def test_export_of_an_unsupported_variant_is_refused(name, tmp_path):
    model = variants.apply(make_bert(), name, rank=4, target_modules=["query"])
    with pytest.raises(ValueError, match=f"cannot write a '{name}' adapter.*supported variants: {', '.join(ADAPTERS)}"):
        variants.export_peft(model, tmp_path)
    with pytest.raises(ValueError, match="no adapter to export"):
        variants.export_peft(make_bert(), tmp_path)


def test_peft_config_without_a_peft_counterpart_names_the_ones_it_has():
    without = [n for n in variants.available() if variants.lookup(n).is_baseline]
    with pytest.raises(ValueError, match=f"PEFT has no equivalent of variant '{without[0]}'; variants PEFT has: .*"
                                         f"{ADAPTERS[0]}"):
        variants.peft_config(without[0], rank=4, alpha=8, target_modules=["query"])
    with pytest.raises(ValueError, match="unknown variant"):
        variants.peft_config("lorra", rank=4, alpha=8, target_modules=["query"])


def test_qlora_counterpart_is_lora_on_a_bitsandbytes_nf4_base():
    """Found by the declared base quantization, not by name: LoRA settings plus BitsAndBytesConfig keywords."""
    quantized = [n for n in variants.available() if variants.peft_base_quantization(n)]
    assert quantized
    for name in quantized:
        config = variants.peft_config(name, rank=4, alpha=8, target_modules=["query"])
        assert config.peft_type == "LORA" and config.r == 4
        assert variants.peft_base_quantization(name)["bnb_4bit_quant_type"] == "nf4"


def test_import_errors_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a PEFT adapter folder"):
        variants.import_peft(make_bert(), tmp_path / "nowhere")
    folder = tmp_path / "lora"
    trained_peft_model("lora", "bert").save_pretrained(folder)
    with pytest.raises(ValueError, match="another|does not fit|shape"):
        variants.import_peft(make_llama(), folder)  # other module names
    weights = folder / "adapter_model.safetensors"
    state = load_file(weights)
    state["base_model.model.bert.encoder.layer.0.attention.self.query.lora_A.weight"] = torch.zeros(5, 32)
    save_file(state, weights)
    model = make_bert()
    with pytest.raises(ValueError, match=r"has shape \(5, 32\), this model needs \(4, 32\)"):
        variants.import_peft(model, folder)
    assert variants.adapter_layers(model) == {}
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        variants.import_peft(make_bert(), folder)
    ia3 = tmp_path / "ia3"
    get_peft_model(make_bert(), peft.IA3Config(task_type="SEQ_CLS", target_modules=["query"],
                                               feedforward_modules=[])).save_pretrained(ia3)
    with pytest.raises(ValueError, match="PEFT type 'IA3' is not supported; supported: .*LORA"):
        variants.import_peft(make_bert(), ia3)
