"""4-bit NormalFloat (NF4) storage of frozen weights, as in QLoRA (Dettmers et al., 2023), in plain torch.

Quantizing a weight:
  * it is flattened (row-major, as an (out_features, in_features) matrix) and cut into blocks of
    ``block_size`` (64) values; the last block is padded with zeros;
  * each block is divided by its largest absolute value (its "absmax"), so it lies in [-1, 1];
  * each value is replaced by the index (0..15) of the nearest of the 16 NF4 values, and two indices
    are packed per byte, the first in the high nibble (the layout bitsandbytes uses).

Double quantization stores the absmax scales themselves in 8 bits (QLoRA, section 3): their mean is
subtracted, the centred scales are cut into blocks of 256, and each block is stored as signed linear
int8 codes round(127 * x / m) plus one float32 m = max |x| of the block. (bitsandbytes uses its 8-bit
"dynamic" map here instead; the centred scales are spread evenly enough that the linear grid is at
least as precise, see tests/test_nf4.py.)

Storage in bits per parameter: 4 + 32/64 = 4.5 without double quantization, and
4 + 8/64 + 32/(64*256) ~= 4.127 with it (plus one float32 mean per weight).

``NF4Linear`` is a frozen linear layer that holds only the packed weight (as buffers) and the bias; it
dequantizes on the fly, and its backward pass dequantizes again instead of keeping the dense weight.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .base import is_transposed

#: The NF4 values (QLoRA appendix E; bitsandbytes' table): quantiles of N(0, 1) scaled into [-1, 1],
#: 8 for the positive half and 7 for the negative half so that 0 is represented exactly.
NF4_CODEBOOK = torch.tensor([
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
    -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
    0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
    0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0])

#: how many absmax scales share one float32 scale under double quantization
SCALE_BLOCK_SIZE = 256

_byte_tables: dict[torch.device, torch.Tensor] = {}


def _byte_table(device: torch.device) -> torch.Tensor:
    """(256, 2): the two NF4 values that each packed byte stands for (high nibble first)."""
    if device not in _byte_tables:
        byte = torch.arange(256)
        _byte_tables[device] = torch.stack([NF4_CODEBOOK[byte >> 4], NF4_CODEBOOK[byte & 15]], 1).to(device)
    return _byte_tables[device]


@dataclass
class QuantizedWeight:
    """A weight in NF4. ``absmax`` is float32 (one per block), or int8 codes when double quantized,
    in which case ``scale_absmax`` (float32, one per 256 blocks) and ``scale_mean`` are set."""

    codes: torch.Tensor  # uint8, two 4-bit indices per byte
    absmax: torch.Tensor
    shape: torch.Size
    block_size: int = 64
    scale_absmax: torch.Tensor | None = None
    scale_mean: torch.Tensor | None = None
    dtype: torch.dtype = torch.float32

    @property
    def double_quant(self) -> bool:
        return self.scale_absmax is not None

    def tensors(self) -> list[torch.Tensor]:
        return [t for t in (self.codes, self.absmax, self.scale_absmax, self.scale_mean) if t is not None]

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors())

    @property
    def bits_per_parameter(self) -> float:
        return 8 * self.nbytes / self.shape.numel()

    def block_scales(self) -> torch.Tensor:
        """The absmax of every block as float32 (decoded from 8 bits when double quantized)."""
        if not self.double_quant:
            return self.absmax.float()
        n_blocks = self.absmax.numel()
        codes = F.pad(self.absmax, (0, -n_blocks % SCALE_BLOCK_SIZE)).view(-1, SCALE_BLOCK_SIZE)
        centred = codes.float() * (self.scale_absmax.float() / 127).unsqueeze(1)
        return centred.flatten()[:n_blocks] + self.scale_mean.float()


def _quantize_scales(absmax: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """absmax (float32) -> (int8 codes, float32 max per 256 codes, float32 mean)."""
    mean = absmax.mean()
    centred = F.pad(absmax - mean, (0, -absmax.numel() % SCALE_BLOCK_SIZE)).view(-1, SCALE_BLOCK_SIZE)
    largest = centred.abs().amax(1)
    safe = torch.where(largest > 0, largest, torch.ones_like(largest))
    codes = torch.round(centred * (127 / safe).unsqueeze(1)).to(torch.int8)
    return codes.flatten()[: absmax.numel()], largest, mean


def quantize_nf4(weight: torch.Tensor, block_size: int = 64, double_quant: bool = True) -> QuantizedWeight:
    """Quantize ``weight`` (any shape, on any device) to NF4 in blocks of ``block_size`` values."""
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 2 or block_size % 2:
        raise ValueError(f"block_size must be a positive even integer, got {block_size!r}")
    if weight.numel() == 0:
        raise ValueError("cannot quantize an empty weight")
    flat = weight.detach().reshape(-1).float()
    if not torch.isfinite(flat).all():
        raise ValueError("cannot quantize a weight with inf or nan values")
    blocks = F.pad(flat, (0, -flat.numel() % block_size)).view(-1, block_size)
    absmax = blocks.abs().amax(1)
    safe = torch.where(absmax > 0, absmax, torch.ones_like(absmax))
    scaled = (blocks * (1.0 / safe).unsqueeze(1)).clamp(-1, 1)
    codebook = NF4_CODEBOOK.to(flat.device)
    index = torch.bucketize(scaled.flatten(), (codebook[:-1] + codebook[1:]) / 2).to(torch.uint8)
    codes = (index[0::2] << 4) | index[1::2]
    quantized = QuantizedWeight(codes, absmax, weight.shape, block_size, dtype=weight.dtype)
    if double_quant:
        quantized.absmax, quantized.scale_absmax, quantized.scale_mean = _quantize_scales(absmax)
    return quantized


def dequantize_nf4(q: QuantizedWeight, dtype: torch.dtype | None = None) -> torch.Tensor:
    """The dense weight that ``q`` stands for, in ``dtype`` (default: the quantized weight's dtype)."""
    # each byte picks one 8-byte entry holding its two float32 values (a plain 1-D gather, 2-3x faster
    # than gathering rows of a (256, 2) table); the block scales are then applied in place
    pairs = _byte_table(q.codes.device).view(torch.int64).view(-1)
    values = pairs.index_select(0, q.codes.int()).view(torch.float32).view(-1, q.block_size)
    dense = values.mul_(q.block_scales().unsqueeze(1)).view(-1)[: q.shape.numel()]
    return dense.view(q.shape).to(dtype or q.dtype)


class _DequantizedLinear(torch.autograd.Function):
    """y = x W^T + b with W dequantized in forward and again in backward: only the 4-bit codes stay
    alive between the two passes, never the dense weight."""

    @staticmethod
    def forward(ctx, x, bias, quantized):
        ctx.quantized = quantized
        return F.linear(x, dequantize_nf4(quantized, x.dtype), bias)

    @staticmethod
    def backward(ctx, grad_output):
        grad_x = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_x = grad_output @ dequantize_nf4(ctx.quantized, grad_output.dtype)
        if ctx.needs_input_grad[1]:
            grad_bias = grad_output.reshape(-1, grad_output.shape[-1]).sum(0)
        return grad_x, grad_bias, None


class NF4Linear(nn.Module):
    """A frozen linear layer stored in NF4: buffers ``codes``/``absmax`` (+ ``scale_absmax``/``scale_mean``
    with double quantization) and a frozen ``bias``. Build it with :meth:`from_linear`."""

    def __init__(self, quantized: QuantizedWeight, bias: torch.Tensor | None = None):
        super().__init__()
        if len(quantized.shape) != 2:
            raise ValueError(f"NF4Linear needs an (out_features, in_features) weight, got shape {tuple(quantized.shape)}")
        self.out_features, self.in_features = quantized.shape
        self.block_size = quantized.block_size
        self.weight_dtype = quantized.dtype
        for name in ("codes", "absmax", "scale_absmax", "scale_mean"):
            self.register_buffer(name, getattr(quantized, name))
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone(), requires_grad=False)
        #: the dense changes added by ``add_to_weight`` (a merged adapter), and W_deq + that sum, which
        #: forward then uses; None while nothing is added
        self.added_delta: torch.Tensor | None = None
        self.merged_weight: torch.Tensor | None = None

    @classmethod
    def from_linear(cls, layer: nn.Module, block_size: int = 64, double_quant: bool = True) -> NF4Linear:
        """Quantize an ``nn.Linear`` or a GPT-2 ``Conv1D`` (whose weight is stored transposed)."""
        weight = layer.weight.detach()
        if is_transposed(layer):
            weight = weight.T
        elif not isinstance(layer, nn.Linear):
            raise TypeError(f"cannot quantize a {type(layer).__name__}: only nn.Linear and Conv1D layers")
        return cls(quantize_nf4(weight.contiguous(), block_size, double_quant), layer.bias)

    @property
    def double_quant(self) -> bool:
        return self.scale_absmax is not None

    @property
    def quantized(self) -> QuantizedWeight:
        return QuantizedWeight(self.codes, self.absmax, torch.Size((self.out_features, self.in_features)),
                               self.block_size, self.scale_absmax, self.scale_mean, self.weight_dtype)

    def dequantized_weight(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        return dequantize_nf4(self.quantized, dtype)

    @torch.no_grad()
    def add_to_weight(self, delta: torch.Tensor) -> None:
        """Compute with W_deq + delta from now on (a merged adapter), as a dense weight, without touching
        the codes; adding -delta again (unmerging) gives back exactly the NF4 layer (x + (-x) is 0)."""
        total = delta.float() if self.added_delta is None else self.added_delta + delta.float()
        if not torch.any(total):
            self.added_delta = self.merged_weight = None
            return
        self.added_delta = total
        self.merged_weight = self.dequantized_weight(torch.float32) + total

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.merged_weight is not None:
            return F.linear(x, self.merged_weight.to(x.dtype), None if self.bias is None else self.bias.to(x.dtype))
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return _DequantizedLinear.apply(x, bias, self.quantized)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, block_size={self.block_size}, "
                f"double_quant={self.double_quant}, bits_per_parameter={self.quantized.bits_per_parameter:.3f}")
