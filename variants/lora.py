"""LoRA (Hu et al., 2021): h = W x + (alpha / r) * B A x, with B = 0 at the start."""
from .base import LowRankAdapter


class LoRA(LowRankAdapter):
    name = "lora"
    step_overhead_goal = 1.0
