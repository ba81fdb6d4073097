"""QLoRA on tiny random BERT / GPT-2 models: NF4 bases, LoRA on top, merge, save/load, validation."""
import pytest
import torch
from torch import nn
from transformers import BertConfig, BertForSequenceClassification, GPT2Config, GPT2ForSequenceClassification

import variants
from variants.nf4 import NF4Linear
from variants.targets import adaptable_layers, set_module

TARGETS = ["query", "value", "intermediate.dense"]


def tiny_bert(seed=0):
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, num_labels=3)
    return BertForSequenceClassification(config).eval()


def tokens(seed=1):
    return torch.randint(0, 100, (2, 7), generator=torch.Generator().manual_seed(seed))


def quantize_all(model):
    """The reference: every linear layer outside the head replaced by NF4, and no adapter."""
    for name, layer in adaptable_layers(model).items():
        set_module(model, name, NF4Linear.from_linear(layer))
    return model


def randomize_lora_b(model):
    torch.manual_seed(3)
    for layer in variants.adapter_layers(model).values():
        nn.init.normal_(layer.lora_B, std=0.1)


def test_qlora_is_registered():
    assert "qlora" in variants.available()


def test_every_linear_outside_the_head_becomes_nf4():
    model = variants.apply(tiny_bert(), "qlora", rank=4, alpha=8, target_modules=TARGETS)
    adapters = variants.adapter_layers(model)
    assert len(adapters) == 2 * len(TARGETS)
    assert all(isinstance(a.base_layer, NF4Linear) for a in adapters.values())
    plain = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    assert plain == ["classifier"]  # pooler, key, attention.output.dense, output.dense: all NF4 too
    targets_only = variants.apply(tiny_bert(), "qlora", rank=4, target_modules=TARGETS, quantize="targets")
    assert sum(isinstance(m, NF4Linear) for m in targets_only.modules()) == 2 * len(TARGETS)


def test_zero_init_output_equals_the_nf4_model_without_adapter():
    ids = tokens()
    with torch.no_grad():
        expected = quantize_all(tiny_bert())(ids).logits
        adapted = variants.apply(tiny_bert(), "qlora", rank=4, alpha=8, target_modules=TARGETS)
        torch.testing.assert_close(adapted(ids).logits, expected, rtol=0, atol=0)
        original = tiny_bert()(ids).logits
    assert not torch.equal(expected, original)  # quantization did change the model


def tiny_gpt2():
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=100, n_positions=16, n_embd=32, n_layer=1, n_head=4, num_labels=2)
    return GPT2ForSequenceClassification(config).eval()


def test_gpt2_conv1d_layers_are_quantized_from_their_transposed_weight():
    model = variants.apply(tiny_gpt2(), "qlora", rank=2, target_modules=["c_attn"])
    assert sum(isinstance(m, NF4Linear) for m in model.modules()) == 4  # c_attn, c_proj, c_fc, mlp.c_proj
    ids = tokens()[:1]
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, quantize_all(tiny_gpt2())(ids).logits, rtol=0, atol=0)


def test_trainable_parameters_are_the_lora_formula_plus_the_head():
    rank = 4
    model = tiny_bert()
    shapes = [(m.in_features, m.out_features) for n, m in model.named_modules()
              if any(n.endswith("." + t) for t in TARGETS)]
    head = sum(p.numel() for p in model.classifier.parameters())
    variants.apply(model, "qlora", rank=rank, target_modules=TARGETS)
    assert variants.trainable_parameters(model) == sum(rank * (i + o) for i, o in shapes) + head


def test_gradients_reach_only_lora_factors_and_the_head():
    model = variants.apply(tiny_bert(), "qlora", rank=4, target_modules=TARGETS).train()
    randomize_lora_b(model)
    model(tokens(), labels=torch.tensor([0, 2])).loss.backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert with_grad == trainable
    assert all(n.endswith((".lora_A", ".lora_B")) or n.startswith("classifier.") for n in with_grad)
    assert any(n.endswith(".lora_A") for n in with_grad) and "classifier.weight" in with_grad
    assert all(p.grad.abs().sum() > 0 for n, p in model.named_parameters() if n.endswith(".lora_A"))


