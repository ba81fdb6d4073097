"""DoRA (Liu et al., 2024): W' = m * (W + dW) / ||W + dW||, the norm taken per output feature.

m starts at the norms of W, dW is a LoRA update; the norm is a constant for the backward pass (DoRA
paper, section 4.3). The row norms are computed without forming the (out x in) matrix W + dW:
||W + s B A||^2 = ||W||^2 + 2 s <W A^T, B> + s^2 <B (A A^T), B>, row by row, where ||W||^2 is
computed once (W is frozen).
"""
import torch
import torch.nn.functional as F
from torch import nn

from .base import dense_weight
from .lora import LoRA, LoraCounterpart


class DoRA(LoRA):
    name = "dora"
    step_overhead_goal = 0.5  # the fused norm: half of PEFT's extra cost
    peft = LoraCounterpart(use_dora=True, extra_tensors={".lora_magnitude_vector": "magnitude"})

    @classmethod
    def trainable_per_layer(cls, in_features, out_features, rank, options):
        return super().trainable_per_layer(in_features, out_features, rank, options) + out_features

    def create_parameters(self, **kwargs):
        super().create_parameters(**kwargs)
        # the norms of W + s B A (= W at the start), computed the way forward computes them, so that
        # m / ||W + s B A|| is exactly 1 at the start and the adapted model equals the base model
        self.magnitude = nn.Parameter(self.weight_norm().clone())

    @staticmethod
    def norm_of(weight):
        return torch.linalg.vector_norm(weight, dim=1)

    @torch.no_grad()
    def weight_norm(self) -> torch.Tensor:
        """Row norms of W + s B A, detached, in O(out * in * r) without the dense sum; in float32 even
        under autocast (a bf16 norm would put a 0.4 % error on every output feature's scale)."""
        stored = dense_weight(self.base_layer)
        with torch.autocast(stored.device.type, enabled=False):
            return self._weight_norm(stored)

    def _weight_norm(self, stored: torch.Tensor) -> torch.Tensor:
        weight = stored.to(self.lora_A.dtype)  # a half-precision base: its norms in float32
        scale = self.scale_value()
        if not torch.is_tensor(scale) and scale == 0:
            return self.norm_of(weight)
        key = (stored.data_ptr(), stored._version, stored.device)
        if getattr(self, "_base_norm_key", None) != key:
            self._base_norm_sq = weight.float().pow(2).sum(1)
            self._base_norm_key = key
        a, b = self.lora_A, self.lora_B
        cross = (F.linear(weight, a) * b).sum(1)  # <W_i, (B A)_i> via W A^T
        lora_sq = ((b @ (a @ a.T)) * b).sum(1)     # ||(B A)_i||^2 via B (A A^T)
        norm_sq = self._base_norm_sq + 2 * scale * cross + scale * scale * lora_sq
        return norm_sq.clamp_min(0).sqrt()

    def reference_forward(self, x):
        """The paper's equation with the dense matrices: m * (W + s B A) x / ||W + s B A|| + bias."""
        weight = dense_weight(self.base_layer).float()
        combined = weight + (self.lora_B @ self.lora_A) * self.scale_value()
        scaled = (self.magnitude / self.norm_of(combined).detach()).unsqueeze(1) * combined
        bias = getattr(self.base_layer, "bias", None)
        return F.linear(x.float(), scaled, None if bias is None else bias.float()).to(x.dtype)

    def forward(self, x):
        if self.merged:
            return self.base_layer(x)
        factor = self.magnitude / self.weight_norm()
        weight = dense_weight(self.base_layer)
        bias = getattr(self.base_layer, "bias", None)
        no_dropout = isinstance(self.dropout, nn.Identity) or not self.training
        if no_dropout and weight.dtype == self.lora_A.dtype == x.dtype:
            flat = x.reshape(-1, self.in_features)
            combined = self.add_update(F.linear(flat, weight), flat)  # (W + s B A) x
            out = torch.addcmul(bias, combined, factor) if bias is not None else combined * factor
            return out.view(*x.shape[:-1], self.out_features)
        base = self.base_layer(x)
        if no_dropout:
            dropped = x
            plain = base - bias if bias is not None else base  # W x, reused from the base output
        else:
            dropped = self.dropout(x)
            plain = F.linear(dropped, weight)
        # m/||W+dW|| * (W + dW) x + bias, written as a correction of the base output
        correction = (factor - 1) * plain + factor * super().update(dropped)
        return base + correction.to(base.dtype)

    def delta_weight(self):
        """The dense change of the weight that DoRA makes: m * (W + dW) / ||W + dW|| - W."""
        weight = dense_weight(self.base_layer).float()
        combined = weight + super().delta_weight()
        return (self.magnitude / self.norm_of(combined).detach()).unsqueeze(1) * combined - weight

    @classmethod
    def combine(cls, states, configs, weights):
        state, changes = super().combine(states, configs, weights)
        state["magnitude"] = sum(w * s["magnitude"] for s, w in zip(states, weights))
        return state, changes
