"""NF4 storage: the codebook, bits per parameter, round-trip error, agreement with bitsandbytes, and the
NF4Linear layer."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from variants.nf4 import NF4_CODEBOOK, NF4Linear, dequantize_nf4, quantize_nf4


def gaussian(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * 0.02


def test_codebook_is_16_sorted_values_in_minus_one_to_one_with_zero():
    assert NF4_CODEBOOK.shape == (16,)
    assert torch.all(NF4_CODEBOOK[1:] > NF4_CODEBOOK[:-1])
    assert NF4_CODEBOOK[0] == -1 and NF4_CODEBOOK[-1] == 1
    assert (NF4_CODEBOOK == 0).sum() == 1


def test_codebook_matches_the_normal_quantile_construction_of_the_qlora_paper():
    normal = torch.distributions.Normal(torch.tensor(0.0, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64))
    offset = 0.9677083  # QLoRA: the mean of the quantile offsets for 32 and 31 positive/negative values
    positive = normal.icdf(torch.linspace(offset, 0.5, 9, dtype=torch.float64)[:-1])
    negative = -normal.icdf(torch.linspace(offset, 0.5, 8, dtype=torch.float64)[:-1])
    values = torch.cat([positive, negative, torch.zeros(1, dtype=torch.float64)]).sort().values
    torch.testing.assert_close(NF4_CODEBOOK, (values / values.abs().max()).float(), rtol=0, atol=1e-6)


def test_bits_per_parameter():
    weight = gaussian(1024, 1024)
    assert quantize_nf4(weight, 64, double_quant=True).bits_per_parameter == pytest.approx(4 + 8 / 64 + 32 / (64 * 256), abs=0.01)
    assert quantize_nf4(weight, 64, double_quant=False).bits_per_parameter == pytest.approx(4 + 32 / 64, abs=0.01)


def uniform_4bit_roundtrip(weight, block_size=64):
    """Absmax quantization to 16 evenly spaced values in [-1, 1], same blocks: the baseline NF4 beats."""
    blocks = weight.reshape(-1, block_size)
    absmax = blocks.abs().amax(1, keepdim=True)
    levels = torch.round((blocks / absmax + 1) * 7.5).clamp(0, 15)
    return (levels / 7.5 - 1) * absmax


@pytest.mark.parametrize("double_quant", [False, True])
def test_roundtrip_error_on_gaussian_weights_is_below_uniform_4bit(double_quant):
    weight = gaussian(256, 512)
    q = quantize_nf4(weight, 64, double_quant)
    restored = dequantize_nf4(q)
    assert restored.shape == weight.shape and restored.dtype == weight.dtype
    nf4_error = (restored - weight).pow(2).mean()
    uniform_error = (uniform_4bit_roundtrip(weight).reshape(weight.shape) - weight).pow(2).mean()
    assert nf4_error < uniform_error
    # each value is off by at most half the widest gap of the codebook, times its block's absmax
    absmax = weight.reshape(-1, 64).abs().amax(1, keepdim=True)
    half_gap = (NF4_CODEBOOK[1:] - NF4_CODEBOOK[:-1]).max() / 2
    error = (restored - weight).reshape(-1, 64).abs()
    assert torch.all(error <= absmax * (half_gap + (0.01 if double_quant else 1e-6)))


def test_odd_shapes_zero_blocks_and_low_precision_dtypes():
    weight = gaussian(33, 70)
    weight[0] = 0  # the first 70 values: at least one whole zero block
    q = quantize_nf4(weight, 64)
    restored = dequantize_nf4(q)
    assert restored.shape == (33, 70) and torch.all(restored[0] == 0)
    half = dequantize_nf4(quantize_nf4(weight.bfloat16(), 64))
    assert half.dtype == torch.bfloat16  # quantized from, and given back in, the weight's own dtype
    assert torch.equal(half, dequantize_nf4(quantize_nf4(weight.bfloat16().float(), 64)).bfloat16())


@pytest.mark.parametrize("block_size", [0, 63, -64, 64.0, True])
def test_bad_block_size_is_rejected(block_size):
    with pytest.raises(ValueError, match="block_size"):
        quantize_nf4(gaussian(8, 64), block_size)


def test_non_finite_weight_is_rejected():
    weight = gaussian(8, 64)
    weight[3, 5] = float("nan")
    with pytest.raises(ValueError, match="nan"):
        quantize_nf4(weight)


@pytest.mark.parametrize("shape", [(128, 256), (33, 70)])
def test_same_values_as_bitsandbytes_without_double_quant(shape):
    functional = pytest.importorskip("bitsandbytes.functional")
    weight = gaussian(*shape, seed=1)
    packed, state = functional.quantize_4bit(weight, blocksize=64, quant_type="nf4", compress_statistics=False)
    q = quantize_nf4(weight, 64, double_quant=False)
    assert torch.equal(q.codes[: packed.numel()], packed.flatten())
    assert torch.equal(q.absmax, state.absmax)
    assert torch.equal(dequantize_nf4(q), functional.dequantize_4bit(packed, state))


def test_close_to_bitsandbytes_with_double_quant():
    functional = pytest.importorskip("bitsandbytes.functional")
    weight = gaussian(512, 512, seed=2)
    packed, state = functional.quantize_4bit(weight, blocksize=64, quant_type="nf4", compress_statistics=True)
    q = quantize_nf4(weight, 64, double_quant=True)
    assert torch.equal(q.codes, packed.flatten())  # the 4-bit codes do not depend on how scales are stored
    exact_scales = weight.reshape(-1, 64).abs().amax(1)
    bnb_scales = functional.dequantize_blockwise(state.absmax, state.state2) + state.offset
    ours = ((q.block_scales() - exact_scales) / exact_scales).abs().max()
    theirs = ((bnb_scales - exact_scales) / exact_scales).abs().max()
    assert ours < 0.01 and theirs < 0.01  # both 8-bit schemes keep every scale within 1 %
    difference = (dequantize_nf4(q) - functional.dequantize_4bit(packed, state)).reshape(-1, 64).abs()
    assert torch.all(difference <= 0.02 * exact_scales.unsqueeze(1))


def test_nf4_linear_forward_and_backward_equal_linear_with_the_dequantized_weight():
    torch.manual_seed(0)
    layer = nn.Linear(64, 48)
    quantized = NF4Linear.from_linear(layer)
    assert (quantized.in_features, quantized.out_features) == (64, 48)
    assert [n for n, _ in quantized.named_parameters()] == ["bias"] and not quantized.bias.requires_grad
    quantized.bias.requires_grad_(True)  # to check the bias gradient too
    weight = quantized.dequantized_weight()
    x = torch.randn(3, 5, 64, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_(True)
    bias_ref = quantized.bias.detach().clone().requires_grad_(True)
    out, ref = quantized(x), F.linear(x_ref, weight, bias_ref)
    torch.testing.assert_close(out, ref)
    grad = torch.randn_like(out)
    out.backward(grad)
    ref.backward(grad)
    torch.testing.assert_close(x.grad, x_ref.grad)
    torch.testing.assert_close(quantized.bias.grad, bias_ref.grad)


def test_nf4_linear_keeps_no_dense_weight_for_backward():
    layer = NF4Linear.from_linear(nn.Linear(128, 96))
    sizes = []

    def pack(tensor):
        sizes.append(tensor.numel())
        return tensor

    x = torch.randn(2, 128, requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        layer(x).sum().backward()
        assert 128 * 96 not in sizes
        F.linear(x, torch.randn(96, 128, requires_grad=True)).sum()
        assert 128 * 96 in sizes  # the hook does see a dense weight saved by a plain linear
    assert not any(b.is_floating_point() and b.numel() >= 128 * 96 for b in layer.buffers())


def test_nf4_linear_from_gpt2_conv1d_uses_the_transposed_weight():
    transformers = pytest.importorskip("transformers")
    conv = transformers.pytorch_utils.Conv1D(48, 64)  # (out_features, in_features); weight is (64, 48)
    nn.init.normal_(conv.weight, std=0.02)
    nn.init.normal_(conv.bias, std=0.02)
    layer = NF4Linear.from_linear(conv, block_size=32, double_quant=False)
    assert (layer.in_features, layer.out_features) == (64, 48)
    expected = dequantize_nf4(quantize_nf4(conv.weight.T.contiguous(), 32, double_quant=False))
    assert torch.equal(layer.dequantized_weight(), expected)
    x = torch.randn(4, 64)
    torch.testing.assert_close(layer(x), F.linear(x, expected, conv.bias))