def test_merge_then_unmerge_round_trip():
    model = variants.apply(tiny_bert(), "qlora", rank=4, alpha=8, target_modules=TARGETS)
    randomize_lora_b(model)
    stored = {n: b.clone() for n, b in model.named_buffers() if ".base_layer." in n}
    ids = tokens()
    with torch.no_grad():
        unmerged = model(ids).logits
        variants.merge(model)
        bases = [a.base_layer for a in variants.adapter_layers(model).values()]
        assert all(base.merged_weight is not None for base in bases)  # merged: one dense matmul per layer
        for base in bases:
            torch.testing.assert_close(base.merged_weight, base.dequantized_weight() + base.added_delta, rtol=0, atol=0)
        torch.testing.assert_close(model(ids).logits, unmerged, rtol=0, atol=1e-5)
        variants.unmerge(model)
        assert all(isinstance(a.base_layer, NF4Linear) and a.base_layer.merged_weight is None
                   for a in variants.adapter_layers(model).values())
        after = dict(model.named_buffers())
        assert stored.keys() <= after.keys() and all(torch.equal(after[n], b) for n, b in stored.items())
        torch.testing.assert_close(model(ids).logits, unmerged, rtol=0, atol=0)


def test_save_and_load_give_the_same_logits(tmp_path):
    model = variants.apply(tiny_bert(), "qlora", rank=4, alpha=8, target_modules=TARGETS, block_size=32)
    randomize_lora_b(model)
    nn.init.normal_(model.classifier.weight)
    variants.save(model, tmp_path)
    fresh = variants.load(tiny_bert(), tmp_path)
    assert fresh.variant_config["options"]["block_size"] == 32
    ids = tokens()
    with torch.no_grad():
        torch.testing.assert_close(fresh(ids).logits, model(ids).logits, rtol=0, atol=0)
        variants.load(model, tmp_path)  # a model adapted before: its adapter is removed, the NF4 base kept
        torch.testing.assert_close(model(ids).logits, fresh(ids).logits, rtol=0, atol=0)


def test_remove_gives_back_the_nf4_layers():
    model = variants.apply(tiny_bert(), "qlora", rank=4, target_modules=TARGETS)
    variants.merge(model)
    variants.remove(model)
    assert not variants.adapter_layers(model)
    assert isinstance(model.bert.encoder.layer[0].attention.self.query, NF4Linear)
    variants.apply(model, "qlora", rank=2, target_modules=["key"])  # the NF4 layers are reused as they are
    variants.remove(model)
    with pytest.raises(ValueError, match="block_size=64"):
        variants.apply(model, "qlora", rank=2, target_modules=["key"], block_size=32)


def test_linear_weight_storage_shrinks():
    model = tiny_bert()
    dense_bytes = sum(m.weight.numel() * 4 for m in adaptable_layers(model).values())
    variants.apply(model, "qlora", rank=4, target_modules=TARGETS)
    nf4_bytes = sum(b.numel() * b.element_size() for m in model.modules() if isinstance(m, NF4Linear)
                    for b in m.buffers())
    assert nf4_bytes < 0.15 * dense_bytes
    assert nf4_bytes > 4 / 32 * dense_bytes  # at least 4 bits a weight


@pytest.mark.parametrize("options, wrong", [
    ({"block_size": 63}, "63"), ({"block_size": 0}, "0"), ({"block_size": "64"}, "'64'"),
    ({"double_quant": "yes"}, "'yes'"), ({"quantize": "some"}, "'some'"), ({"init": "random"}, "random"),
    ({"init": "xavier"}, "xavier"),
])
def test_bad_options_are_rejected_with_a_clear_message(options, wrong):
    model = tiny_bert()
    with pytest.raises(ValueError, match=wrong):
        variants.apply(model, "qlora", rank=4, target_modules=TARGETS, **options)
    assert not any(isinstance(m, NF4Linear) for m in model.modules())  # rejected before any model work
