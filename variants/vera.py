"""VeRA (Kopiczko et al., 2024): h = W x + diag(b) B diag(d) A x.

A (r x max in_features) and B (max out_features x r) are frozen random matrices, made once per model
from a seed and shared by every adapted layer (each layer uses the top-left slice it needs). Each layer
trains only d (length r, starts at ``d_initial``) and b (length out_features, starts at 0).

The update is computed in whichever order costs less for the input at hand: token by token through
the rank-r bottleneck, or by forming the dense (out x in) update once per forward and running a single
matmul with W + dW, which is cheaper when r is large next to the layer's width.
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

from .base import Adapter, dense_weight, layer_shape


def kaiming_uniform(rows: int, cols: int, generator: torch.Generator) -> torch.Tensor:
    """U(-bound, bound) with bound = sqrt(3) * gain / sqrt(fan_in), gain = sqrt(2), fan_in = cols.

    The bound is computed in this order, and A is drawn before B from one CPU generator, because that
    is how PEFT makes VeRA's pair from ``projection_prng_key``: the same seed gives the same bits."""
    bound = math.sqrt(3.0) * (math.sqrt(2) / math.sqrt(cols))
    return torch.empty(rows, cols).uniform_(-bound, bound, generator=generator)


class VeraProjection(nn.Module):
    """The shared frozen pair (A, B), regenerated from ``seed``: never saved per layer."""

    def __init__(self, rank: int, max_in: int, max_out: int, seed: int):
        super().__init__()
        generator = torch.Generator(device="cpu").manual_seed(seed)
        a = kaiming_uniform(rank, max_in, generator)
        b = kaiming_uniform(max_out, rank, generator)
        self.seed = seed
        self.register_buffer("A", a, persistent=False)
        self.register_buffer("B", b, persistent=False)


class VeRA(Adapter):
    name = "vera"
    options = {"d_initial": 0.1, "projection_seed": 0}
    rank_bounded_by_layer = False
    combinable = False

    @classmethod
    def check_options(cls, options):
        d_initial, seed = options["d_initial"], options["projection_seed"]
        if isinstance(d_initial, bool) or not isinstance(d_initial, (int, float)) or not math.isfinite(d_initial) \
                or d_initial == 0:
            # with d = 0 and b = 0 both gradients are zero: the adapter could never move
            raise ValueError(f"vera: d_initial must be a finite non-zero number (default 0.1), got {d_initial!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"vera: projection_seed must be an integer, got {seed!r}")

    @classmethod
    def prepare(cls, model, targets, rank, options):
        shapes = [layer_shape(layer) for layer in targets.values()]
        projection = VeraProjection(rank, max(i for i, _ in shapes), max(o for _, o in shapes),
                                    int(options.get("projection_seed", cls.options["projection_seed"])))
        weight = dense_weight(next(iter(targets.values())))
        projection.to(weight.device)
        model.add_module("vera_projection", projection)
        return projection

    def create_parameters(self, *, alpha, shared, d_initial, projection_seed):
        # a plain attribute, not a submodule: the pair is stored once, on the model
        object.__setattr__(self, "projection", shared)
        device = shared.A.device
        self.lambda_d = nn.Parameter(torch.full((self.rank,), float(d_initial), device=device))
        self.lambda_b = nn.Parameter(torch.zeros(self.out_features, device=device))

    def sliced(self):
        return self.projection.A[:, : self.in_features], self.projection.B[: self.out_features, :]

    def update(self, x):
        a, b = self.sliced()
        x = x.to(a.dtype)
        return self.lambda_b * F.linear(self.lambda_d * F.linear(x, a), b)

    def delta_weight(self):
        a, b = self.sliced()
        return (self.lambda_b.unsqueeze(1) * b) @ (self.lambda_d.unsqueeze(1) * a)

    def dense_is_cheaper(self, x) -> bool:
        tokens = x.numel() // self.in_features
        n_in, n_out, r = self.in_features, self.out_features, self.rank
        per_token = 2 * tokens * r * (n_in + n_out)      # forward + backward through the bottleneck
        dense = tokens * n_in * n_out + 3 * r * n_in * n_out  # weight gradient + building dW
        return dense < per_token

    def forward(self, x):
        if not self.merged and isinstance(self.dropout, nn.Identity) and self.dense_is_cheaper(x):
            weight = dense_weight(self.base_layer)
            return F.linear(x, weight + self.delta_weight().to(weight.dtype), self.base_layer.bias)
        return super().forward(x)
