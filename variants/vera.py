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
from .peft_counterpart import PeftCounterpart


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


class _MergedVeRA(torch.autograd.Function):
    """y = x (W + dW)^T + bias with dW = diag(b) B diag(d) A, for training: the forward pass and the
    input's gradient use the merged weight (the base layer's cost, nothing per token on top), and the
    gradients of d and b come from the (out x r) matrix g^T (x A^T), formed whichever way is cheaper:
    through the rank-r bottleneck, or through the full weight gradient g^T x."""

    @staticmethod
    def forward(ctx, x, weight, bias, a, b, lambda_d, lambda_b):
        ctx.save_for_backward(x, weight, a, b, lambda_d, lambda_b)
        return F.linear(x, weight + (lambda_b.unsqueeze(1) * b) @ (lambda_d.unsqueeze(1) * a), bias)

    @staticmethod
    def backward(ctx, grad):
        x, weight, a, b, lambda_d, lambda_b = ctx.saved_tensors
        grad_x = grad_d = grad_b = None
        if ctx.needs_input_grad[0]:  # rebuilt rather than kept: an (out x in) matrix per layer
            grad_x = grad @ (weight + (lambda_b.unsqueeze(1) * b) @ (lambda_d.unsqueeze(1) * a))
        if ctx.needs_input_grad[5] or ctx.needs_input_grad[6]:
            (n_out, n_in), r = weight.shape, a.shape[0]
            if r * (n_in + n_out) < n_in * n_out:
                projected = grad.T @ F.linear(x, a)     # g^T (x A^T)
            else:
                projected = (grad.T @ x) @ a.T          # (g^T x) A^T
            grad_d = (lambda_b.unsqueeze(1) * b * projected).sum(0)
            grad_b = (b * projected * lambda_d).sum(1)
        return grad_x, None, None, None, None, grad_d, grad_b


class VeraCounterpart(PeftCounterpart):
    """PEFT's ``VeraConfig``: the same projection from ``projection_prng_key``, saved once per model."""

    tensors = {".vera_lambda_b": "lambda_b", ".vera_lambda_d": "lambda_d"}
    #: PEFT's keys of the shared pair -> our attribute of the projection
    projection_keys = {"base_model.vera_A": "A", "base_model.vera_B": "B"}

    def config(self, variant, *, rank, alpha, dropout, options):
        return {"peft_type": "VERA", "r": rank, "vera_dropout": dropout, "bias": "none",
                "d_initial": options["d_initial"],
                "projection_prng_key": options["projection_seed"], "save_projection": True, "init_weights": True}

    def read_config(self, variant, peft_config):
        if peft_config.get("peft_type") != "VERA":
            return None
        settings = {"rank": peft_config["r"], "alpha": None, "dropout": peft_config.get("vera_dropout", 0.0)}
        options = {"d_initial": peft_config.get("d_initial", 0.1),
                   "projection_seed": peft_config.get("projection_prng_key", 0)}
        return settings, options

    def model_tensors(self, model):
        projection = getattr(model, VeRA.shared_module)
        return {key: getattr(projection, attr) for key, attr in self.projection_keys.items()}

    def check_model_tensors(self, model, tensors, source):
        unknown = sorted(set(tensors) - set(self.projection_keys))
        if unknown:
            raise ValueError(f"{source}: unexpected tensors {unknown[:5]} for a vera adapter")
        projection = getattr(model, VeRA.shared_module)
        for key, tensor in tensors.items():
            attr = self.projection_keys[key]
            ours = getattr(projection, attr)
            if ours.shape != tensor.shape or not torch.equal(ours, tensor.to(ours)):
                raise ValueError(f"{source}: the saved VeRA projection {attr} differs from the one made from "
                                 f"projection_prng_key={projection.seed} for these target layers")


class VeRA(Adapter):
    name = "vera"
    step_overhead_goal = 0.5  # the custom backward: half of PEFT's extra cost
    options = {"d_initial": 0.1, "projection_seed": 0}
    rank_bounded_by_layer = False
    shared_module = "vera_projection"
    peft = VeraCounterpart()

    @classmethod
    def trainable_per_layer(cls, in_features, out_features, rank, options):
        return rank + out_features

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
    def prepare(cls, model, targets, *, rank, options, head_modules):
        shapes = [layer_shape(layer) for layer in targets.values()]
        projection = VeraProjection(rank, max(i for i, _ in shapes), max(o for _, o in shapes),
                                    int(options["projection_seed"]))
        weight = dense_weight(next(iter(targets.values())))
        projection.to(weight.device)
        model.add_module(cls.shared_module, projection)
        return projection, targets

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
        """Whether the merged weight beats the bottleneck, in multiply-adds for this input."""
        tokens = x.numel() // self.in_features
        n_in, n_out, r = self.in_features, self.out_features, self.rank
        if not (torch.is_grad_enabled() and self.lambda_b.requires_grad):
            return r * n_in * n_out < tokens * r * (n_in + n_out)
        bottleneck = 2 * tokens * r * (n_in + n_out)      # forward + input gradient through it
        merged = 2 * r * n_in * n_out + tokens * min(n_in * n_out, r * (n_in + n_out))
        return merged < bottleneck

    def forward(self, x):
        if self.merged or not isinstance(self.dropout, nn.Identity) or not self.dense_is_cheaper(x):
            return super().forward(x)
        weight = dense_weight(self.base_layer)
        if weight.requires_grad or not x.dtype == weight.dtype == self.lambda_b.dtype:
            return super().forward(x)
        a, b = self.sliced()
        flat = x.reshape(-1, self.in_features)
        out = _MergedVeRA.apply(flat, weight, self.base_layer.bias, a, b, self.lambda_d, self.lambda_b)
        return out.view(*x.shape[:-1], self.out_features)
