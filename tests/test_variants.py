"""The identities the adapter core promises, checked on tiny random models (no download, no peft).

The generic identities run for every variant the registry finds (a new variant gets them without an edit
here); the tests of one variant's own behaviour follow them."""
import json
import math

import pytest
import torch
from conftest import NUM_LABELS, make_bert, make_gpt2, make_llama

import variants
from variants.base import dense_weight

ADAPTERS = [n for n in variants.available() if issubclass(variants.lookup(n), variants.Adapter)]
BASELINES = [n for n in variants.available() if variants.lookup(n).is_baseline]
#: adapters whose frozen base computes what the original layers did (not QLoRA's 4-bit base)
EXACT_BASE = [n for n in ADAPTERS if variants.lookup(n).exact_base]
#: the LoRA family: init options, combine
LOW_RANK = [n for n in EXACT_BASE if issubclass(variants.lookup(n), variants.LoRA)]
COMBINABLE = [n for n in EXACT_BASE if variants.lookup(n).combinable]
QV = ["query", "value"]


def inits(name):
    """The variant's ``init`` choices that start from a zero update (every variant has the default)."""
    choices = getattr(variants.lookup(name), "inits", (None,))
    return [c for c in choices if c not in getattr(variants.lookup(name), "offset_inits", ())]


def logits(model, ids):
    model.eval()
    with torch.no_grad():
        return model(ids).logits


@torch.no_grad()
def perturb(model, seed=0, scale=0.2):
    """Move every adapter tensor (and the head) away from its start, as training would: B and
    VeRA's b become non-zero, so the adapter really changes the output."""
    generator = torch.Generator().manual_seed(seed)
    for layer in variants.adapter_layers(model).values():
        for name, parameter in layer.named_parameters(recurse=False):
            if name != "alpha":
                parameter.add_(scale * torch.randn(parameter.shape, generator=generator))
    for name, parameter in model.named_parameters():
        if name.startswith(("classifier.", "score.")):
            parameter.add_(scale * torch.randn(parameter.shape, generator=generator))


def adapted(name, seed=0, targets="all-linear", rank=4, alpha=8.0, make=make_bert, **options):
    """A tiny model with a trained-looking adapter."""
    model = variants.apply(make(), name, rank=rank, alpha=alpha, target_modules=targets, **options)
    perturb(model, seed)
    return model


# -- the adapted model starts as the base model ----------------------------------------------------

@pytest.mark.parametrize("name, init", [(n, i) for n in EXACT_BASE for i in inits(n)])
def test_adapted_model_starts_equal_to_base(name, init, token_ids):
    options = {} if init is None else {"init": init}
    model = make_bert()
    expected = logits(model, token_ids)
    variants.apply(model, name, rank=4, alpha=8, target_modules="all-linear", **options)
    assert torch.equal(logits(model, token_ids), expected)


@pytest.mark.parametrize("name", ADAPTERS)
def test_adapted_model_starts_equal_to_its_frozen_base(name, token_ids):
    """Also for a variant that stores the base differently (QLoRA): at the start only the base speaks."""
    model = variants.apply(make_bert(), name, rank=4, alpha=8, target_modules="all-linear")
    start = logits(model, token_ids)
    variants.remove(model)  # the adapters go; a re-stored base (NF4) stays
    assert torch.equal(logits(model, token_ids), start)


@pytest.mark.parametrize("name", ADAPTERS)
def test_forward_equals_the_reference_equation(name, token_ids):
    """Fast paths (DoRA's fused norms, VeRA's merged backward, LoRA's fused GEMM) give the output and the
    gradients of the variant's plainly written ``reference_forward``."""
    model = adapted(name, targets="all-linear")
    for layer in variants.adapter_layers(model).values():
        for tokens in (1, 40):  # few and many tokens: VeRA picks another order for each
            x = torch.randn(2, tokens, layer.in_features)
            layer.train()
            fast = layer(x)
            grads_fast = torch.autograd.grad(fast.square().sum(), [p for p in layer.parameters() if p.requires_grad])
            reference = layer.reference_forward(x)
            grads_reference = torch.autograd.grad(reference.square().sum(),
                                                  [p for p in layer.parameters() if p.requires_grad])
            torch.testing.assert_close(fast, reference, rtol=1e-5, atol=1e-5)
            for a, b in zip(grads_fast, grads_reference):
                torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


OFFSET_INITS = [(n, init) for n in LOW_RANK for init in variants.lookup(n).offset_inits]


