"""Our LoRA, rsLoRA, DoRA and VeRA against PEFT's, with the same weights, and PEFT's folder format both
ways (variants.export_peft / variants.import_peft)."""
import pytest
import torch
from conftest import make_bert, make_gpt2, make_llama
from safetensors.torch import load_file, save_file

import variants

peft = pytest.importorskip("peft")
from peft import LoraConfig, PeftModel, VeraConfig, get_peft_model  # noqa: E402
from peft.tuners.vera.model import _kaiming_init  # noqa: E402

ADAPTERS = ["lora", "rslora", "dora", "vera"]
#: name -> (builder, PEFT task type, target leaf names, head module name or None)
MODELS = {
    "bert": (make_bert, "SEQ_CLS", ["query", "value", "intermediate.dense"], "classifier"),
    "llama": (make_llama, "SEQ_CLS", ["q_proj", "k_proj", "down_proj"], "score"),
    "llama-lm": (lambda: make_llama(causal_lm=True), "CAUSAL_LM", ["v_proj", "up_proj"], None),
}
#: our attribute -> how to reach PEFT's tensor of the same meaning on its layer
PEFT_TENSORS = {"lora_A": lambda m: m.lora_A["default"].weight, "lora_B": lambda m: m.lora_B["default"].weight,
                "magnitude": lambda m: m.lora_magnitude_vector["default"].weight,
                "lambda_b": lambda m: m.vera_lambda_b["default"], "lambda_d": lambda m: m.vera_lambda_d["default"]}


def logits(model, ids):
    model.eval()
    with torch.no_grad():
        return model(input_ids=ids).logits


def peft_config(name, task_type, targets, rank=4, alpha=8, seed=0):
    if name == "vera":
        return VeraConfig(task_type=task_type, r=rank, target_modules=targets, vera_dropout=0.0,
                          projection_prng_key=seed, save_projection=True)
    return LoraConfig(task_type=task_type, r=rank, lora_alpha=alpha, target_modules=targets, lora_dropout=0.0,
                      use_rslora=name == "rslora", use_dora=name == "dora")


@torch.no_grad()
def perturb(model, seed=0):
    """Move every trainable tensor (adapter, head) away from its start: B and lambda_b non-zero."""
    generator = torch.Generator().manual_seed(seed)
    for parameter in model.parameters():
        if parameter.requires_grad:
            parameter.add_(0.2 * torch.randn(parameter.shape, generator=generator))


def trained_peft_model(name, model_name, seed=0):
    make, task_type, targets, _ = MODELS[model_name]
    model = get_peft_model(make(), peft_config(name, task_type, targets))
    perturb(model, seed)
    return model


def ours_like(name, model_name):
    make, _, targets, _ = MODELS[model_name]
    return variants.apply(make(), name, rank=4, alpha=8, target_modules=targets)


@pytest.mark.parametrize("model_name", list(MODELS))
@pytest.mark.parametrize("name", ADAPTERS)
def test_same_weights_give_the_same_logits_as_peft(name, model_name, token_ids):
    theirs = trained_peft_model(name, model_name)
    ours = ours_like(name, model_name)
    inner = theirs.base_model.model
    with torch.no_grad():
        for layer_name, layer in variants.adapter_layers(ours).items():
            for attr, _ in layer.named_parameters(recurse=False):
                getattr(layer, attr).copy_(PEFT_TENSORS[attr](inner.get_submodule(layer_name)))
        head = MODELS[model_name][3]
        if head:
            ours.get_submodule(head).load_state_dict(inner.get_submodule(head).modules_to_save["default"].state_dict())
    expected = logits(theirs, token_ids)
    assert not torch.allclose(expected, logits(MODELS[model_name][0](), token_ids), atol=1e-3)  # not trivial
    torch.testing.assert_close(logits(ours, token_ids), expected, rtol=0, atol=1e-5)
    if name == "vera":
        assert torch.equal(ours.vera_projection.A, theirs.base_model.vera_A["default"])


@pytest.mark.parametrize("seed, rank, targets", [(0, 4, ["query"]), (7, 3, "all-linear"), (123, 16, ["intermediate.dense"])])
def test_vera_projection_is_made_exactly_as_peft_makes_it(seed, rank, targets):
    ours = variants.apply(make_bert(), "vera", rank=rank, target_modules=targets, projection_seed=seed)
    theirs = get_peft_model(make_bert(), VeraConfig(task_type="SEQ_CLS", r=rank, target_modules=targets,
                                                    projection_prng_key=seed))
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


@pytest.mark.parametrize("name", ["lora", "rslora", "dora"])
def test_export_of_random_init_and_trained_alpha(name, tmp_path, token_ids):
    """init='random' offsets our frozen weight and alpha may be trained: PEFT has neither, so the export
    writes an exactly equivalent rank-2r adapter with PEFT's fixed scaling."""
    ours = variants.apply(make_bert(), name, rank=4, alpha=8, target_modules=["query", "value"], init="random",
                          trainable_alpha=True)
    perturb(ours)
    with torch.no_grad():
        for layer in variants.adapter_layers(ours).values():
            layer.alpha.mul_(1.7)
    variants.export_peft(ours, tmp_path)
    loaded = PeftModel.from_pretrained(make_bert(), tmp_path)
    assert loaded.peft_config["default"].r == 8
    torch.testing.assert_close(logits(loaded, token_ids), logits(ours, token_ids), rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", ADAPTERS)
def test_gpt2_conv1d_export_and_import(name, tmp_path, token_ids):
    ours = variants.apply(make_gpt2(), name, rank=4, alpha=8, target_modules=["c_attn", "c_fc"])
    perturb(ours)
    variants.export_peft(ours, tmp_path)
    loaded = PeftModel.from_pretrained(make_gpt2(), tmp_path)
    torch.testing.assert_close(logits(loaded, token_ids), logits(ours, token_ids), rtol=0, atol=1e-5)
    back = variants.import_peft(make_gpt2(), tmp_path)
    torch.testing.assert_close(logits(back, token_ids), logits(ours, token_ids), rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", ["qlora", "head", "full"])
def test_export_of_an_unsupported_variant_is_refused(name, tmp_path):
    model = variants.apply(make_bert(), name, rank=4, target_modules=["query"])
    with pytest.raises(ValueError, match=f"cannot write a '{name}' adapter.*supported variants: lora, rslora, dora, vera"):
        variants.export_peft(model, tmp_path)
    with pytest.raises(ValueError, match="no adapter to export"):
        variants.export_peft(make_bert(), tmp_path)


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
    with pytest.raises(ValueError, match="PEFT type 'IA3' is not supported; supported: LORA"):
        variants.import_peft(make_bert(), ia3)