@pytest.mark.parametrize("name, init", OFFSET_INITS)
def test_offset_init_keeps_the_start_equal_to_the_base(name, init, token_ids):
    """init='random' and 'pissa': the frozen weight holds W - s B0 A0, so the model starts as the base."""
    model = make_bert()
    expected = logits(model, token_ids)
    original = model.bert.encoder.layer[0].attention.self.query.weight.detach().clone()
    variants.apply(model, name, rank=4, alpha=8, target_modules=QV, init=init)
    layer = model.bert.encoder.layer[0].attention.self.query
    assert layer.lora_B.abs().sum() > 0  # both factors non-zero: the update itself is not zero
    offset = layer.init_scale * layer.lora_B_init @ layer.lora_A_init
    torch.testing.assert_close(layer.base_layer.weight, original - offset, rtol=0, atol=1e-6)
    torch.testing.assert_close(logits(model, token_ids), expected, rtol=0, atol=1e-5)
    variants.remove(model)  # the offset is taken back out
    torch.testing.assert_close(model.bert.encoder.layer[0].attention.self.query.weight, original, rtol=0, atol=1e-6)


def test_pissa_factors_are_the_top_singular_part_of_the_weight():
    model = variants.apply(make_bert(), "lora", rank=4, alpha=8, target_modules=QV, init="pissa")
    layer = model.bert.encoder.layer[0].attention.self.query
    weight = make_bert().bert.encoder.layer[0].attention.self.query.weight
    u, singular, vh = torch.linalg.svd(weight, full_matrices=False)
    top = u[:, :4] @ torch.diag(singular[:4]) @ vh[:4]
    torch.testing.assert_close(layer.delta_weight(), top, rtol=0, atol=1e-5)
    torch.testing.assert_close(layer.base_layer.weight, weight - top, rtol=0, atol=1e-5)  # the residual


@pytest.mark.parametrize("name, init", OFFSET_INITS)
def test_offset_init_save_and_load_onto_a_fresh_base_reproduces_the_residual(name, init, tmp_path, token_ids):
    model = adapted(name, targets=QV, init=init)
    expected = logits(model, token_ids)
    residual = {n: layer.base_layer.weight.detach().clone() for n, layer in variants.adapter_layers(model).items()}
    variants.save(model, tmp_path)
    fresh = variants.load(make_bert(seed=0), tmp_path)
    for n, layer in variants.adapter_layers(fresh).items():
        torch.testing.assert_close(layer.base_layer.weight, residual[n], rtol=0, atol=1e-6)
    torch.testing.assert_close(logits(fresh, token_ids), expected, rtol=0, atol=1e-5)


# -- merge ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", EXACT_BASE)
def test_merge_gives_the_same_output_and_unmerge_restores_the_weights(name, token_ids):
    model = adapted(name)
    base_weights = {n: dense_weight(layer.base_layer).detach().clone()
                    for n, layer in variants.adapter_layers(model).items()}
    unmerged = logits(model, token_ids)
    assert not torch.allclose(unmerged, logits(make_bert(), token_ids), atol=1e-3)  # the adapter matters
    variants.merge(model)
    assert all(layer.merged for layer in variants.adapter_layers(model).values())
    torch.testing.assert_close(logits(model, token_ids), unmerged, rtol=0, atol=1e-5)
    variants.unmerge(model)
    for n, layer in variants.adapter_layers(model).items():
        torch.testing.assert_close(dense_weight(layer.base_layer), base_weights[n], rtol=0, atol=1e-6)
    torch.testing.assert_close(logits(model, token_ids), unmerged, rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", EXACT_BASE)
def test_merged_weight_change_is_delta_weight(name):
    model = adapted(name, targets=QV)
    layer = model.bert.encoder.layer[1].attention.self.value
    before = layer.base_layer.weight.detach().clone()
    delta = layer.delta_weight().detach()
    variants.merge(model)
    torch.testing.assert_close(layer.base_layer.weight - before, delta, rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", EXACT_BASE)
def test_remove_gives_back_the_base_model(name, token_ids):
    expected = logits(make_bert(), token_ids)
    model = variants.merge(adapted(name, targets=QV))
    shared = variants.lookup(name).shared_module
    assert shared is None or hasattr(model, shared)
    variants.remove(model)
    assert variants.adapter_layers(model) == {} and model.variant_config is None
    assert shared is None or not hasattr(model, shared)
    with torch.no_grad():  # the head was trained; put the base head back to compare the body
        model.classifier.load_state_dict(make_bert().classifier.state_dict())
    torch.testing.assert_close(logits(model, token_ids), expected, rtol=0, atol=1e-5)


# -- parameter counts --------------------------------------------------------------------------------

def _head_size(model):
    return sum(p.numel() for p in model.classifier.parameters())


@pytest.mark.parametrize("name", ADAPTERS)
@pytest.mark.parametrize("targets", [QV, "all-linear"])
def test_trainable_parameter_count_matches_the_formula(name, targets):
    rank = 4
    model = variants.apply(make_bert(), name, rank=rank, alpha=8, target_modules=targets)
    shapes = [(layer.in_features, layer.out_features) for layer in variants.adapter_layers(model).values()]
    cls = variants.lookup(name)
    assert len(shapes) == (4 if targets == QV else 13)  # all-linear: 6 per block x 2 + pooler, no head
    expected = sum(cls.trainable_per_layer(i, o, rank, cls.options) for i, o in shapes) + _head_size(model)
    assert variants.trainable_parameters(model) == expected


def test_trainable_alpha_adds_one_parameter_per_layer():
    model = variants.apply(make_bert(), "lora", rank=4, alpha=8, target_modules=QV, trainable_alpha=True)
    assert variants.trainable_parameters(model) == 4 * (4 * 64 + 1) + _head_size(model)


@pytest.mark.parametrize("name", BASELINES)
def test_baselines_decide_what_is_trainable(name):
    model = variants.apply(make_bert(), name, rank=None, alpha=None, target_modules=None, dropout=None)
    total = sum(p.numel() for p in model.parameters())
    expected = total if variants.lookup(name).saves_all_trainable else _head_size(model)
    assert variants.trainable_parameters(model) == expected
    assert variants.adapter_layers(model) == {}


# -- variant specifics ---------------------------------------------------------------------------------

def test_vera_projection_is_one_shared_storage_not_saved_per_layer(tmp_path):
    model = adapted("vera")
    layers = list(variants.adapter_layers(model).values())
    assert len({layer.sliced()[0].data_ptr() for layer in layers}) == 1
    assert len({layer.sliced()[1].data_ptr() for layer in layers}) == 1
    assert all(layer.projection is model.vera_projection for layer in layers)
    assert {n for n, _ in model.named_buffers() if n.endswith((".A", ".B"))} == {"vera_projection.A",
                                                                                "vera_projection.B"}
    variants.save(model, tmp_path)
    saved = variants.saving.read_saved(tmp_path)[1]
    assert all(k.endswith((".lambda_b", ".lambda_d")) or k.startswith("classifier.") for k in saved)
    # the shared pair is made from the seed: a fresh model with the same seed rebuilds it exactly
    again = variants.apply(make_bert(), "vera", rank=4, target_modules="all-linear")
    assert torch.equal(again.vera_projection.A, model.vera_projection.A)
    other = variants.apply(make_bert(), "vera", rank=4, target_modules="all-linear", projection_seed=1)
    assert not torch.equal(other.vera_projection.A, model.vera_projection.A)


def test_vera_projection_sizes_are_the_largest_layer_dimensions():
    model = variants.apply(make_bert(), "vera", rank=4, target_modules="all-linear")
    assert model.vera_projection.A.shape == (4, 64) and model.vera_projection.B.shape == (64, 4)


def test_vera_dense_path_equals_the_bottleneck_path():
    model = adapted("vera", rank=16, targets=["intermediate.dense"])
    layer = model.bert.encoder.layer[0].intermediate.dense
    x = torch.randn(4, 64, 32)  # many tokens, rank 16 of width 32..64: the dense order is cheaper
    assert layer.dense_is_cheaper(x) and not layer.dense_is_cheaper(x[:1, :1])
    with torch.no_grad():
        torch.testing.assert_close(layer(x), layer.base_layer(x) + layer.update(x), rtol=0, atol=1e-5)


def test_dora_magnitude_starts_at_the_weight_row_norms():
    model = variants.apply(make_bert(), "dora", rank=4, alpha=8, target_modules="all-linear")
    for layer in variants.adapter_layers(model).values():
        expected = torch.linalg.norm(dense_weight(layer.base_layer), dim=1)
        torch.testing.assert_close(layer.magnitude.detach(), expected, rtol=1e-6, atol=0)


def test_dora_fast_row_norms_equal_the_dense_norms():
    model = adapted("dora", targets="all-linear")
    for layer in variants.adapter_layers(model).values():
        dense = dense_weight(layer.base_layer) + layer.scale_value() * layer.lora_B @ layer.lora_A
        torch.testing.assert_close(layer.weight_norm(), torch.linalg.norm(dense, dim=1).detach(),
                                   rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name, expected", [("lora", 8 / 4), ("rslora", 8 / math.sqrt(4))])
def test_scaling(name, expected):
    model = adapted(name, targets=QV)
    layer = model.bert.encoder.layer[0].attention.self.query
    assert layer.scale_value() == pytest.approx(expected)
    torch.testing.assert_close(layer.delta_weight(), expected * layer.lora_B @ layer.lora_A)


# -- training ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ADAPTERS)
def test_gradients_reach_only_adapters_and_head(name, token_ids):
    model = adapted(name)
    model.train()
    model(token_ids, labels=torch.tensor([0, 2])).loss.backward()
    adapter_names = {f"{layer_name}.{p}" for layer_name, layer in variants.adapter_layers(model).items()
                     for p, _ in layer.named_parameters(recurse=False)}
    for parameter_name, parameter in model.named_parameters():
        trainable = parameter_name in adapter_names or parameter_name.startswith("classifier.")
        assert parameter.requires_grad == trainable, parameter_name
        if trainable:
            assert parameter.grad is not None and parameter.grad.abs().sum() > 0, parameter_name
        else:
            assert parameter.grad is None, parameter_name


def test_trainable_alpha_learns_and_survives_save_and_load(tmp_path, token_ids):
    model = adapted("rslora", targets=QV, trainable_alpha=True, init="random")
    layer = model.bert.encoder.layer[0].attention.self.query
    assert isinstance(layer.alpha, torch.nn.Parameter)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model.train()
    model(token_ids, labels=torch.tensor([0, 2])).loss.backward()
    assert layer.alpha.grad is not None and layer.alpha.grad != 0
    optimizer.step()
    assert layer.alpha.item() != 8.0
    expected = logits(model, token_ids)
    variants.save(model, tmp_path)
    fresh = variants.load(make_bert(), tmp_path)
    torch.testing.assert_close(logits(fresh, token_ids), expected, rtol=0, atol=1e-5)
    # the starting offset keeps the scale it was made with, so removing gives back the base weight
    variants.remove(model)
    torch.testing.assert_close(model.bert.encoder.layer[0].attention.self.query.weight,
                               make_bert().bert.encoder.layer[0].attention.self.query.weight, rtol=0, atol=1e-6)


# -- which layers are adapted -------------------------------------------------------------------------

def test_target_modules_leaf_names_regex_and_all_linear():
    def adapted_names(targets):
        return sorted(variants.adapter_layers(variants.apply(make_bert(), "lora", rank=2, target_modules=targets)))

    assert adapted_names(QV) == [f"bert.encoder.layer.{i}.attention.self.{leaf}" for i in (0, 1) for leaf in QV]
    assert adapted_names(["attention.output.dense"]) == [f"bert.encoder.layer.{i}.attention.output.dense"
                                                         for i in (0, 1)]
    assert adapted_names(r".*layer\.1\.attention\.self\.(query|key)") == [
        "bert.encoder.layer.1.attention.self.key", "bert.encoder.layer.1.attention.self.query"]
    everything = adapted_names("all-linear")
    assert len(everything) == 13 and "bert.pooler.dense" in everything
    assert not any(n.startswith("classifier") for n in everything)


@pytest.mark.parametrize("name", EXACT_BASE)
def test_gpt2_conv1d_layers(name, token_ids):
    model = make_gpt2()
    expected = logits(model, token_ids)
    variants.apply(model, name, rank=4, alpha=8, target_modules=["c_attn", "c_fc", "c_proj"])
    layers = variants.adapter_layers(model)
    assert len(layers) == 8 and "score" not in layers  # c_proj: attention and MLP
    attention = model.transformer.h[0].attn.c_attn
    assert (attention.in_features, attention.out_features) == (32, 96)
    assert torch.equal(logits(model, token_ids), expected)
    perturb(model)
    unmerged = logits(model, token_ids)
    assert not torch.allclose(unmerged, expected, atol=1e-3)
    variants.merge(model)
    torch.testing.assert_close(logits(model, token_ids), unmerged, rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", EXACT_BASE)
@pytest.mark.parametrize("causal_lm", [False, True])
def test_tiny_llama(name, causal_lm, token_ids):
    model = make_llama(causal_lm=causal_lm)
    expected = logits(model, token_ids)
    variants.apply(model, name, rank=4, alpha=8, target_modules="all-linear")
    layers = variants.adapter_layers(model)
    assert len(layers) == 2 * 7 and not any("lm_head" in n or "score" in n for n in layers)
    assert torch.equal(logits(model, token_ids), expected)
    perturb(model)
    unmerged = logits(model, token_ids)
    variants.merge(model)
    torch.testing.assert_close(logits(model, token_ids), unmerged, rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", EXACT_BASE)
def test_half_precision_base_model(name, token_ids):
    model = make_bert().to(torch.bfloat16)
    expected = logits(model, token_ids)
    variants.apply(model, name, rank=4, alpha=8, target_modules="all-linear")
    assert torch.equal(logits(model, token_ids), expected)
    perturb(model)
    assert logits(model, token_ids).dtype == torch.bfloat16


@pytest.mark.parametrize("name", ["lora", "dora"])
def test_under_autocast_a_bf16_input_skips_the_float32_round_trip_bit_for_bit(name):
    from torch.utils._python_dispatch import TorchDispatchMode

    class InputCasts(TorchDispatchMode):  # counts the casts of tensors as large as the input
        def __init__(self, size):
            super().__init__()
            self.size, self.count = size, 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.count += func is torch.ops.aten._to_copy.default and args[0].numel() == self.size
            return func(*args, **(kwargs or {}))

    model = variants.apply(make_bert(), name, rank=4, alpha=8, target_modules=["dense"], base_dtype="bfloat16")
    perturb(model)
    layer = variants.adapter_layers(model)["bert.encoder.layer.0.intermediate.dense"]  # in != out features
    x = torch.randn(3, 5, layer.in_features, generator=torch.Generator().manual_seed(0)).bfloat16()
    results = []
    for given in ("bf16", "cast to float32 first"):  # the second: the input the update used to cast to
        layer.zero_grad()
        leaf = x.clone().requires_grad_()
        casts = InputCasts(x.numel())
        with casts, torch.autocast("cpu", dtype=torch.bfloat16):
            out = layer(leaf if given == "bf16" else leaf.float())
        out.float().square().sum().backward()
        results.append((casts.count, out, leaf.grad, [p.grad for p in layer.parameters() if p.requires_grad]))
    (casts, out, grad, grads), (_, out_cast, grad_cast, grads_cast) = results
    assert casts == 0  # neither the update nor autocast casts the bf16 input
    assert torch.equal(out, out_cast) and torch.equal(grad, grad_cast)
    assert all(torch.equal(a, b) for a, b in zip(grads, grads_cast))


# -- save and load ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ADAPTERS + BASELINES)
def test_save_and_load_round_trip(name, tmp_path, token_ids):
    model = variants.apply(make_bert(), name, rank=4, alpha=8, target_modules=QV)
    perturb(model)
    if variants.lookup(name).saves_all_trainable:
        with torch.no_grad():
            model.bert.encoder.layer[0].attention.self.query.weight.mul_(1.5)
    expected = logits(model, token_ids)
    variants.save(model, tmp_path)
    fresh = variants.load(make_bert(), tmp_path)
    assert fresh.variant_config["variant"] == name
    assert torch.equal(logits(fresh, token_ids), expected)
    assert variants.trainable_parameters(fresh) == variants.trainable_parameters(model)


@pytest.mark.parametrize("name", ADAPTERS)
def test_saved_file_holds_only_adapter_and_head(name, tmp_path):
    model = adapted(name, targets=QV)
    variants.save(model, tmp_path)
    saved = variants.saving.read_saved(tmp_path)[1]
    layer_names = set(variants.adapter_layers(model))
    for key in saved:
        assert key.rpartition(".")[0] in layer_names or key.startswith("classifier."), key
    assert sum(t.numel() for t in saved.values()) == variants.trainable_parameters(model)
    model_bytes = sum(p.numel() * p.element_size() for p in make_bert().parameters())
    assert (tmp_path / "adapter.safetensors").stat().st_size < model_bytes / 10
    assert json.loads((tmp_path / "adapter.json").read_text())["variant"] == name


@pytest.mark.parametrize("name", EXACT_BASE)
def test_switching_adapters_on_one_base_model(name, tmp_path, token_ids):
    first = adapted(name, seed=1, targets=QV)
    other = EXACT_BASE[(EXACT_BASE.index(name) + 1) % len(EXACT_BASE)]
    second = adapted(other, seed=2, targets="all-linear")
    variants.save(first, tmp_path / "a")
    variants.save(second, tmp_path / "b")
    expected_a, expected_b = logits(first, token_ids), logits(second, token_ids)
    model = make_bert()
    for folder, expected in [("a", expected_a), ("b", expected_b), ("a", expected_a)]:
        variants.load(model, tmp_path / folder)
        torch.testing.assert_close(logits(model, token_ids), expected, rtol=0, atol=1e-6)


def test_load_after_remove(tmp_path, token_ids):
    model = adapted("lora", targets=QV)
    expected = logits(model, token_ids)
    variants.save(model, tmp_path)
    variants.remove(model)
    variants.load(model, tmp_path)
    torch.testing.assert_close(logits(model, token_ids), expected, rtol=0, atol=1e-6)


# -- combining saved adapters ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", COMBINABLE)
def test_combine_one_adapter_with_weight_one_gives_it_back(name, tmp_path, token_ids):
    model = adapted(name, targets=QV)
    expected = logits(model, token_ids)
    variants.save(model, tmp_path)
    combined = variants.combine(make_bert(), [tmp_path], [1.0])
    torch.testing.assert_close(logits(combined, token_ids), expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", COMBINABLE)
def test_combine_two_adapters_gives_the_weighted_sum_of_updates(name, tmp_path):
    first = adapted(name, seed=1, rank=4, alpha=8, targets=QV)
    second = adapted(name, seed=2, rank=2, alpha=3, targets=QV, trainable_alpha=True)
    variants.save(first, tmp_path / "a")
    variants.save(second, tmp_path / "b")
    combined = variants.combine(make_bert(), [tmp_path / "a", tmp_path / "b"], [0.5, 0.5])
    assert combined.variant_config["rank"] == 6
    layers = variants.adapter_layers(combined)
    deltas_a, deltas_b = variants.adapter_layers(first), variants.adapter_layers(second)
    for layer_name, layer in layers.items():
        low_rank = variants.LoRA.delta_weight  # DoRA: its low-rank part (the magnitudes add too)
        expected = 0.5 * low_rank(deltas_a[layer_name]) + 0.5 * low_rank(deltas_b[layer_name])
        torch.testing.assert_close(low_rank(layer), expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(combined.classifier.weight, 0.5 * first.classifier.weight + 0.5 * second.classifier.weight)


def test_combine_refuses_vera_and_mixed_variants(tmp_path):
    variants.save(adapted("vera", targets=QV), tmp_path / "v")
    variants.save(adapted("lora", targets=QV), tmp_path / "l")
    with pytest.raises(ValueError, match="'vera' is not combinable exactly; combinable variants: dora, lora"):
        variants.combine(make_bert(), [tmp_path / "v"], [1.0])
    with pytest.raises(ValueError, match="one variant"):
        variants.combine(make_bert(), [tmp_path / "v", tmp_path / "l"], [0.5, 0.5])
    with pytest.raises(ValueError, match="one weight per adapter"):
        variants.combine(make_bert(), [tmp_path / "l"], [0.5, 0.5])


# -- clear errors -------------------------------------------------------------------------------------------

def test_unknown_variant_lists_the_available_ones():
    with pytest.raises(ValueError, match="unknown variant 'lorra'; available: .*dora.*lora.*vera"):
        variants.apply(make_bert(), "lorra", rank=4)


@pytest.mark.parametrize("settings, message", [
    ({"rank": 0}, "rank must be an integer >= 1, got 0"),
    ({"rank": 2.5}, "rank must be an integer >= 1, got 2.5"),
    ({"rank": 4, "alpha": 0}, "alpha must be a number > 0, got 0"),
    ({"rank": 4, "alpha": -1.0}, "alpha must be a number > 0"),
    ({"rank": 4, "dropout": 1.0}, r"dropout must be in \[0, 1\), got 1.0"),
    ({"rank": 4, "dropout": -0.1}, r"dropout must be in \[0, 1\)"),
    ({"rank": 4, "scale": 2}, "unknown option.* scale for variant 'lora'; valid options: init .*trainable_alpha"),
    ({"rank": 4, "init": "xavier"}, "unknown init 'xavier'; choose one of kaiming, gaussian, random"),
])
def test_bad_settings_are_refused_before_the_model_changes(settings, message, token_ids):
    model = make_bert()
    with pytest.raises(ValueError, match=message):
        variants.apply(model, "lora", target_modules=QV, **settings)
    assert variants.adapter_layers(model) == {} and getattr(model, "variant_config", None) is None
    assert all(p.requires_grad for p in model.parameters())


def test_baseline_with_an_unknown_option_is_refused():
    with pytest.raises(ValueError, match=f"unknown option.* rank_bias for variant '{BASELINES[0]}'; valid options: none"):
        variants.apply(make_bert(), BASELINES[0], rank_bias=1)


def test_target_pattern_matching_nothing_lists_adaptable_layers():
    with pytest.raises(ValueError, match="matches no adaptable layer; adaptable layers: .*attention.self.query"):
        variants.apply(make_bert(), "lora", rank=4, target_modules=["q_proj"])
    with pytest.raises(ValueError, match="matches no adaptable layer"):
        variants.apply(make_bert(), "lora", rank=4, target_modules="classifier")  # the head is not a target


def test_applying_twice_is_refused():
    model = variants.apply(make_bert(), "lora", rank=4, target_modules=QV)
    with pytest.raises(ValueError, match="already adapted with 'lora'"):
        variants.apply(model, "dora", rank=4, target_modules=QV)


def test_rank_above_a_layer_dimension_warns(token_ids):
    model = make_bert()
    with pytest.warns(UserWarning, match="rank 40 is above the smaller dimension"):
        variants.apply(model, "lora", rank=40, target_modules=QV)
    assert logits(model, token_ids).shape == (2, NUM_LABELS)


# -- bad adapter files -----------------------------------------------------------------------------------

@pytest.fixture
def saved_lora(tmp_path):
    folder = tmp_path / "adapter"
    variants.save(adapted("lora", targets=QV), folder)
    return folder


def test_truncated_adapter_file_is_a_clear_error(saved_lora):
    weights = saved_lora / "adapter.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        variants.load(make_bert(), saved_lora)


def test_corrupt_config_and_missing_files_are_clear_errors(saved_lora, tmp_path):
    with pytest.raises(FileNotFoundError, match="not a folder written by variants.save"):
        variants.load(make_bert(), tmp_path / "nowhere")
    (saved_lora / "adapter.json").write_text("{not json")
    with pytest.raises(ValueError, match="adapter.json is corrupt"):
        variants.load(make_bert(), saved_lora)


def test_adapter_for_another_base_model_is_refused(saved_lora):
    with pytest.raises(ValueError, match="made for another base model"):
        variants.load(make_bert(seed=1), saved_lora)
    with pytest.raises(ValueError, match="made for a BertForSequenceClassification, not a LlamaForSequenceClassification"):
        variants.load(make_llama(), saved_lora)


def test_adapter_with_other_shapes_is_refused_and_the_model_left_clean(saved_lora, token_ids):
    from safetensors.torch import load_file, save_file
    weights = saved_lora / "adapter.safetensors"
    state = load_file(weights)
    key = "bert.encoder.layer.0.attention.self.query.lora_A"
    state[key] = torch.zeros(5, 32)
    save_file(state, weights)
    model = make_bert()
    expected = logits(model, token_ids)
    with pytest.raises(ValueError, match=r"lora_A has shape \(5, 32\), this model needs \(4, 32\)"):
        variants.load(model, saved_lora)
    assert variants.adapter_layers(model) == {}
    assert torch.equal(logits(model, token_ids), expected)


@pytest.mark.parametrize("options, message", [
    ({"d_initial": 0}, "d_initial must be a finite non-zero number"),
    ({"d_initial": float("nan")}, "d_initial must be a finite non-zero number"),
    ({"projection_seed": "abc"}, "projection_seed must be an integer"),
])
def test_vera_options_that_make_no_sense_are_refused_before_the_model_changes(tiny_bert, options, message):
    before = {k: v.clone() for k, v in tiny_bert.state_dict().items()}
    with pytest.raises(ValueError, match=message):
        variants.apply(tiny_bert, "vera", rank=4, alpha=8, target_modules=["query"], **options)
    assert getattr(tiny_bert, "variant_config", None) is None
    assert all(torch.equal(before[k], v) for k, v in tiny_bert.state_dict().items())
